#!/usr/bin/env bash
# Installs what building and testing need, and builds Bitcoin Core once (cached outside the clone).
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for p in cmake libboost-dev libevent-dev capnproto libcapnp-dev pkg-config; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
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
