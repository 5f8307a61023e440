#!/bin/bash
# rimg's FUSE overlay vs kernel overlayfs vs fuse-overlayfs on identical lowers, in one run.
#
# usage (as root): benches/fs/run.sh [REPS]
#   env: RIMG=path/to/rimg (default target/release/rimg, built if missing)
#        ROOTFS_TAR=debian rootfs tarball (default: the fixtures' debootstrap bookworm minbase tar,
#                   else the Alpine minirootfs), BENCH_DIR=/tmp/rimg-fs-bench,
#        TESTS="find_warm mount" (a subset of the tests, default all), FSES="kernel rimg" (default all three),
#        RIMG_OPTS=extra rimg mount options appended to -o (e.g. threads=4; the output header names them)
#        URING=1 (default) turns the kernel's fuse.enable_uring on for the run (restored at exit), so rimg
#                takes requests through FUSE over io_uring as it does wherever the kernel offers it;
#                URING=0 measures the /dev/fuse transport
#        FUSE_OVL_MAX_FILES=25000: the delete tests of more files than this skip fuse-overlayfs (its
#                100k delete takes many minutes)
# Delete tests (issue 20.1): rm_rf_N is GNU `rm -rf` (reads the whole directory, then unlinks),
# bb_rm_rf_N busybox `rm -rf` (unlinks each name as readdir returns it, as in Alpine/busybox images) of
# a directory of N empty files that lives in a lower layer (its own lower, $B/delN), so every unlink
# leaves a whiteout. They are not in the default TESTS (minutes with fuse-overlayfs); run them with
#   TESTS="rm_rf_10k bb_rm_rf_10k rm_rf_25k bb_rm_rf_25k rm_rf_100k bb_rm_rf_100k" benches/fs/run.sh 3
# The individual samples of every test go to stderr.
# Every figure is the median of REPS runs (default 3), each on a fresh upper/work and a fresh mount.
# "cold" figures drop the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) first.
# Every test's upper is kept until the run ends (see do_umount): start a run at least 5 minutes after
# a large deletion on the disk (the previous run's, a test suite's), or creates measure ext4's search.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${1:-3}
B=${BENCH_DIR:-/tmp/rimg-fs-bench}
RIMG=${RIMG:-$PWD/target/release/rimg}
[ -x "$RIMG" ] || cargo build --release --bin rimg
FIX_TAR=$PWD/.work/fixtures/cache/debootstrap-bookworm-minbase.tar
ALPINE=$PWD/image-fixtures/alpine/alpine-minirootfs-3.20.3-x86_64.tar.gz
ROOTFS_TAR=${ROOTFS_TAR:-$([ -f $FIX_TAR ] && echo $FIX_TAR || echo $ALPINE)}

URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_WAS=$(cat "$URING_PARAM" 2>/dev/null || echo "")
cleanup() {
    for m in "$B"/run/*/m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$B/trash"
    if [ -n "$URING_WAS" ]; then echo "$([ "$URING_WAS" = Y ] && echo 1 || echo 0)" >"$URING_PARAM"; fi
}
trap cleanup EXIT
if [ -n "$URING_WAS" ]; then echo "${URING:-1}" >"$URING_PARAM"; fi

setup() {
    mkdir -p "$B"
    if [ ! -f "$B/.ready" ]; then
        rm -rf "$B/rootfs" "$B/data"
        mkdir -p "$B/rootfs" "$B/data/small" "$B/src"
        tar -xpf "$ROOTFS_TAR" -C "$B/rootfs" --xattrs --numeric-owner 2>/dev/null || tar -xpf "$ROOTFS_TAR" -C "$B/rootfs"
        dd if=/dev/urandom of="$B/data/big" bs=1M count=1024 status=none
        for i in $(seq 1 2000); do head -c 4096 /dev/urandom > "$B/data/small/f$i"; done
        mkdir -p "$B/src/tree"
        for d in $(seq 1 20); do
            mkdir -p "$B/src/tree/d$d"
            for f in $(seq 1 1000); do echo "file $d $f" > "$B/src/tree/d$d/f$f"; done
        done
        tar -cf "$B/src/small20k.tar" -C "$B/src" tree
        rm -rf "$B/src/tree"
        touch "$B/.ready"
    fi
}

# a lower layer $B/delN holding d/ with N empty files (the delete tests)
setup_del() {
    local n=$1
    [ -f "$B/.del$n-ready" ] && return
    rm -rf "$B/del$n"
    mkdir -p "$B/del$n/d"
    python3 -c 'import os,sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n): open(f"{d}/lower-file-{i:06d}", "w").close()' "$B/del$n/d" "$n"
    touch "$B/.del$n-ready"
}
# N of a delete test name (rm_rf_25k -> 25000)
del_files() { local k=${1##*_}; echo $(( ${k%k} * 1000 )); }

now() { date +%s%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# mount FS at $R/m over lowers LOWERS (default data:rootfs) with a fresh upper/work
do_mount() {
    local fs=$1 R=$2 lowers=${3:-$B/data:$B/rootfs}
    rm -rf "$R"; mkdir -p "$R/u" "$R/w" "$R/m"
    local opts="lowerdir=$lowers,upperdir=$R/u,workdir=$R/w"
    case $fs in
        kernel) mount -t overlay overlay -o "$opts" "$R/m" ;;
        rimg) "$RIMG" overlayfs -o "$opts${RIMG_OPTS:+,$RIMG_OPTS}" "$R/m" ;;
        fuse-overlayfs) fuse-overlayfs -o "$opts" "$R/m" 2>/dev/null ;;
    esac
}
do_umount() {
    local R=$1
    umount "$R/m" 2>/dev/null || umount -l "$R/m"
    # wait for FUSE daemons to go away
    for _ in $(seq 1 100); do mountpoint -q "$R/m" || break; sleep 0.05; done
    # Small files are deleted at exit, not now: ext4's inode allocator skips inodes freed in the last
    # minutes (recently_deleted, one inode-table read each), so deleting each test's files as the run
    # went made every later create slower than the one before (untar20k of one filesystem: 336, 2055,
    # 3999 ms in three repetitions), and whoever came later in a repetition paid more. Large files go
    # now (a few inodes; kept, their dirty pages would be written back under the next tests), and the
    # rest is written back before the next test starts.
    find "$R" -xdev -type f -size +1M -delete 2>/dev/null || true
    mkdir -p "$B/trash"
    mv "$R" "$B/trash/$(date +%s%N)"
    sync
}

py() { python3 -c "$1" "$2"; }
CREATES='import os,sys
d=sys.argv[1]+"/creates"; os.mkdir(d)
for i in range(2000):
    fd=os.open(f"{d}/f{i}", os.O_CREAT|os.O_WRONLY|os.O_EXCL, 0o644); os.write(fd,b"x"*100); os.close(fd)'
MKRM='import os,sys
d=sys.argv[1]+"/mkrm"; os.mkdir(d)
for i in range(10000): os.mkdir(f"{d}/d{i}")
for i in range(10000): os.rmdir(f"{d}/d{i}")'
W4K='import os,sys
fd=os.open(sys.argv[1]+"/w4k", os.O_CREAT|os.O_WRONLY, 0o644); b=b"y"*4096
for i in range(25600): os.write(fd,b)
os.close(fd)'
READS='import os,sys
d=sys.argv[1]+"/small"
for i in range(1,2001):
    with open(f"{d}/f{i}","rb") as f: f.read()'

# run_test FS TEST -> prints elapsed ms
run_test() {
    local fs=$1 t=$2 R="$B/run/$1" s e
    mkdir -p "$B/run"
    if [ "$t" = mount ]; then
        rm -rf "$R"; mkdir -p "$R/u" "$R/w" "$R/m"
        s=$(now)
        local opts="lowerdir=$B/data:$B/rootfs,upperdir=$R/u,workdir=$R/w"
        case $fs in
            kernel) mount -t overlay overlay -o "$opts" "$R/m" ;;
            rimg) "$RIMG" overlayfs -o "$opts${RIMG_OPTS:+,$RIMG_OPTS}" "$R/m" ;;
            fuse-overlayfs) fuse-overlayfs -o "$opts" "$R/m" 2>/dev/null ;;
        esac
        stat "$R/m/etc/passwd" >/dev/null
        e=$(now)
        do_umount "$R"
        echo $(( (e - s) / 1000000 ))
        return
    fi
    local lowers=""
    case $t in
        rm_rf_*|bb_rm_rf_*) lowers=$B/del$(del_files "$t") ;;
    esac
    do_mount "$fs" "$R" $lowers
    local m="$R/m"
    case $t in
        rm_rf_*) s=$(now); rm -rf "$m/d"; e=$(now) ;;
        bb_rm_rf_*) s=$(now); busybox rm -rf "$m/d"; e=$(now) ;;
        find_cold) drop; s=$(now); find "$m" >/dev/null; e=$(now) ;;
        find_warm) find "$m" >/dev/null; s=$(now); find "$m" >/dev/null; e=$(now) ;;
        read1g_cold) drop; s=$(now); dd if="$m/big" of=/dev/null bs=1M status=none; e=$(now) ;;
        read1g_warm) dd if="$m/big" of=/dev/null bs=1M status=none; s=$(now); dd if="$m/big" of=/dev/null bs=1M status=none; e=$(now) ;;
        small_reads) drop; s=$(now); py "$READS" "$m"; e=$(now) ;;
        creates) s=$(now); py "$CREATES" "$m"; e=$(now) ;;
        untar20k) s=$(now); tar -xf "$B/src/small20k.tar" -C "$m"; e=$(now) ;;
        mkdir_rmdir10k) s=$(now); py "$MKRM" "$m"; e=$(now) ;;
        write4k) s=$(now); py "$W4K" "$m"; e=$(now) ;;
        copyup1g) s=$(now); echo x >> "$m/big"; e=$(now) ;;
        chmod1g) s=$(now); chmod 600 "$m/big"; e=$(now) ;;
        write512m_fsync) s=$(now); dd if=/dev/zero of="$m/w512" bs=1M count=512 conv=fsync status=none; e=$(now) ;;
    esac
    do_umount "$R"
    echo $(( (e - s) / 1000000 ))
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

setup
TESTS=${TESTS:-"mount find_cold find_warm read1g_cold read1g_warm small_reads creates untar20k mkdir_rmdir10k write4k copyup1g chmod1g write512m_fsync"}
FSES=${FSES:-"kernel rimg fuse-overlayfs"}
echo "# rimg FUSE overlay benchmark — $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, reps=$REPS"
[ -n "${RIMG_OPTS:-}" ] && echo "# rimg extra options: $RIMG_OPTS"
echo "# fuse.enable_uring=$(cat "$URING_PARAM" 2>/dev/null || echo absent) (rimg uses FUSE over io_uring when Y)"
echo "# lowers: data (1 GiB file + 2000×4 KiB) over rootfs from $(basename "$ROOTFS_TAR") (delete tests: delN/d of N empty files); upper/work on $(df --output=fstype "$B" | tail -1)"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-16s %10s %10s %14s %12s %14s\n" test kernel_ms rimg_ms fuse-ovl_ms rimg/kernel fuse-ovl/rimg
for t in $TESTS; do
    declare -A res=() all=()
    fses=$FSES
    case $t in
        rm_rf_*|bb_rm_rf_*)
            setup_del "$(del_files "$t")"
            if [ "$(del_files "$t")" -gt "${FUSE_OVL_MAX_FILES:-25000}" ]; then fses=${fses/fuse-overlayfs/}; fi ;;
    esac
    # interleave the filesystems so load drift on a shared machine hits all of them alike
    for _ in $(seq 1 "$REPS"); do
        for fs in $fses; do all[$fs]+="$(run_test "$fs" "$t") "; done
    done
    for fs in $fses; do res[$fs]=$(echo ${all[$fs]} | tr ' ' '\n' | median); echo "# $t $fs: ${all[$fs]}" >&2; done
    k=${res[kernel]:-0}; r=${res[rimg]:-0}; f=${res[fuse-overlayfs]:-0}
    rk=$(awk -v a="$r" -v b="$k" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }')
    fr=$(awk -v a="$f" -v b="$r" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }')
    if [ -z "${res[fuse-overlayfs]:-}" ]; then f=-; fr=-; fi
    printf "%-16s %10s %10s %14s %12s %14s\n" "$t" "$k" "$r" "$f" "$rk" "$fr"
    unset res all
done
