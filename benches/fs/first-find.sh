#!/bin/bash
# A first `find` on a fresh rimg mount: wall time and the server's CPU time, median of N mounts.
# With COLD=1 the page cache is dropped before each find (what run.sh's find_cold measures); by
# default the host's caches stay warm, so the figure is the cost of FUSE and of the server alone.
#
# usage (as root): benches/fs/first-find.sh [N]
#   env: RIMG=path/to/rimg (default target/release/rimg), RIMG_OPTS=extra -o options (e.g. readahead=off),
#        BENCH_DIR (default /tmp/rimg-fs-bench: run.sh's lowers, made by run.sh), FS=kernel for kernel overlayfs
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-9}
B=${BENCH_DIR:-/tmp/rimg-fs-bench}
RIMG=${RIMG:-$PWD/target/release/rimg}
[ -d "$B/rootfs" ] || { echo "no $B/rootfs: run benches/fs/run.sh once first" >&2; exit 1; }
R=$B/first-find
trap 'umount -l "$R/m" 2>/dev/null || true; rm -rf "$R"' EXIT
walls=() cpus=()
for _ in $(seq 1 "$N"); do
    rm -rf "$R"; mkdir -p "$R/u" "$R/w" "$R/m"
    opts="lowerdir=$B/data:$B/rootfs,upperdir=$R/u,workdir=$R/w"
    pid=
    if [ "${FS:-rimg}" = kernel ]; then
        mount -t overlay overlay -o "$opts" "$R/m"
    else
        "$RIMG" overlayfs -o "$opts${RIMG_OPTS:+,$RIMG_OPTS}" "$R/m"
        pid=$(pgrep -n -x rimg)
    fi
    cpu() { local c=0 t; [ -n "$pid" ] || { echo 0; return; }
            for t in /proc/"$pid"/task/*; do c=$((c + $(cut -d' ' -f1 "$t/schedstat"))); done; echo $c; }
    [ "${COLD:-0}" = 1 ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
    c0=$(cpu); s=$(date +%s%N); find "$R/m" >/dev/null; e=$(date +%s%N); c1=$(cpu)
    umount "$R/m"
    walls+=($(( (e - s) / 100000 ))); cpus+=($(( (c1 - c0) / 100000 )))
done
med() { printf "%s\n" "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/10}'; }
cold=; [ "${COLD:-0}" = 1 ] && cold=", cold"
echo "first find (${FS:-rimg}${RIMG_OPTS:+, $RIMG_OPTS}$cold): wall $(med "${walls[@]}") ms, server CPU $(med "${cpus[@]}") ms (median of $N; walls in 0.1 ms: ${walls[*]})"
