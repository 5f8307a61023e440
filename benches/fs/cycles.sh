#!/bin/sh
# 1000 mount/unmount cycles of the FUSE overlay in one process: no fd, thread or mount may leak.
# usage (as root): benches/fs/cycles.sh [CYCLES]
set -eu
cd "$(dirname "$0")/../.."
RIMG_FS_CYCLES=${1:-1000} cargo test --test fs_lifecycle mount_unmount_cycles_leak_nothing -- --nocapture
