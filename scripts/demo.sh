#!/usr/bin/env bash
# The local demo: the farm's regtest Bitcoin Core, jd-proxy mining for the reference pool
# (pool_sv2 with its Job Declaration Server, on a bitcoin-node of its own), and CPU miners
# speaking different ASIC firmware dialects. Halfway through the pool is killed (the ASICs mine
# solo), then started again (mining returns to it). Watch the log.
#   scripts/demo.sh [SECONDS] [--solo]   (default 60; Ctrl-C stops it early)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export JD_BITCOIN_BIN_DIR=${JD_BITCOIN_BIN_DIR:-$(scripts/bitcoin-core.sh | tail -n1)}
export JD_SV2_BIN_DIR=${JD_SV2_BIN_DIR:-$(scripts/sv2-peers.sh | tail -n1)}
cargo build --release -q -p jd-proxy -p integration-tests --bin jd-proxy --bin demo
exec target/release/demo --jd-proxy target/release/jd-proxy --seconds "${1:-60}" "${@:2}"
