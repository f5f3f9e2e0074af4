#!/usr/bin/env bash
# The soak run: does jd-proxy stay flat over an hour of farm-like work? The same custom signet
# Bitcoin Core and release jd-proxy as scripts/load.sh (scripts/load-common.sh), and jd-load in
# soak mode: every miner connected the whole time, shares at a steady total rate, a new tip
# every tip interval, and the proxy's RSS and open descriptors sampled all along. The report ends
# with the verdict: flat when the descriptor count ends within ±5 of where the steady state began
# and the RSS least-squares slope over the steady state is under 2 MiB per hour.
#
#   scripts/soak.sh          5,000 miners, 3,000 shares/s, a tip every 10 s, for 1 hour,
#                            sampled every 10 s; steady state from 6 minutes into the share phase
#   scripts/soak.sh smoke    300 miners, 1,000 shares/s, a tip every 10 s, for 60 s, sampled
#                            every 2 s, steady state from 10 s: checks that the whole chain works
#                            (its 48 s are too short for the verdict to mean much)
#
# Environment (beside load-common.sh's JD_LOAD_OUT, JD_BITCOIN_BIN_DIR, JD_LOAD_THREADS,
# JD_LOAD_KEEP, JD_LOAD_PERF): JD_SOAK_MINERS, JD_SOAK_DURATION (seconds),
# JD_SOAK_SHARE_RATE (shares/s, all miners together), JD_SOAK_TIP_INTERVAL,
# JD_SOAK_SAMPLE_INTERVAL, JD_SOAK_WARMUP (seconds) override the mode's values.
#
# Why 3,000 shares/s: 0.6 a second per miner, the order an ASIC sends at usual pool difficulties,
# and cheap enough to hold for an hour beside everything else on 2 shared cores. Smoke runs paid
# 25-35 µs of proxy CPU and 35-45 µs of jd-load CPU per share, so 3,000/s is about 0.1 of a core
# for each; each tip costs bitcoind 0.1-2 s of mining at the signet's minimum difficulty (about a
# tenth of a core at one per 10 s), and its fan-out about 0.1 s of proxy and tool CPU. That
# leaves both cores mostly free, so the run measures drift rather than saturation, and still
# puts 10.8 million shares through the proxy: a leak of one byte a share shows as 10 MiB.
#
# Why 6 minutes of warm-up: jd-proxy keeps each miner's last 32 retired job ids, one more per
# tip, so its memory grows by design for the first 32 tips.
set -euo pipefail
cd "$(dirname "$0")/.."

case ${1:-full} in
  full)
    NAME=soak MINERS=5000 DURATION=3600 RATE=3000 TIP=10 SAMPLE=10 WARMUP=360 ;;
  smoke)
    NAME=soak-smoke MINERS=300 DURATION=60 RATE=1000 TIP=10 SAMPLE=2 WARMUP=10 ;;
  *)
    echo "usage: scripts/soak.sh [full|smoke]" >&2
    exit 2 ;;
esac
MINERS=${JD_SOAK_MINERS:-$MINERS}
DURATION=${JD_SOAK_DURATION:-$DURATION}
RATE=${JD_SOAK_SHARE_RATE:-$RATE}
TIP=${JD_SOAK_TIP_INTERVAL:-$TIP}
SAMPLE=${JD_SOAK_SAMPLE_INTERVAL:-$SAMPLE}
WARMUP=${JD_SOAK_WARMUP:-$WARMUP}

# shellcheck source=scripts/load-common.sh
. scripts/load-common.sh

build_release jd-proxy jd-load
open_work soak
start_node
configure_proxy

# As in load.sh: no pipeline around the runs, so the exit trap always knows the proxy's PID.
exec > >(tee -a "$OUT/summary.txt")
print_header "jd-proxy soak run"
echo "progress: $OUT/$NAME.progress (every second); report: $OUT/$NAME.txt and $NAME.json" >&2
RUN_LIVE=1
run "$NAME" --mode soak -n "$MINERS" --ramp 2500 --duration "$DURATION" --share-rate "$RATE" \
  --tip-interval "$TIP" --sample-interval "$SAMPLE" --warmup "$WARMUP" --difficulty "$SHARE_DIFF"
echo "reports: $OUT" >&2
