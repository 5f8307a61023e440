#!/usr/bin/env bash
# The test command (README; .ci/run calls it): installs what the tests need, builds rimg and the fixture
# images, then runs every test against real parts (a registry process, FUSE mounts, namespaces, cgroups).
# Run as root on a machine set up by nothing but this repository.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

mkdir -p "$repo/.work"
bash setup.sh
bash image-fixtures/build.sh
cargo build --all-targets --locked 2>&1 | tail -n 3
# Style gates: a change that is not formatted or not clippy-clean does not pass.
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings 2>&1 | tail -n 3
# Two test threads: the machine has two cores, and tests that mount and start containers are I/O bound.
cargo test --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$repo/.work/test.log" | grep -E '^(test |running |test result|failures:|---- )|panicked' || true
# The summary line CI reads, and the exit code that matters.
if grep -q '^test result: FAILED' "$repo/.work/test.log" || ! grep -q '^test result: ok' "$repo/.work/test.log"; then
  grep -A40 '^failures:' "$repo/.work/test.log" | head -n 200
  exit 1
fi
awk '/^test result:/ {p+=$4; f+=$6; s+=$8} END {printf "%d passed, %d failed, %d skipped\n", p, f, s}' "$repo/.work/test.log"
