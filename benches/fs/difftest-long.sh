#!/bin/sh
# Long run of the kernel-overlayfs vs rimg differential test: several seeds, many cases each.
# usage: benches/fs/difftest-long.sh [CASES_PER_SEED] [SEEDS...]   (as root)
set -eu
cd "$(dirname "$0")/../.."
cases=${1:-2000}
shift 2>/dev/null || true
seeds=${*:-"1 2 3 4 5"}
for s in $seeds; do
    echo "== seed $s, $cases cases"
    RIMG_DIFFTEST_CASES=$cases RIMG_DIFFTEST_SEED=$s \
        cargo test --release --test fs_difftest kernel_overlayfs_and_rimg_agree -- --nocapture
done
