#!/usr/bin/env bash
# Installs what building and testing need, and builds Bitcoin Core once (cached outside the clone).
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for p in cmake libboost-dev libevent-dev capnproto libcapnp-dev pkg-config; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
# promtool (from Debian's prometheus) and jq: scripts/check-packaging.sh.
command -v promtool >/dev/null || need+=(prometheus)
# A real Prometheus scraping jd-proxy (integration-tests/tests/metrics.rs); started by the test on
# a free port, never as the system service.
command -v prometheus >/dev/null || need+=(prometheus)
command -v jq >/dev/null || need+=(jq)
# A real headless browser for the dashboard test (integration-tests/tests/dashboard.rs).
command -v chromium >/dev/null || need+=(chromium)
# A real PostgreSQL for the shared share ledger (integration-tests/tests/ledger.rs): the test runs
# initdb and pg_ctl in a temp dir on a free port, as the package's postgres user when root.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

bin_dir=$(scripts/bitcoin-core.sh | tail -n1)
echo "Bitcoin Core binaries: $bin_dir"
# The Stratum V2 reference implementation's pool and translator: real peers for interop tests.
sv2_dir=$(scripts/sv2-peers.sh | tail -n1)
echo "SV2 reference binaries: $sv2_dir"
