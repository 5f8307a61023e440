#!/usr/bin/env bash
# CI fuzzing: a short bounded run of every fuzz target of fuzz/ (see SECURITY.md, "Fuzzing"). Exits
# non-zero if any target crashes (a panic in rimg, a broken invariant, or a layer write outside its
# directory); the crashing inputs are left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz-ci.sh                 # every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=5 scripts/fuzz-ci.sh reference manifest
#   scripts/fuzz-ci.sh --build-only    # build the targets, run nothing
#   scripts/fuzz-ci.sh --no-build ...  # run targets built before (scripts/test.sh overlaps the build
#                                      # with the fixture and rimg builds, then runs them after the tests)
#
# Build: plain cargo with the flags `cargo fuzz build --sanitizer none` (cargo-fuzz 0.13) passes —
# libFuzzer's coverage instrumentation (sancov inline 8-bit counters, pc table, compare tracing, stack
# depth), `--cfg fuzzing`, debug assertions — except its `-Ccodegen-units=1`. So CI needs neither
# cargo-fuzz (2 minutes to install) nor a single-codegen-unit build; the binaries are the same libFuzzer
# programs (scripts/fuzz.sh, for long runs, still uses cargo fuzz). Cost on the 2-core dev machine: the
# build 3.5 min from scratch while other work ran; then 7 targets x FUZZ_SECONDS (140 s by default).
#
# Toolchain: only stable Rust is available here. Only sanitizers need nightly (`-Zsanitizer=...`); the
# coverage flags above are stable, so libFuzzer gets its coverage feedback without RUSTC_BOOTSTRAP. What
# is lost is AddressSanitizer: a memory error in unsafe code is caught only if it crashes. Panics,
# integer overflow (debug assertions are on) and the targets' own invariants are all caught.
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

triple=x86_64-unknown-linux-gnu
if [ "$build" = 1 ]; then
  start=$SECONDS
  flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
  flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
  flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth"
  flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing -Cdebug-assertions"
  # --target: RUSTFLAGS then apply to the targets but not to build scripts and proc macros.
  RUSTFLAGS="$flags" cargo build --release --locked --bins --target "$triple" \
    --config 'profile.release.debug="line-tables-only"' 2>&1 | tail -n 2
  echo "fuzz-ci: targets built in $((SECONDS - start)) s"
fi
[ "$run" = 1 ] || exit 0

bin="$CARGO_TARGET_DIR/$triple/release"
work=$(mktemp -d "${TMPDIR:-/tmp}/rimg-fuzz-ci.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "artifacts/$t"
  # New inputs go to a scratch corpus ($work/$t, first); the committed seeds (fuzz/corpus/$t) are only read.
  # -timeout: an input taking 20 s is reported as a hang (a real layer apply takes milliseconds).
  seeds=()
  [ -d "corpus/$t" ] && seeds=("corpus/$t") # layer_entries builds its inputs itself: no seed files
  if "$bin/$t" "$work/$t" "${seeds[@]}" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
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
