#!/usr/bin/env bash
# The test command (README; .ci/run calls it): installs what the tests need, builds rimg and the fixture
# images, then runs every test against real parts (a registry process, FUSE mounts, namespaces, cgroups).
# Run as root on a machine set up by nothing but this repository.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

mkdir -p "$repo/.work"
bash setup.sh
# The fuzz targets (instrumented, a separate target dir) build in the background while the fixtures are
# made, mostly I/O; their short runs come after the tests. RIMG_SKIP_FUZZ=1 leaves fuzzing out.
fuzz_pid=
if [ "${RIMG_SKIP_FUZZ:-0}" != 1 ]; then
  setsid nice -n 10 bash scripts/fuzz-ci.sh --build-only >"$repo/.work/fuzz-build.log" 2>&1 &
  fuzz_pid=$!
  # If a later step fails, the build must not outlive this script.
  trap 'kill -- -"$fuzz_pid" 2>/dev/null || true' EXIT
fi
bash image-fixtures/build.sh
cargo build --all-targets --locked 2>&1 | tail -n 3
# Style gates: a change that is not formatted or not clippy-clean does not pass.
cargo fmt --all -- --check
rustfmt --check --edition 2021 init/rimg-init.rs
cargo clippy --all-targets --locked -- -D warnings 2>&1 | tail -n 3
if [ -n "$fuzz_pid" ]; then
  # The tests start containers with limits and watch them: let them have the machine to themselves.
  wait "$fuzz_pid" || { cat "$repo/.work/fuzz-build.log"; echo "fuzz targets failed to build"; exit 1; }
  trap - EXIT
  tail -n 1 "$repo/.work/fuzz-build.log"
fi
# Two test threads: the machine has two cores, and tests that mount and start containers are I/O bound.
# A hung test (a FUSE request nobody answers, a process stuck in the kernel) must fail this script with a
# diagnosis well inside CI's own limit instead of silently using it all up. The run is bounded
# (RIMG_TEST_TIMEOUT seconds) by polling, not by waiting on it (a process stuck in the kernel cannot be
# waited for); when time runs out, what is stuck and where is printed, every FUSE connection is aborted
# (which frees whatever waits on one) and the tests are killed.
limit=${RIMG_TEST_TIMEOUT:-2400}
# the FUSE control filesystem: how connections are aborted below (and by tests); not every machine mounts it
mountpoint -q /sys/fs/fuse/connections || mount -t fusectl none /sys/fs/fuse/connections || true
setsid cargo test --locked --no-fail-fast -- --test-threads=2 >"$repo/.work/test.log" 2>&1 &
test_pid=$!
# progress as it happens (a process group of its own, stopped once the log is complete)
setsid bash -c 'tail -n +1 -F "$0" 2>/dev/null |
  grep --line-buffered -E "^(test |running |test result|failures:|---- )|panicked"' "$repo/.work/test.log" &
stream_pid=$!
deadline=$((SECONDS + limit))
while kill -0 "$test_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 2; done
if kill -0 "$test_pid" 2>/dev/null; then
  echo "tests: still running after $limit s; what is running:"
  ps -s "$test_pid" -o pid,ppid,stat,wchan:32,etimes,args || true
  ps -C rimg -o pid,ppid,stat,wchan:32,etimes,args || true
  for pid in $(ps -eo pid=,stat= | awk '$2 ~ /D/ {print $1}'); do
    echo "--- uninterruptible $pid: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null)"
    cat /proc/"$pid"/stack 2>/dev/null || true
  done
  grep -E ' fuse' /proc/self/mountinfo || true
  for c in /sys/fs/fuse/connections/*/abort; do [ -e "$c" ] && echo 1 >"$c" 2>/dev/null || true; done
  kill -KILL -- -"$test_pid" 2>/dev/null || true
  kill -- -"$stream_pid" 2>/dev/null || true
  exit 1
fi
wait "$test_pid" || true
sleep 1
kill -- -"$stream_pid" 2>/dev/null || true
# The summary line CI reads, and the exit code that matters.
if grep -q '^test result: FAILED' "$repo/.work/test.log" || ! grep -q '^test result: ok' "$repo/.work/test.log"; then
  grep -A40 '^failures:' "$repo/.work/test.log" | head -n 200
  exit 1
fi
# A short bounded run of every fuzz target (issue 6); a crash fails CI and leaves its input in
# fuzz/artifacts/<target>/ (make it a regression test in tests/fuzz_regressions.rs).
fuzz_status=0
if [ -n "$fuzz_pid" ]; then
  FUZZ_SECONDS=${FUZZ_SECONDS:-10} bash scripts/fuzz-ci.sh --no-build || fuzz_status=$?
fi
awk '/^test result:/ {p+=$4; f+=$6; s+=$8} END {printf "%d passed, %d failed, %d skipped\n", p, f, s}' "$repo/.work/test.log"
exit "$fuzz_status"
