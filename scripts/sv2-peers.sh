#!/usr/bin/env bash
# Builds the Stratum V2 Reference Implementation's pool (pool_sv2, with its embedded Job Declaration
# Server) and SV1->SV2 translator (translator_sv2) from crates.io with their own lock files, and caches
# them outside the clone. The integration tests run them as real peers.
#
#   scripts/sv2-peers.sh          build if needed, print the bin directory on the last line
#
# Environment:
#   JD_SV2_BIN_DIR  use your own binaries from this directory (must hold pool_sv2 and translator_sv2);
#                   nothing is built
#   JD_CACHE_DIR    cache root (default ~/.cache/jd-proxy)
#
# Progress goes to stderr; stdout's last line is the bin directory. The two builds run one after the
# other and share one build directory: about 5 minutes each on 2 idle cores, measured 45 minutes for
# both on 2 cores shared with other builds. Run it in the background and poll if your shell has a
# time limit.
set -euo pipefail

POOL_VERSION=0.7.0
TRANSLATOR_VERSION=0.6.0
BINS=(pool_sv2 translator_sv2)

if [ -n "${JD_SV2_BIN_DIR:-}" ]; then
  for b in "${BINS[@]}"; do
    [ -x "$JD_SV2_BIN_DIR/$b" ] || { echo "JD_SV2_BIN_DIR=$JD_SV2_BIN_DIR has no $b" >&2; exit 1; }
  done
  echo "$JD_SV2_BIN_DIR"
  exit 0
fi

CACHE=${JD_CACHE_DIR:-$HOME/.cache/jd-proxy}
# Keep in sync with integration-tests/src/sv2_peers/mod.rs (SV2_PEERS_DIR_NAME).
ROOT=$CACHE/sv2-peers-pool_sv2-$POOL_VERSION-translator_sv2-$TRANSLATOR_VERSION
OUT=$ROOT/bin

have_all() {
  for b in "${BINS[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
if have_all; then
  echo "$OUT"
  exit 0
fi

# capnproto/libcapnp-dev: bitcoin_core_sv2 (the pool's Bitcoin Core IPC client) compiles Cap'n Proto
# schemas at build time. The rest is the usual toolchain for crates with C parts.
need_apt=()
for p in capnproto libcapnp-dev pkg-config build-essential; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi

# Our own build directory (not the caller's CARGO_TARGET_DIR): shared by both installs so the common
# dependencies compile once, removed at the end.
BUILD=$CACHE/build-sv2-peers
mkdir -p "$ROOT" "$BUILD"
install_one() { # crate version binary
  if [ -x "$OUT/$3" ]; then
    echo "$3 already in $OUT" >&2
    return 0
  fi
  echo "building $1 $2 into $ROOT (about 5 minutes on 2 idle cores)" >&2
  CARGO_TARGET_DIR=$BUILD cargo install --locked --root "$ROOT" "$1" --version "$2" >&2
}
install_one pool_sv2 "$POOL_VERSION" pool_sv2
install_one translator_sv2 "$TRANSLATOR_VERSION" translator_sv2
have_all || { echo "build finished but $OUT lacks one of: ${BINS[*]}" >&2; exit 1; }
rm -rf "$BUILD"
echo "$OUT"
