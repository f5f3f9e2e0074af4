#!/usr/bin/env bash
# The local demo: a regtest Bitcoin Core, jd-proxy in solo mode, and a few CPU miners speaking
# different ASIC firmware dialects. Blocks they find are accepted by the node; watch the log.
#   scripts/demo.sh [SECONDS]     (default 60; Ctrl-C stops it early)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export JD_BITCOIN_BIN_DIR=${JD_BITCOIN_BIN_DIR:-$(scripts/bitcoin-core.sh | tail -n1)}
cargo build --release -q -p jd-proxy -p integration-tests --bin jd-proxy --bin demo
exec target/release/demo --jd-proxy target/release/jd-proxy --seconds "${1:-60}"
