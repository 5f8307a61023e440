#!/bin/bash
# Deleting a lower-layer directory inside a container (issue 20.1): `rimg run --rm IMG rm -rf /d`, where
# /d (N empty files) is a layer of the image, on rimg's FUSE rootfs (the container configuration of the
# server: 2 threads, /dev/fuse, no read-ahead) and on kernel overlayfs (`--storage-driver overlay`), the
# two interleaved, median of REPS. Both GNU rm (reads the whole directory, then unlinks) and busybox rm
# (unlinks each name as readdir returns it, as in Alpine and busybox images).
#
# usage (as root): benches/fs/rm-container.sh [REPS]
#   env: RIMG=path/to/rimg (default target/release/rimg), SIZES="10000 25000 100000",
#        BENCH_DIR=/tmp/rimg-rm-bench (its own --root; images are built there once),
#        ROOTFS_TAR=the fixtures' debootstrap bookworm minbase tar (GNU rm comes from it; busybox,
#                   static, is copied from the host to /usr/local/bin)
# Samples on stderr. The wall time includes the container's start and exit (~20 ms, see
# benches/run/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${1:-3}
B=${BENCH_DIR:-/tmp/rimg-rm-bench}
RIMG=${RIMG:-$PWD/target/release/rimg}
[ -x "$RIMG" ] || cargo build --release --bin rimg
ROOTFS_TAR=${ROOTFS_TAR:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)/.work/fixtures/cache/debootstrap-bookworm-minbase.tar}
SIZES=${SIZES:-"10000 25000 100000"}
ROOT=$B/root
mkdir -p "$B"

# image delN: the Debian minbase rootfs, busybox, and a layer of its own with /d holding N files
image() {
    local n=$1 ctx=$B/ctx$n
    "$RIMG" --root "$ROOT" inspect "del$n" >/dev/null 2>&1 && return
    rm -rf "$ctx"; mkdir -p "$ctx/d"
    cp "$ROOTFS_TAR" "$ctx/rootfs.tar"
    cp "$(command -v busybox)" "$ctx/busybox"
    python3 -c 'import sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n): open(f"{d}/lower-file-{i:06d}", "w").close()' "$ctx/d" "$n"
    printf 'FROM scratch\nADD rootfs.tar /\nCOPY busybox /usr/local/bin/busybox\nCOPY d /d\n' >"$ctx/Dockerfile"
    "$RIMG" --root "$ROOT" build -q -t "del$n" "$ctx" >/dev/null
    rm -rf "$ctx"
}

# one run: prints ms
one() {
    local drv=$1 n=$2 rm=$3 s e
    s=$(date +%s%N)
    # shellcheck disable=SC2086
    "$RIMG" --root "$ROOT" run --rm --storage-driver "$drv" "del$n" $rm -rf /d
    e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "# rimg run --rm delN RM -rf /d — $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, reps=$REPS"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-8s %-12s %12s %12s %14s\n" files rm kernel_ms rimg_ms rimg/kernel
for n in $SIZES; do
    image "$n"
    for rm in "rm" "busybox rm"; do
        k=() r=()
        for _ in $(seq 1 "$REPS"); do
            k+=("$(one overlay "$n" "$rm")")
            r+=("$(one fuse "$n" "$rm")")
        done
        echo "# $n '$rm' kernel: ${k[*]}; rimg: ${r[*]}" >&2
        km=$(printf '%s\n' "${k[@]}" | median); rmed=$(printf '%s\n' "${r[@]}" | median)
        ratio=$(awk -v a="$rmed" -v b="$km" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }')
        printf "%-8s %-12s %12s %12s %14s\n" "$n" "$rm" "$km" "$rmed" "$ratio"
    done
done
