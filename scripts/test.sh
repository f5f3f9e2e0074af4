#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests against a real regtest Bitcoin Core.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
export JD_BITCOIN_BIN_DIR=${JD_BITCOIN_BIN_DIR:-$(scripts/bitcoin-core.sh | tail -n1)}
export JD_SV2_BIN_DIR=${JD_SV2_BIN_DIR:-$(scripts/sv2-peers.sh | tail -n1)}
scripts/check-code.sh
# Alert rules and their unit tests, the Grafana dashboard, the systemd units (packaging/).
scripts/check-packaging.sh
# Tests that need a process of our own (signals, fd limits, socket handover) run these.
cargo build -p jd-proxy -p template-provider --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
