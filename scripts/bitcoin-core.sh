#!/usr/bin/env bash
# Builds bitcoind, bitcoin-node (IPC) and bitcoin-cli from the Bitcoin Core source that ships inside the
# crates.io package libbitcoinkernel-sys, and caches them outside the clone.
#
#   scripts/bitcoin-core.sh          build if needed, print the bin directory on the last line
#
# Environment:
#   JD_BITCOIN_BIN_DIR  use your own binaries from this directory (must hold bitcoind, bitcoin-cli and,
#                       for IPC tests, bitcoin-node); nothing is built
#   JD_CACHE_DIR        cache root (default ~/.cache/jd-proxy)
set -euo pipefail

PKG_VERSION=0.4.1
if [ -n "${JD_BITCOIN_BIN_DIR:-}" ]; then
  for b in bitcoind bitcoin-cli; do
    [ -x "$JD_BITCOIN_BIN_DIR/$b" ] || { echo "JD_BITCOIN_BIN_DIR=$JD_BITCOIN_BIN_DIR has no $b" >&2; exit 1; }
  done
  echo "$JD_BITCOIN_BIN_DIR"
  exit 0
fi

CACHE=${JD_CACHE_DIR:-$HOME/.cache/jd-proxy}
OUT=$CACHE/bitcoin-core-$PKG_VERSION
if [ -x "$OUT/bin/bitcoind" ] && [ -x "$OUT/bin/bitcoin-node" ] && [ -x "$OUT/bin/bitcoin-cli" ]; then
  echo "$OUT/bin"
  exit 0
fi

need_apt=()
for p in cmake libboost-dev libevent-dev capnproto libcapnp-dev pkg-config; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi

# Let cargo fetch the package: it lands in the registry source cache with its bitcoin/ folder.
FETCH=$CACHE/fetch-libbitcoinkernel-sys
mkdir -p "$FETCH/src"
cat > "$FETCH/Cargo.toml" <<TOML
[package]
name = "fetch-bitcoin-core"
version = "0.0.0"
edition = "2021"
[dependencies]
libbitcoinkernel-sys = "=$PKG_VERSION"
TOML
: > "$FETCH/src/lib.rs"
(cd "$FETCH" && cargo fetch -q >&2)
SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/libbitcoinkernel-sys-$PKG_VERSION/bitcoin | head -n1)
[ -f "$SRC/CMakeLists.txt" ] || { echo "no Bitcoin Core source at $SRC" >&2; exit 1; }

BUILD=$CACHE/build-bitcoin-core-$PKG_VERSION
echo "building Bitcoin Core from $SRC (about 12 minutes on 2 cores)" >&2
cmake -S "$SRC" -B "$BUILD" -DBUILD_DAEMON=ON -DBUILD_CLI=ON -DENABLE_IPC=ON \
  -DENABLE_WALLET=OFF -DWITH_ZMQ=OFF -DWITH_EMBEDDED_ASMAP=OFF \
  -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_GUI=OFF -DBUILD_TX=OFF -DBUILD_UTIL=OFF \
  -DBUILD_WALLET_TOOL=OFF -DBUILD_FUZZ_BINARY=OFF -DBUILD_KERNEL_LIB=OFF -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$BUILD" -j"$(nproc)" --target bitcoind bitcoin-node bitcoin-cli >&2
mkdir -p "$OUT/bin"
for b in bitcoind bitcoin-node bitcoin-cli; do
  cp "$(find "$BUILD" -type f -name "$b" -perm -u+x | head -n1)" "$OUT/bin/$b"
done
rm -rf "$BUILD"
echo "$OUT/bin"
