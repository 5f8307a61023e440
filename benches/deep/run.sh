#!/usr/bin/env bash
# Deep-image benchmark (issue 20): pull, mount, run and `find` on images of 130, 300 and 600 layers made by
# image-fixtures/deep-image.py (one small file per layer, whiteouts, opaque directories; busybox in the
# bottom layer), side by side in one run:
#   rimg          rimg pull; rimg mount --read-only (FUSE overlay); rimg run --rm IMG true (FUSE rootfs)
#   rimg overlay  rimg run --rm --storage-driver overlay IMG true (kernel overlayfs, one lowerdir+ per layer)
#   kernel        mount -t overlay -o ro,lowerdir=... over rimg's layer directories, named by short relative
#                 symlinks so that the options fit in mount(2)'s one page
#   podman        podman pull / image mount / run --rm --network none, overlay storage driver, storage and
#                 containers.conf of its own under the work directory (the host's are not touched)
# Each cell is the median of --runs runs (wall time, ms); a tool that cannot do a step shows its error.
# `find cold` drops the page cache before each run. Writes benches/deep/RESULTS.md.
#
# Usage: benches/deep/run.sh [--runs N] [--layers "130 300 600"] [--port P]
#   RIMG=path/to/rimg to benchmark a given binary (default: cargo build --release, target/release/rimg)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))
cd "$repo"

runs=3
layer_counts="130 300 600"
port=5057
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift ;;
    --layers) layer_counts=$2; shift ;;
    --port) port=$2; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

work=$repo/.work/bench/deep
results=$here/RESULTS.md
reg=127.0.0.1:$port
log() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for tool in skopeo podman jq docker-registry python3 busybox; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool missing: run setup.sh" >&2; exit 1; }
done
if [[ -z ${RIMG:-} ]]; then
  log "cargo build --release"
  cargo build --release --quiet
  RIMG=$repo/target/release/rimg
fi

mkdir -p "$work"
mnt=$work/mnt
kmnt=$work/kmnt
mkdir -p "$mnt" "$kmnt"
rroot=$work/rimg
R="$RIMG --root $rroot"
# podman: private storage and configuration. The nproc limit and runc follow what podman 4.3 needs on a
# host without CAP_SYS_RESOURCE; cgroupfs because the benchmark may run without systemd.
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
EOF
export CONTAINERS_CONF=$work/containers.conf
P="podman --root $work/podman/root --runroot $work/podman/run --tmpdir $work/podman/tmp --storage-driver overlay"

cleanup() {
  set +e
  $R umount "$mnt" >/dev/null 2>&1
  umount "$kmnt" >/dev/null 2>&1
  $P image umount -a >/dev/null 2>&1
  bash scripts/registry.sh stop --port "$port" --dir "$work/registry" >/dev/null 2>&1
}
trap cleanup EXIT
bash scripts/registry.sh start --port "$port" --dir "$work/registry" >&2

# measure PREP CMD: median wall time of CMD in ms over $runs runs, PREP run (untimed) before each; or
# "fails: <its last line of stderr>".
measure() {
  local prep=$1 cmd=$2 i t0 t1 times=()
  for ((i = 0; i < runs; i++)); do
    bash -c "$prep" >/dev/null 2>&1 || true
    t0=$(date +%s%N)
    if ! bash -c "$cmd" >/dev/null 2>"$work/err.log"; then
      echo "fails: $(grep -v '^\s*$' "$work/err.log" | tail -n1 | sed 's/[0-9a-f]\{64\}/ID/g' | cut -c1-90 | tr '|' '/')"
      return
    fi
    t1=$(date +%s%N)
    times+=($(((t1 - t0) / 1000000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}
drop="sync; echo 3 > /proc/sys/vm/drop_caches"

rows=()
commands=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }
for n in $layer_counts; do
  ref=$reg/deep:$n
  layout=$work/layout-$n
  if [[ ! -f $layout/index.json ]]; then
    log "$n layers: generating"
    python3 image-fixtures/deep-image.py "$layout" --layers "$n" --tag deep --gzip --busybox "$(command -v busybox)"
  fi
  log "$n layers: pushing with skopeo"
  skopeo copy -q --dest-tls-verify=false "oci:$layout:deep" "docker://$ref"

  log "$n layers: pull"
  r_pull=$(measure "rm -rf $rroot" "$R pull -q $ref")
  p_pull=$(measure "$P rmi -af" "$P pull -q --tls-verify=false $ref")
  [[ -d $rroot ]] || $R pull -q "$ref" >/dev/null

  log "$n layers: mount"
  r_mount=$(measure "$R umount $mnt" "$R mount --read-only $ref $mnt && stat -c %s $mnt/top")
  # kernel overlayfs over the same layer directories, each one a short relative name
  rm -rf "$work/l" && mkdir -p "$work/l"
  i=0
  for d in $($R inspect "$ref" | jq -r '.[0].RootFS.Layers[]'); do
    i=$((i + 1))
    ln -s "$rroot/layers/sha256/${d#sha256:}" "$work/l/$i"
  done
  lower=$(seq -s: "$i" -1 1)
  # (a refused mount reports the kernel's reason, from its log, as its last line)
  kmount="cd $work/l && { mount -t overlay overlay -o ro,lowerdir=$lower $kmnt || { dmesg | grep overlayfs: | tail -n1 | sed 's/^[^]]*] //' >&2; exit 1; }; } && stat -c %s $kmnt/top"
  k_mount=$(measure "umount $kmnt" "$kmount")
  p_mount=$(measure "$P image umount -a" "m=\$($P image mount $ref) && stat -c %s \$m/top")

  log "$n layers: find"
  cells_cold=() cells_warm=()
  for tool in rimg kernel podman; do
    case $tool in
      rimg) up="$R mount --read-only $ref $mnt"; dir=$mnt; down="$R umount $mnt" ;;
      kernel) up=${kmount%% && stat*}; dir=$kmnt; down="umount $kmnt" ;;
      podman) up=""; dir=""; down="$P image umount -a" ;;
    esac
    bash -c "$down" >/dev/null 2>&1 || true
    if [[ $tool == podman ]]; then
      dir=$($P image mount "$ref" 2>"$work/err.log") || dir=""
    elif ! bash -c "$up" >/dev/null 2>"$work/err.log"; then
      dir=""
    fi
    if [[ -z $dir ]]; then
      f="fails: $(grep -v '^\s*$' "$work/err.log" | tail -n1 | sed 's/[0-9a-f]\{64\}/ID/g' | cut -c1-90 | tr '|' '/')"
      cells_cold+=("$f") cells_warm+=("$f")
    else
      cells_cold+=("$(measure "$drop" "find $dir | wc -l")")
      cells_warm+=("$(measure "find $dir >/dev/null" "find $dir | wc -l")")
    fi
    bash -c "$down" >/dev/null 2>&1 || true
  done

  log "$n layers: run"
  r_run=$(measure "" "$R run --rm $ref true")
  o_run=$(measure "" "$R run --rm --storage-driver overlay $ref true")
  p_run=$(measure "" "$P run --rm --network none $ref true")
  $P rmi -af >/dev/null 2>&1 || true

  row "$n" pull "$r_pull" "–" "–" "$p_pull"
  row "$n" mount "$r_mount" "–" "$k_mount" "$p_mount"
  row "$n" "run \`true\`" "$r_run" "$o_run" "–" "$p_run"
  row "$n" "find cold" "${cells_cold[0]}" "–" "${cells_cold[1]}" "${cells_cold[2]}"
  row "$n" "find warm" "${cells_warm[0]}" "–" "${cells_warm[1]}" "${cells_warm[2]}"
  commands+=("# $n layers: kernel overlayfs mount (in $work/l, i -> rimg's layer dir of layer i, 1 = bottom)"
    "mount -t overlay overlay -o ro,lowerdir=$i:$((i - 1)):…:1 $kmnt")
  rm -rf "$rroot"
done

{
  echo "# Deep-image benchmark results"
  echo
  echo "Generated by \`benches/deep/run.sh --runs $runs --layers \"$layer_counts\"\` on $(date -u '+%Y-%m-%d %H:%M UTC'):"
  echo "$(nproc) cores, kernel $(uname -r), load average at start $(cut -d' ' -f1-3 /proc/loadavg) (a shared"
  echo "machine: compare within a row). rimg: \`$RIMG\` (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))."
  echo "Peers: $(podman --version) (overlay storage driver, runc), $(skopeo --version) (to push the images),"
  echo "kernel overlayfs through mount(8) ($(mount --version | head -1))."
  echo
  echo "Median of $runs runs, milliseconds; images from \`image-fixtures/deep-image.py --layers N --gzip\`"
  echo "pushed to a loopback CNCF distribution registry."
  echo
  echo "| layers | step | rimg (FUSE) | rimg --storage-driver overlay | kernel overlayfs | podman |"
  echo "|---:|---|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Commands (REF = $reg/deep:N; rimg = \`$R\`; podman = \`$P\` with CONTAINERS_CONF=$work/containers.conf):"
  echo
  echo '```'
  echo "# pull      (each run after rm -rf of the rimg root / podman rmi -af)"
  echo "rimg pull -q REF;  podman pull -q --tls-verify=false REF"
  echo "# mount     (until the top layer's file can be stat'ed; unmounted between runs)"
  echo "rimg mount --read-only REF $mnt && stat -c %s $mnt/top"
  echo "m=\$(podman image mount REF) && stat -c %s \$m/top"
  printf '%s\n' "${commands[@]}"
  echo "# run"
  echo "rimg run --rm REF true;  rimg run --rm --storage-driver overlay REF true"
  echo "podman run --rm --network none REF true"
  echo "# find      (over the mounts above; cold: $drop before each run)"
  echo "find MOUNT | wc -l"
  echo '```'
} >"$results"
log "results in $results"
cat "$results"
