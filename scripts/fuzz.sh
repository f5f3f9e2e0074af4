#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every parser that reads bytes from outside:
# fuzz/fuzz_targets/ says what each target reaches.
#
#   scripts/fuzz.sh smoke                          every target for 60 s (CI)
#   scripts/fuzz.sh campaign [TARGET] [EXECUTIONS] a long run of one target or all, 10 million
#                                                  executions each by default; then the corpus
#                                                  is minimized back into fuzz/corpus/TARGET
#
# Built without a sanitizer (-s none): our crates forbid unsafe code, so AddressSanitizer would
# only watch the dependencies, at half the speed, and it needs nightly-only flags. Debug
# assertions and overflow checks stay on. Everything builds on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(sv1_line sv2_messages gbt config)
CARGO_FUZZ_VERSION=0.13.2
# Its own target dir: the instrumented build never waits on (or invalidates) the workspace's.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/fuzz}
WORK=${FUZZ_WORK:-$CARGO_TARGET_DIR/work}

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# Runs one target's binary with libFuzzer flags; new inputs go to $WORK (the committed corpus is
# only read), crashes to $WORK/artifacts/TARGET/. Its output, final stats included, goes to
# $WORK/TARGET.log.
run() {
  local target=$1; shift
  rm -rf "$WORK/artifacts/$target"
  mkdir -p "$WORK/corpus/$target" "$WORK/artifacts/$target"
  [ -f "fuzz/dict/$target.dict" ] && set -- -dict="fuzz/dict/$target.dict" "$@"
  "$BIN/$target" -artifact_prefix="$WORK/artifacts/$target/" -timeout=10 -print_final_stats=1 \
    "$@" "$WORK/corpus/$target" "fuzz/corpus/$target" >"$WORK/$target.log" 2>&1
}

report() {
  local target=$1 status=$2 log="$WORK/$1.log"
  local crashes
  final() { sed -n "s/^stat::$1: *//p" "$log" | tail -n1; }
  crashes=$(find "$WORK/artifacts/$target" -type f | wc -l)
  echo "$target: executions $(final number_of_executed_units), $(final average_exec_per_sec) exec/s," \
    "$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE)' "$log" | tail -n1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+')," \
    "crashes $crashes, exit $status"
  if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 20 || true
    return 1
  fi
}

# Built once, then the binaries run directly: `cargo fuzz run` would rebuild before each run.
# FUZZ_NO_BUILD=1 runs them as last built (a campaign while the tree is mid-edit).
BIN=$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release
[ "${FUZZ_NO_BUILD:-}" = 1 ] || cargo fuzz build -s none

case ${1:-} in
  smoke)
    failed=0
    for t in "${TARGETS[@]}"; do
      status=0
      run "$t" -max_total_time=60 || status=$?
      report "$t" "$status" || failed=1
    done
    exit "$failed"
    ;;
  campaign)
    targets=("${TARGETS[@]}")
    [ -n "${2:-}" ] && [ "$2" != all ] && targets=("$2")
    runs=${3:-10000000}
    failed=0
    for t in "${targets[@]}"; do
      start=$(date +%s)
      status=0
      run "$t" -runs="$runs" || status=$?
      echo "$t: $(($(date +%s) - start)) s"
      report "$t" "$status" || failed=1
      # The committed corpus becomes the smallest set with the same edges (hit counts
      # ignored: hundreds of files rather than thousands), plus every input that once crashed
      # a target (kept as crash-*, whatever it adds).
      merged=$(mktemp -d)
      "$BIN/$t" -merge=1 -use_counters=0 "$merged" "fuzz/corpus/$t" "$WORK/corpus/$t" \
        >"$WORK/$t.merge.log" 2>&1
      find "fuzz/corpus/$t" -name 'crash-*' -exec cp {} "$merged/" \;
      rm -rf "fuzz/corpus/$t" && mv "$merged" "fuzz/corpus/$t" && chmod 755 "fuzz/corpus/$t"
      echo "$t: corpus $(find "fuzz/corpus/$t" -type f | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
    done
    exit "$failed"
    ;;
  *)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
