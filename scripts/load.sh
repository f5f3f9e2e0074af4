#!/usr/bin/env bash
# The load scenario: a custom signet Bitcoin Core (challenge OP_TRUE, so shares are not blocks),
# the release jd-proxy binary, and jd-load with thousands of simulated miners. Each run gets a
# fresh proxy, so its memory per connection starts from the same baseline.
#
#   scripts/load.sh              every run below (about 3 minutes once built)
#   scripts/load.sh quick        a short smoke run (200 miners, one tip, a few seconds of shares)
#   scripts/load.sh ours         jd-proxy runs only (the six below)
#   scripts/load.sh ref          reference translator runs only (ref-*)
#   scripts/load.sh NAME...      only the named runs (idle-1k idle-10k idle-15k shares-20k
#                                shares-max shares-tips, the optional idle-500,
#                                idle-10k-1t: jd-load on one thread, shares-max-noledger:
#                                shares-max with the share ledger off, shares-max-watched:
#                                shares-max while /metrics is scraped every second and the
#                                dashboard's API round runs every 2 s, and the reference runs
#                                ref-idle-1k ref-idle-10k ref-idle-15k ref-shares-20k
#                                ref-shares-max)
#
# Runs: idle 1,000 and 10,000 miners with new tips (latency at every miner), idle 15,000
# (memory per connection), shares at a fixed rate, shares closed loop (the proxy's ceiling),
# and shares with new tips under that load. Every run stays under 2 minutes, all on loopback.
#
# The ref-* runs put the same load on the Stratum V2 reference chain, on the same node, in the
# same invocation: translator_sv2 0.6.0 (the SV1 side jd-load talks to) -> pool_sv2 0.7.0 ->
# our template-provider (RPC backend) -> the same bitcoind. Pool and translator are fresh for
# every run; jd-load measures the translator's memory, and CPU of translator and pool. The
# translator's SV1 difficulty comes from min_individual_miner_hashrate and shares_per_minute
# (difficulty = hashrate * 60 / shares_per_minute / 2^32), vardiff off: the hashrate is chosen
# for the same 1e-9 as ours. The pool's shares_per_minute is scaled so its channel target is no
# harder than that, so every share the translator accepts is also forwarded and accepted.
#
# The node, the proxy and one run's start-up are shared with scripts/soak.sh, in
# scripts/load-common.sh.
#
# Environment:
#   JD_LOAD_OUT         where the JSON reports and logs go (default $CARGO_TARGET_DIR or
#                       target, then load-results/<date>)
#   JD_BITCOIN_BIN_DIR  Bitcoin Core binaries (default: built once by scripts/bitcoin-core.sh)
#   JD_LOAD_THREADS     jd-load worker threads (default 2)
#   JD_LOAD_KEEP=1      keep the node's and the proxy's directory
#   JD_LOAD_PERF=1      profile the proxy during each run (perf record -e cpu-clock, flat
#                       profile in <run>.perf.txt)
#   JD_SV2_BIN_DIR      pool_sv2 and translator_sv2 (default: scripts/sv2-peers.sh, which
#                       builds them once and caches them; only for the ref-* runs)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-full}
# shellcheck source=scripts/load-common.sh
. scripts/load-common.sh

build_release jd-proxy jd-load template-provider
TP_BIN=$TARGET/release/template-provider

open_work load
TP_PID=""
POOL_PID=""
TPROXY_PID=""

stop_ref() {
  stop_pid "$TPROXY_PID"; TPROXY_PID=""
  stop_pid "$POOL_PID"; POOL_PID=""
}

# Run by cleanup, after the proxy and before the node.
cleanup_more() {
  stop_ref
  stop_pid "$TP_PID"; TP_PID=""
}

start_node
configure_proxy

# --- the reference chain: template-provider -> pool_sv2 -> translator_sv2 ----------------------
# Same share difficulty as ours: the translator's first SV1 difficulty is
# hashrate * 60 / shares_per_minute / 2^32, so for 1e-9 at 60 shares a minute the hashrate is
# 1e-9 * 2^32 = 4.294967296 H/s. Vardiff off (ours is pinned too). One aggregated upstream
# channel (the translator's default). The pool's shares_per_minute is 60 per expected miner
# (REF_POOL_SPM), so its channel target is no harder than the miners' and it is sent every share.
REF_HASHRATE=4.294967296
REF_SPM=60
SV2_BIN=""

# wait_listen PORT PID LOG WHAT: until something listens on 127.0.0.1:PORT (30 s at most).
wait_listen() {
  local port=$1 pid=$2 log=$3 what=$4
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$what exited:" >&2; tail -n 20 "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$what did not listen on $port within 30 s" >&2
  tail -n 20 "$log" >&2
  exit 1
}


# new_keys: a fresh authority key pair in KEY_PUB and KEY_SEC (the base58 forms the SV2 peers use).
new_keys() {
  local keys
  keys=$("$TP_BIN" keygen)
  KEY_PUB=$(echo "$keys" | sed -n 's/^authority_public_key = "\(.*\)"/\1/p')
  KEY_SEC=$(echo "$keys" | sed -n 's/^authority_secret_key = "\(.*\)"/\1/p')
}

# The template provider serves every reference run of this invocation, like the node.
start_tp() {
  [ -z "$TP_PID" ] || return 0
  SV2_BIN=${JD_SV2_BIN_DIR:-$(scripts/sv2-peers.sh | tail -n1)}
  new_keys
  TP_PUB=$KEY_PUB
  TP_PORT=$(free_port)
  cat >"$WORK/template-provider.toml" <<TOML
network = "signet"
[node]
backend = "rpc"
rpc_url = "http://127.0.0.1:$RPC_PORT"
cookie_file = "$COOKIE"
[server]
listen = "127.0.0.1:$TP_PORT"
authority_public_key = "$TP_PUB"
authority_secret_key = "$KEY_SEC"
cert_validity_secs = 3600
TOML
  "$TP_BIN" run --config "$WORK/template-provider.toml" --log info >"$OUT/template-provider.log" 2>&1 &
  TP_PID=$!
  wait_listen "$TP_PORT" "$TP_PID" "$OUT/template-provider.log" template-provider
}

# start_ref NAME MINERS: a fresh pool_sv2 and translator_sv2 for one run.
start_ref() {
  local name=$1 miners=$2
  start_tp
  local pool_pub pool_sec pool_port sv1_port
  new_keys
  pool_pub=$KEY_PUB
  pool_sec=$KEY_SEC
  pool_port=$(free_port)
  REF_POOL_SPM=$((REF_SPM * miners))
  mkdir -p "$WORK/$name"
  cat >"$WORK/$name/pool.toml" <<TOML
listen_address = "127.0.0.1:$pool_port"
authority_public_key = "$pool_pub"
authority_secret_key = "$pool_sec"
cert_validity_sec = 3600
coinbase_reward_script = "raw(51)"
server_id = 1
pool_signature = "jd-load-reference"
shares_per_minute = $REF_POOL_SPM.0
share_batch_size = 1
supported_extensions = []
required_extensions = []

[template_provider_type.Sv2Tp]
address = "127.0.0.1:$TP_PORT"
public_key = "$TP_PUB"
TOML
  ( cd "$WORK/$name" && exec "$SV2_BIN/pool_sv2" -c pool.toml ) >"$OUT/$name.pool.log" 2>&1 &
  POOL_PID=$!
  wait_listen "$pool_port" "$POOL_PID" "$OUT/$name.pool.log" pool_sv2
  for _ in $(seq 1 300); do
    grep -q "ready to accept connections" "$OUT/$name.pool.log" && break
    kill -0 "$POOL_PID" 2>/dev/null || { tail -n 20 "$OUT/$name.pool.log" >&2; exit 1; }
    sleep 0.1
  done
  sv1_port=$(free_port)
  cat >"$WORK/$name/translator.toml" <<TOML
downstream_address = "127.0.0.1"
downstream_port = $sv1_port
max_supported_version = 2
min_supported_version = 2
downstream_extranonce2_size = 4
verify_payout = false
aggregate_channels = true
supported_extensions = []
required_extensions = []

[downstream_difficulty_config]
min_individual_miner_hashrate = $REF_HASHRATE
shares_per_minute = $REF_SPM.0
enable_vardiff = false
job_keepalive_interval_secs = 0

[[upstreams]]
address = "127.0.0.1"
port = $pool_port
authority_pubkey = "$pool_pub"
user_identity = "jd-load"
TOML
  ( cd "$WORK/$name" && exec "$SV2_BIN/translator_sv2" -c translator.toml ) >"$OUT/$name.translator.log" 2>&1 &
  TPROXY_PID=$!
  # The translator opens its SV1 port only once its upstream connection is set up.
  wait_listen "$sv1_port" "$TPROXY_PID" "$OUT/$name.translator.log" translator_sv2
  REF_PORT=$sv1_port
}

# ref_run NAME MINERS [jd-load args...]: the same load against the reference chain.
ref_run() {
  local name=$1 miners=$2
  shift 2
  echo "== $name: jd-load $* against translator_sv2 (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  start_ref "$name" "$miners"
  "$LOAD_BIN" --server "127.0.0.1:$REF_PORT" --server-pid "$TPROXY_PID" --peer-pid "$POOL_PID" \
    --rpc-url "http://127.0.0.1:$RPC_PORT" --rpc-cookie "$COOKIE" --node-log "$NODE_LOG" \
    --threads "$THREADS" --label "$name" --json-out "$OUT/$name.json" "$@" \
    >"$OUT/$name.txt" 2>"$OUT/$name.progress" || { cat "$OUT/$name.progress" >&2; stop_ref; exit 1; }
  cat "$OUT/$name.txt"
  # The pool logs every share it judges (INFO): how many of the translator's shares it took.
  echo "pool_sv2: $(grep -c "SubmitSharesSuccess" "$OUT/$name.pool.log" || true) shares accepted, $(grep -c "SubmitSharesError" "$OUT/$name.pool.log" || true) refused ($(grep -o "error_code: [a-z-]*" "$OUT/$name.pool.log" | sort | uniq -c | tr -s ' ' | tr '\n' ';' || true))"
  stop_ref
}

# Everything printed from here on also goes to the summary (no pipeline: runs stay in this shell,
# so the exit trap always knows the proxy's PID).
exec > >(tee -a "$OUT/summary.txt")
print_header "jd-proxy load scenario"

idle_1k() { run idle-1k --mode idle -n 1000 --ramp 2000 --duration 2 --tips 5 --tip-interval 1 --difficulty "$SHARE_DIFF"; }
idle_10k() { run idle-10k --mode idle -n 10000 --ramp 2500 --duration 2 --tips 5 --tip-interval 1 --difficulty "$SHARE_DIFF"; }
idle_15k() { run idle-15k --mode idle -n 15000 --ramp 2500 --duration 5 --tips 2 --tip-interval 1 --difficulty "$SHARE_DIFF"; }
shares_20k() { run shares-20k --mode shares -n 1000 --ramp 2000 --duration 20 --share-rate 20000 --difficulty "$SHARE_DIFF"; }
shares_max() { run shares-max --mode shares -n 1000 --ramp 2000 --duration 20 --share-rate 0 --window 16 --difficulty "$SHARE_DIFF"; }
# Optional runs (by name only): where the tip target holds on this box, and how much the tool's
# own threads weigh on the figures.
idle_500() { run idle-500 --mode idle -n 500 --ramp 2000 --duration 2 --tips 5 --tip-interval 1 --difficulty "$SHARE_DIFF"; }
idle_10k_1t() { THREADS=1 run idle-10k-1t --mode idle -n 10000 --ramp 2500 --duration 2 --tips 5 --tip-interval 1 --difficulty "$SHARE_DIFF"; }
# The share ledger is on by default (SQLite beside the blocks); this run turns it off, so
# shares-max against it is the ledger's cost (the variable reaches the proxy's environment).
shares_max_noledger() { JD_PROXY__LEDGER__ENABLED=false run shares-max-noledger --mode shares -n 1000 --ramp 2000 --duration 20 --share-rate 0 --window 16 --difficulty "$SHARE_DIFF"; }
shares_max_watched() { WATCH=1 run shares-max-watched --mode shares -n 1000 --ramp 2000 --duration 20 --share-rate 0 --window 16 --difficulty "$SHARE_DIFF"; }
shares_tips() { run shares-tips --mode shares -n 10000 --ramp 2500 --duration 30 --share-rate 10000 --tips 3 --tip-interval 2 --difficulty "$SHARE_DIFF"; }

# The reference chain under the same loads (same arguments as the runs of the same name).
ref_idle_1k() { ref_run ref-idle-1k 1000 --mode idle -n 1000 --ramp 2000 --duration 2 --tips 5 --tip-interval 1 --difficulty "$SHARE_DIFF"; }
ref_idle_10k() { ref_run ref-idle-10k 10000 --mode idle -n 10000 --ramp 2500 --duration 2 --tips 5 --tip-interval 1 --difficulty "$SHARE_DIFF"; }
ref_idle_15k() { ref_run ref-idle-15k 15000 --mode idle -n 15000 --ramp 2500 --duration 5 --tips 2 --tip-interval 1 --difficulty "$SHARE_DIFF"; }
ref_shares_20k() { ref_run ref-shares-20k 1000 --mode shares -n 1000 --ramp 2000 --duration 20 --share-rate 20000 --difficulty "$SHARE_DIFF"; }
ref_shares_max() { ref_run ref-shares-max 1000 --mode shares -n 1000 --ramp 2000 --duration 20 --share-rate 0 --window 16 --difficulty "$SHARE_DIFF"; }
ref_quick() { ref_run ref-quick 200 --mode shares -n 200 --ramp 1000 --duration 5 --share-rate 2000 --tips 1 --difficulty "$SHARE_DIFF"; }

case "$MODE" in
  quick)
    run quick-idle --mode idle -n 200 --ramp 1000 --duration 2 --tips 1 --difficulty "$SHARE_DIFF"
    run quick-shares --mode shares -n 200 --ramp 1000 --duration 5 --share-rate 5000 --difficulty "$SHARE_DIFF"
    ;;
  full)
    idle_1k; idle_10k; idle_15k; shares_20k; shares_max; shares_tips
    ref_idle_1k; ref_idle_10k; ref_idle_15k; ref_shares_20k; ref_shares_max
    ;;
  ours)
    idle_1k; idle_10k; idle_15k; shares_20k; shares_max; shares_tips
    ;;
  ref)
    ref_idle_1k; ref_idle_10k; ref_idle_15k; ref_shares_20k; ref_shares_max
    ;;
  *)
    for name in "$@"; do
      fn=${name//-/_}
      declare -F "$fn" >/dev/null || { echo "unknown run $name" >&2; exit 2; }
      "$fn"
    done
    ;;
esac
echo "reports: $OUT" >&2
