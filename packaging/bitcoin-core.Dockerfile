# syntax=docker/dockerfile:1
# A Bitcoin Core node for packaging/compose.yml, built by scripts/bitcoin-core.sh from the
# source shipped in the crates.io package libbitcoinkernel-sys (a development snapshot,
# v31.99, without wallet or ZMQ): the same node the integration tests run. Good for signet,
# testnet and trying things out; for mainnet, run a Bitcoin Core release you have verified
# yourself (your own build, or an image you trust) in place of this service.
#   docker build -f packaging/bitcoin-core.Dockerfile -t jd-proxy-bitcoin-core .
# The build takes about 12 minutes on 2 cores.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libboost-dev libevent-dev capnproto \
      libcapnp-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/bitcoin-core.sh /usr/local/bin/bitcoin-core.sh
RUN JD_CACHE_DIR=/build /usr/local/bin/bitcoin-core.sh \
 && install -D -m 0755 -t /out /build/bitcoin-core-*/bin/*

FROM debian:bookworm-slim
# bitcoind needs libstdc++; bitcoin-node (IPC, -ipcbind) Cap'n Proto's runtime too.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 libcapnp-0.9.2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10002 bitcoin \
 && useradd --system --uid 10002 --gid bitcoin --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin bitcoin \
 && install -d -o bitcoin -g bitcoin -m 0750 /data /cookie
COPY --from=builder /out/ /usr/local/bin/
# /data: the chain. /cookie: the RPC cookie alone (-rpccookiefile), a volume jd-proxy mounts
# read-only and reads through the group (-rpccookieperms=group, group_add 10002).
VOLUME ["/data", "/cookie"]
USER 10002:10002
EXPOSE 8332/tcp 8333/tcp
# bitcoind flushes its caches on SIGTERM: give it minutes (stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["bitcoind", "-datadir=/data"]
