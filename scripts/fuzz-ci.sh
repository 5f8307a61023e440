#!/usr/bin/env bash
# CI fuzzing: a short bounded run of every fuzz target of fuzz/ (see fuzz/SECURITY-fuzzing.md). Exits
# non-zero if any target crashes (a panic in rimg, a broken invariant, or a layer write outside its
# directory); the crashing inputs are left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz-ci.sh                 # every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=5 scripts/fuzz-ci.sh reference manifest
#   scripts/fuzz-ci.sh --build-only    # install cargo-fuzz and build the targets, run nothing
#   scripts/fuzz-ci.sh --no-build ...  # run targets built before (scripts/test.sh overlaps the build
#                                      # with the fixture and rimg builds, then runs them after the tests)
#
# Cost on the 2-core dev machine: installing cargo-fuzz once 116 s; building the targets from scratch
# 3-9 min (rimg and its dependencies, instrumented, in release mode, in fuzz/target), after a change in
# rimg 1-2.5 min; then 7 targets x FUZZ_SECONDS (140 s by default). Measured: 4 min for one run that
# had to rebuild rimg.
#
# Toolchain: only stable Rust is available here. cargo-fuzz needs nightly only for `-Zsanitizer=...`;
# with `--sanitizer none` it passes only stable flags (`-Cpasses=sancov-module`, `-Cllvm-args=
# -sanitizer-coverage-*`, `--cfg fuzzing`, `-Cdebug-assertions`), so libFuzzer gets its coverage
# feedback on stable without RUSTC_BOOTSTRAP. What is lost is AddressSanitizer: a memory error in
# unsafe code is caught only if it crashes. Panics, integer overflow (debug assertions are on) and the
# targets' own invariants are all caught.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo/fuzz"
seconds=${FUZZ_SECONDS:-20}
build=1 run=1
case "${1:-}" in
  --build-only) run=0; shift ;;
  --no-build) build=0; shift ;;
esac
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(reference manifest config www_authenticate dockerfile layer_apply layer_entries)
fi
# Its own target dir: never contends with (or invalidates) the main crate's build.
export CARGO_TARGET_DIR="$repo/fuzz/target"

if [ "$build" = 1 ] && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-ci: installing cargo-fuzz (once, ~2 minutes)"
  start=$SECONDS
  cargo install --locked cargo-fuzz
  echo "fuzz-ci: cargo-fuzz installed in $((SECONDS - start)) s"
fi

if [ "$build" = 1 ]; then
  start=$SECONDS
  cargo fuzz build --sanitizer none 2>&1 | tail -n 2
  echo "fuzz-ci: targets built in $((SECONDS - start)) s"
fi
[ "$run" = 1 ] || exit 0

bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
work=$(mktemp -d "${TMPDIR:-/tmp}/rimg-fuzz-ci.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "artifacts/$t"
  # New inputs go to a scratch corpus ($work/$t, first); the committed seeds (fuzz/corpus/$t) are only read.
  # -timeout: an input taking 20 s is reported as a hang (a real layer apply takes milliseconds).
  if "$bin/$t" "$work/$t" "corpus/$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$work/$t.log" 2>&1; then
    echo "fuzz-ci: $t ok ($(grep -ao 'Done [0-9]* runs' "$work/$t.log" | tail -n 1 | cut -d' ' -f2) runs in ${seconds} s)"
  else
    echo "fuzz-ci: $t FAILED"
    grep -a -A12 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$work/$t.log" | head -n 40 || tail -n 40 "$work/$t.log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz-ci: crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/; replay with"
  echo "  fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/<crash-file>)"
  exit 1
fi
echo "fuzz-ci: all ${#targets[@]} targets ran ${seconds} s each without a crash"
