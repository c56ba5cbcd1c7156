#!/usr/bin/env bash
# Fuzzes every reader of untrusted bytes with libFuzzer through cargo-fuzz, on the stable
# toolchain (no nightly needed with `--sanitizer none`).
#
#   bash fuzz/run.sh                 # every target, 1,000,000 executions each
#   RUNS=100000 bash fuzz/run.sh csv # one target, fewer executions
#   SECONDS_PER_TARGET=60 bash fuzz/run.sh   # a time budget instead of a count
#
# Each target starts from its seed corpus in fuzz/corpus/TARGET (committed) and grows a working
# copy in fuzz/target/corpus/TARGET; a crash is saved under fuzz/artifacts/TARGET and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(idx cifar csv checkpoint teacher_cache experiment)
cargo fuzz build --sanitizer none --release
limit=(-runs="${RUNS:-1000000}")
[ -n "${SECONDS_PER_TARGET:-}" ] && limit=(-max_total_time="$SECONDS_PER_TARGET")
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t"
  echo "== $t"
  # -rss_limit_mb: an input that makes a reader allocate more than 2 GB is a bug (unbounded
  # allocation); -timeout: one that takes more than 10 s is a hang.
  start=$(date +%s)
  status=0
  cargo fuzz run --sanitizer none --release "$t" "target/corpus/$t" "corpus/$t" -- \
    "${limit[@]}" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 >"target/$t.log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)|ERROR|panicked|SUMMARY" "target/$t.log" || true
  echo "   $t: $(( $(date +%s) - start )) s, exit $status (log: fuzz/target/$t.log)"
  [ "$status" -eq 0 ] || exit "$status"
done
