#!/usr/bin/env bash
# Long fuzzing runs of fuzz/ targets (see SECURITY.md, "Fuzzing"; scripts/fuzz-ci.sh is the short CI run).
#
#   scripts/fuzz.sh                          # every target, 10 minutes each, one after the other
#   scripts/fuzz.sh -t 3600 -j 2 layer_entries   # one target, an hour, 2 libFuzzer jobs in parallel
#   scripts/fuzz.sh --replay                 # only replay fuzz/artifacts/*/* (e.g. after a fix)
#
# The corpus grown by libFuzzer is kept in fuzz/corpus-run/<target>/ (git-ignored) and reused by the next
# run; the committed seeds in fuzz/corpus/<target>/ are only read. Crashes land in fuzz/artifacts/<target>/.
# To turn one into a regression test:
#   cargo fuzz tmin --sanitizer none <target> fuzz/artifacts/<target>/crash-...   # minimize
#   add a #[test] to tests/fuzz_regressions.rs calling checks::<check>(...) on the minimized bytes
#   (for layer_entries, `RIMG_FUZZ_PRINT=1 fuzz/target/x86_64-unknown-linux-gnu/release/layer_entries
#   CRASH` prints the entries as Rust values to paste).
#
# Stable toolchain only: `--sanitizer none` (no AddressSanitizer); see scripts/fuzz-ci.sh for why that
# still gives coverage-guided fuzzing without nightly or RUSTC_BOOTSTRAP.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo/fuzz"
seconds=600
jobs=1
replay=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) seconds=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    --replay) replay=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(reference manifest config www_authenticate dockerfile layer_apply layer_entries)
fi
export CARGO_TARGET_DIR="$repo/fuzz/target"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
cargo fuzz build --sanitizer none 2>&1 | tail -n 1
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"

status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus-run/$t" "artifacts/$t" logs
  if [ "$replay" = 1 ]; then
    shopt -s nullglob
    crashes=("artifacts/$t"/*)
    shopt -u nullglob
    [ ${#crashes[@]} -eq 0 ] && continue
    if "$bin/$t" "${crashes[@]}" >"logs/$t-replay.log" 2>&1; then
      echo "fuzz: $t: ${#crashes[@]} saved crash(es) no longer crash"
    else
      echo "fuzz: $t: a saved crash still crashes (logs/$t-replay.log)"
      status=1
    fi
    continue
  fi
  echo "fuzz: $t for ${seconds} s with $jobs job(s); log in fuzz/logs/$t.log"
  args=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="artifacts/$t/")
  if [ "$jobs" -gt 1 ]; then
    args+=(-fork="$jobs" -ignore_crashes=1)
  fi
  if "$bin/$t" "corpus-run/$t" "corpus/$t" "${args[@]}" >"logs/$t.log" 2>&1; then
    echo "fuzz: $t: no crash ($(grep -a -E '^Done|^#[0-9]+' "logs/$t.log" | tail -n 1 | cut -c1-70))"
  else
    echo "fuzz: $t: CRASH (see fuzz/logs/$t.log)"
    grep -a -A12 -E 'panicked|ERROR: libFuzzer' "logs/$t.log" | head -n 30 || true
    status=1
  fi
  shopt -s nullglob
  found=("artifacts/$t"/*)
  shopt -u nullglob
  [ ${#found[@]} -gt 0 ] && echo "fuzz: $t: ${#found[@]} input(s) in fuzz/artifacts/$t/"
done
exit $status
