# Sourced by scripts/load.sh and scripts/soak.sh (not run on its own): the release build, the
# custom signet Bitcoin Core, the jd-proxy config and start-up, and one jd-load run against a
# fresh proxy. The caller has done `set -euo pipefail` and `cd` to the repository root.
#
# Environment (both scripts):
#   JD_LOAD_OUT         where the JSON reports and logs go (default $CARGO_TARGET_DIR or
#                       target, then <kind>-results/<date>)
#   JD_BITCOIN_BIN_DIR  Bitcoin Core binaries (default: built once by scripts/bitcoin-core.sh)
#   JD_LOAD_THREADS     jd-load worker threads (default 2)
#   JD_LOAD_KEEP=1      keep the node's and the proxy's directory
#   JD_LOAD_PERF=1      profile the proxy during each run (perf record -e cpu-clock, flat
#                       profile in <run>.perf.txt)

TARGET=${CARGO_TARGET_DIR:-target}
BIN_DIR=${JD_BITCOIN_BIN_DIR:-$(scripts/bitcoin-core.sh | tail -n1)}
THREADS=${JD_LOAD_THREADS:-2}
PROXY_BIN=$TARGET/release/jd-proxy
LOAD_BIN=$TARGET/release/jd-load
NODE_PID=""
PROXY_PID=""
# 1: jd-load's progress also goes to stderr as it comes (without the once-a-second counters).
RUN_LIVE=0

# build_release NAME...: release builds of the packages of the same-named binaries.
build_release() {
  local args=() b
  for b in "$@"; do args+=(-p "$b" --bin "$b"); done
  echo "== building release binaries" >&2
  cargo build --release -q "${args[@]}"
}

# open_work KIND: OUT (reports, kept) and WORK (node and proxy, removed at exit), and the exit
# trap that stops whatever was started. A caller's cleanup_more, if defined, runs between
# stopping the proxy and stopping the node.
open_work() {
  OUT=${JD_LOAD_OUT:-$TARGET/$1-results/$(date -u +%Y%m%d-%H%M%S)}
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  WORK=$(mktemp -d /tmp/jd-load.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# A loopback port nothing listens on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

stop_proxy() {
  if [ -n "$PROXY_PID" ]; then
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=""
  fi
}

stop_node() {
  if [ -n "$NODE_PID" ]; then
    "$BIN_DIR/bitcoin-cli" -datadir="$WORK/node" -signet -rpcport="$RPC_PORT" stop >/dev/null 2>&1 \
      || kill -TERM "$NODE_PID" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
    NODE_PID=""
  fi
}

# stop_pid PID: TERM, up to 10 s, then KILL; only processes this script started.
stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  stop_proxy
  if declare -F cleanup_more >/dev/null; then cleanup_more; fi
  stop_node
  if [ "${JD_LOAD_KEEP:-0}" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}

# --- the node: custom signet, OP_TRUE challenge, no peers, microsecond log times -----------------
start_node() {
  RPC_PORT=$(free_port)
  mkdir -p "$WORK/node"
  echo "== starting bitcoind (custom signet, challenge OP_TRUE) in $WORK/node" >&2
  "$BIN_DIR/bitcoind" -signet -signetchallenge=51 -maxtipage=2000000000 \
    -datadir="$WORK/node" -server=1 -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -rpcport="$RPC_PORT" \
    -listen=0 -connect=0 -dnsseed=0 -fixedseeds=0 -rpcthreads=16 -rpcworkqueue=64 \
    -logtimemicros=1 -printtoconsole=0 -daemon=0 >"$WORK/node/stderr.log" 2>&1 &
  NODE_PID=$!
  CLI=("$BIN_DIR/bitcoin-cli" -datadir="$WORK/node" -signet -rpcport="$RPC_PORT")
  for _ in $(seq 1 300); do
    "${CLI[@]}" getblockchaininfo >/dev/null 2>&1 && break
    kill -0 "$NODE_PID" 2>/dev/null || { cat "$WORK/node/stderr.log" >&2; exit 1; }
    sleep 0.2
  done
  COOKIE=$WORK/node/signet/.cookie
  NODE_LOG=$WORK/node/signet/debug.log
  DESC="raw(51)#$("${CLI[@]}" getdescriptorinfo 'raw(51)' | sed -n 's/.*"checksum": "\(.*\)".*/\1/p')"
  echo "== mining 2 signet blocks (a few seconds each at the real minimum difficulty)" >&2
  "${CLI[@]}" generatetodescriptor 2 "$DESC" 1000000000 >/dev/null
  NETWORK_DIFFICULTY=$("${CLI[@]}" getdifficulty)
}

# --- the proxy ---------------------------------------------------------------------------------
# Share difficulty far below the chain's (~0.0011): one share in about a million is a block,
# and jd-load skips those by default. Vardiff is pinned (min = max) so runs are comparable.
SHARE_DIFF=1e-9

configure_proxy() {
  PROXY_PORT=$(free_port)
  HTTP_PORT=$(free_port)
  cat >"$WORK/jd-proxy.toml" <<TOML
network = "signet"
[node]
rpc_url = "http://127.0.0.1:$RPC_PORT"
cookie_file = "$COOKIE"
[coinbase]
payout_address = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"
tag = "/jd-load/"
[stratum]
listen = "127.0.0.1:$PROXY_PORT"
max_connections = 19000
# jd-load spreads its miners over a few loopback addresses: no per-address cap here.
max_connections_per_ip = 0
# A closed-loop miner sends hundreds of shares a second, where an ASIC sends one every few
# seconds: the per-connection request budget (100/s by default, a defence against floods)
# would cut it off within seconds, so the load runs lift it.
max_requests_per_sec = 1000000
[vardiff]
initial_difficulty = $SHARE_DIFF
min_difficulty = $SHARE_DIFF
max_difficulty = $SHARE_DIFF
[solo]
blocks_dir = "$WORK/blocks"
[http]
listen = "127.0.0.1:$HTTP_PORT"
TOML
  # Every connection is a descriptor: take the hard limit (20,000 on this machine kind).
  ulimit -n "$(ulimit -Hn)"
}

start_proxy() {
  local log=$1
  "$PROXY_BIN" --config "$WORK/jd-proxy.toml" --log info >"$log" 2>&1 &
  PROXY_PID=$!
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && return 0
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.05
  done
  echo "jd-proxy did not listen on $PROXY_PORT" >&2
  exit 1
}

# start_watcher FILE: an operator watching the proxy while it works: Prometheus's scrape of
# /metrics every second, and the dashboard's round of /api/v1/ requests every 2 s (the
# endpoints proxy/src/http/dashboard/app.js polls), as a browser on another machine would make
# them. Each response's size goes to FILE, so the report shows the watching happened.
WATCHER_PID=""
start_watcher() {
  local out=$1 base="http://127.0.0.1:$HTTP_PORT" tick=0 seq=0
  (
    while :; do
      curl -s -o /dev/null -w 'metrics %{http_code} %{size_download}\n' "$base/metrics"
      if [ $((tick % 2)) = 0 ]; then
        for ep in summary asics history template upstream blocks "events?since=$seq"; do
          curl -s -o /dev/null -w "$ep %{http_code} %{size_download}\n" "$base/api/v1/$ep"
        done
      fi
      tick=$((tick + 1))
      sleep 1
    done
  ) >"$out" 2>&1 &
  WATCHER_PID=$!
}

stop_watcher() {
  if [ -n "$WATCHER_PID" ]; then
    kill "$WATCHER_PID" 2>/dev/null || true
    wait "$WATCHER_PID" 2>/dev/null || true
    WATCHER_PID=""
    echo "watched: $(grep -c '^metrics 200' "$OUT/$name.watched" || true) scrapes of /metrics, $(grep -c '^summary 200' "$OUT/$name.watched" || true) dashboard rounds"
  fi
}

# print_header TITLE: what the figures of this invocation were measured on.
print_header() {
  echo "$1, $(date -u +%FT%TZ)"
  echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "node: custom signet (challenge 51), difficulty $NETWORK_DIFFICULTY; share difficulty $SHARE_DIFF"
  echo "proxy: $PROXY_BIN, open-file limit $(ulimit -n); jd-load: $THREADS worker threads"
  echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (other work on this machine skews every figure)"
}

# run NAME [jd-load args...]: a fresh proxy, one jd-load run, its JSON and text kept in $OUT.
run() {
  local name=$1
  shift
  echo "== $name: jd-load $* (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  start_proxy "$OUT/$name.proxy.log"
  [ "${WATCH:-0}" = 1 ] && start_watcher "$OUT/$name.watched"
  local perf_pid=""
  if [ "${JD_LOAD_PERF:-0}" = 1 ]; then
    perf record -q -e cpu-clock -F 1999 -p "$PROXY_PID" -o "$OUT/$name.perf.data" 2>/dev/null &
    perf_pid=$!
  fi
  local args=(--server "127.0.0.1:$PROXY_PORT" --server-pid "$PROXY_PID"
    --rpc-url "http://127.0.0.1:$RPC_PORT" --rpc-cookie "$COOKIE" --node-log "$NODE_LOG"
    --threads "$THREADS" --label "$name" --json-out "$OUT/$name.json" "$@")
  if [ "$RUN_LIVE" = 1 ]; then
    # The once-a-second counters stay in the file: over an hour they would bury the samples.
    "$LOAD_BIN" "${args[@]}" 2>&1 >"$OUT/$name.txt" | tee "$OUT/$name.progress" \
      | { grep --line-buffered -v ' dropped; .* notify; ' || true; } >&2 || exit 1
  else
    "$LOAD_BIN" "${args[@]}" >"$OUT/$name.txt" 2>"$OUT/$name.progress" \
      || { cat "$OUT/$name.progress" >&2; exit 1; }
  fi
  cat "$OUT/$name.txt"
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    {
      perf report -i "$OUT/$name.perf.data" --stdio --no-children --sort dso -F overhead,dso 2>/dev/null
      perf report -i "$OUT/$name.perf.data" --stdio --no-children -F overhead,sym --percent-limit 0.5 2>/dev/null
    } | grep -v -e '^#' -e '^$' >"$OUT/$name.perf.txt" || true
  fi
  stop_watcher
  stop_proxy
}
