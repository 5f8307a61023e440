#!/usr/bin/env bash
# Builds rimg's fixture images as OCI image layouts (one layout directory per image name) from real sources:
#   busybox  latest, multiarch  Debian's busybox-static binary + applet symlinks + minimal /etc
#   alpine   3.20.3, latest     the official Alpine 3.20.3 minirootfs (image-fixtures/alpine/), upstream config
#            3.20.3-zstd        the same with a zstd-compressed layer
#   debian   bookworm           debootstrap minbase + procps/iproute2, plus an "adds" layer and a
#                               "whiteouts + opaque dir" layer
#   centos   latest             the same Debian image with a label saying it is a stand-in (no Docker Hub here)
#   edge     latest             the 3 layer tars image-fixtures/edge-layers.py writes (if present)
#   hostile  one tag per case   hostile-layers.py's cases (refuse-*, allow-*), one single-layer image each
#   large    latest             (only with --with-large) ~1 GiB single layer for the pull benchmark
#
# Usage: image-fixtures/build.sh [--with-large] [--force] [--only NAME,...] [OUTDIR]
#        (default OUTDIR: REPO/.work/fixtures; --only builds just those images, e.g. --only alpine,busybox)
#
# Idempotent and cached: each image is rebuilt only when its inputs (sources, this script, fixtures.py)
# changed; the debootstrap tree is cached as a tar under OUTDIR/cache and never rebuilt unless deleted.
# Layer tars are written reproducibly (fixed mtimes, gzip without timestamps), so a rebuild yields the same
# digests. Needs root (debootstrap, file owners), python3, debootstrap, busybox-static (see setup.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))
py=${PYTHON:-python3}
fx="$here/fixtures.py"

with_large=0
force=0
only=""
out=""
while (($#)); do
  case "$1" in
    --with-large) with_large=1 ;;
    --force) force=1 ;;
    --only) only=$2; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1 ;;
  esac
  shift
done
out=${out:-$repo/.work/fixtures}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=$out/cache
src=$cache/layer-src
mkdir -p "$cache" "$src" "$out/.stamps"

log() { printf '%s fixtures: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# One build at a time per OUTDIR (tests, the demo and a developer may all call this).
exec 9>"$out/.lock"
if ! flock -n 9; then
  log "waiting for another build.sh on $out"
  flock 9
fi

# Hash of everything an image is built from; the image is skipped when its stamp holds the same hash.
inputs_hash() {
  {
    sha256sum "$fx" "${BASH_SOURCE[0]}"
    for x in "$@"; do
      if [[ -f $x ]]; then sha256sum "$x"; else printf '%s\n' "$x"; fi
    done
  } | sha256sum | cut -d' ' -f1
}
fresh() { # NAME HASH -> true when the layout exists and was built from these inputs
  ((force == 0)) && [[ -f $out/$1/index.json && -f $out/.stamps/$1 && $(cat "$out/.stamps/$1") == "$2" ]]
}
stamp() { printf '%s\n' "$2" >"$out/.stamps/$1"; }

# Writes SPEC JSON for fixtures.py layout from: LAYOUT_NAME then a jq program over $cache/$lc.
layout() { # NAME JQ_PROGRAM [jq args...]
  local name=$1 prog=$2
  shift 2
  jq -n --arg layout "$out/$name" --arg lc "$cache/layers" "$@" "$prog" >"$cache/$name.spec.json"
  "$py" "$fx" layout "$cache/$name.spec.json" >&2
}

t_all=$SECONDS
want() { # NAME... -> true when any of them is to be built (all, without --only)
  [[ -z $only ]] && return 0
  local n
  for n in "$@"; do [[ ",$only," == *",$n,"* ]] && return 0; done
  return 1
}

# ------------------------------------------------------------------------------------------------ busybox
if want busybox; then
busybox_bin=$(dpkg -L busybox-static 2>/dev/null | grep -m1 '/bin/busybox$' || true)
busybox_bin=${busybox_bin:-/bin/busybox}
[[ -x $busybox_bin ]] || { echo "build.sh: $busybox_bin missing: run setup.sh (busybox-static)" >&2; exit 1; }
h=$(inputs_hash "$busybox_bin")
if fresh busybox "$h"; then
  log "busybox up to date"
else
  t=$SECONDS
  "$py" "$fx" busybox-layer --busybox "$busybox_bin" "$src/busybox.tar"
  # "multiarch": an OCI index like Docker Hub serves, for platform selection. The arm64 entry reuses the
  # amd64 layer and says so in a label (there is no arm64 busybox here); the unknown/unknown entry mimics a
  # BuildKit attestation manifest that clients must skip.
  layout busybox '
    def cfg(extra): {Cmd: ["sh"], Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                     Labels: ({"org.opencontainers.image.description":
                               "BusyBox from Debian busybox-static (/bin/busybox + applet symlinks), rimg fixture"} + extra)};
    def layer: [{tar: $tar, created_by: "COPY busybox-static /bin/busybox + applet symlinks + /etc/{passwd,group} # rimg fixture"}];
    {layout: $layout, layer_cache: $lc, images: [
      {tags: ["latest"], config: cfg({}), layers: layer},
      {tags: ["multiarch"], index: [
        {config: cfg({}), layers: layer},
        {architecture: "arm64", variant: "v8",
         config: cfg({"io.rimg.fixture.fake-platform": "amd64 binaries labelled linux/arm64/v8 to test platform selection"}),
         layers: layer},
        {architecture: "unknown", os: "unknown", config: cfg({"io.rimg.fixture.attestation": "stand-in for an attestation manifest"}),
         layers: layer, attestation: true}
      ]}
    ]}' --arg tar "$src/busybox.tar"
  stamp busybox "$h"
  log "busybox built in $((SECONDS - t))s"
fi

fi

# ------------------------------------------------------------------------------------------------ alpine
if want alpine; then
alpine_tgz=$here/alpine/alpine-minirootfs-3.20.3-x86_64.tar.gz
# The tarball is committed with its upstream checksum: a damaged or replaced copy must not become a fixture.
if ! (cd "$here/alpine" && sha256sum --quiet -c SHA256SUMS); then
  log "alpine: $alpine_tgz does not match image-fixtures/alpine/SHA256SUMS"
  exit 1
else
  h=$(inputs_hash "$alpine_tgz")
  if fresh alpine "$h"; then
    log "alpine up to date"
  else
    t=$SECONDS
    # Upstream: FROM scratch / ADD alpine-minirootfs-3.20.3-x86_64.tar.gz / / CMD ["/bin/sh"]: a single
    # layer holding exactly the minirootfs entries; the layer tar here is the tarball, decompressed.
    gzip -dc "$alpine_tgz" >"$src/alpine-3.20.3.tar"
    layout alpine '{layout: $layout, layer_cache: $lc, images: [
      {tags: ["3.20.3", "latest"],
       config: {Cmd: ["/bin/sh"], Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
       layers: [{tar: $tar, created_by: "ADD alpine-minirootfs-3.20.3-x86_64.tar.gz / # buildkit"}]},
      {tags: ["3.20.3-zstd"],
       config: {Cmd: ["/bin/sh"], Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
       layers: [{tar: $tar, compression: "zstd",
                 created_by: "ADD alpine-minirootfs-3.20.3-x86_64.tar.gz / # buildkit, zstd-compressed"}]}]}' \
      --arg tar "$src/alpine-3.20.3.tar"
    stamp alpine "$h"
    log "alpine built in $((SECONDS - t))s"
  fi
fi

fi

# ------------------------------------------------------------------------------------------------ debian
# (the large image is made from the debootstrap tree too)
if want debian large; then
base=$cache/debootstrap-bookworm-minbase.tar
if [[ ! -f $base ]]; then
  t=$SECONDS
  mirror=${DEBIAN_MIRROR:-$("$py" "$fx" mirror --suite bookworm)}
  tree=$cache/debootstrap.tmp
  unmount_below() { # debootstrap mounts /proc and /sys inside the target; never rm -rf through a mount
    local m
    for m in $(awk -v d="$1" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
      umount -l "$m" || true
    done
  }
  ok=0
  for attempt in 1 2 3; do # the mirror is remote: retry a transient failure
    unmount_below "$tree"
    rm -rf --one-file-system "$tree"
    log "debootstrap --variant=minbase --include=procps,iproute2 bookworm (mirror from apt sources, try $attempt)"
    if debootstrap --variant=minbase --include=procps,iproute2 bookworm "$tree" "$mirror" >"$cache/debootstrap.log" 2>&1; then
      ok=1
      break
    fi
    tail -5 "$cache/debootstrap.log" >&2
    sleep $((attempt * 5))
  done
  unmount_below "$tree"
  if ((ok == 0)); then
    tail -20 "$cache/debootstrap.log" >&2
    echo "build.sh: debootstrap failed 3 times (full log: $cache/debootstrap.log)" >&2
    exit 1
  fi
  # Like the official image: no device nodes, empty /proc /sys, no apt lists or package cache.
  (cd "$tree" && tar --sort=name --numeric-owner --xattrs --xattrs-include='*' --format=pax \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --anchored --exclude='dev/*' --exclude='proc/*' --exclude='sys/*' --exclude='run/*' \
    --exclude='var/cache/apt/*.bin' --exclude='var/cache/apt/archives/*.deb' \
    --exclude='var/lib/apt/lists/*' --exclude='debootstrap' \
    -cf "$base.tmp" $(ls -A))
  mv "$base.tmp" "$base"
  rm -rf --one-file-system "$tree"
  log "debootstrap + base tar in $((SECONDS - t))s"
fi

h=$(inputs_hash "$base")
if fresh debian "$h" && fresh centos "$h"; then
  log "debian, centos up to date"
else
  t=$SECONDS
  "$py" "$fx" debian-layers "$base" "$src/debian-add.tar" "$src/debian-delete.tar" >"$cache/debian-layers.json"
  deleted=$(jq -r '.deleted_docs | join(", ")' "$cache/debian-layers.json")
  desc="Debian bookworm: debootstrap --variant=minbase --include=procps,iproute2 base layer; layer 2 adds /opt/app and /etc/app.conf and replaces /etc/motd; layer 3 deletes /usr/share/doc/{$deleted}, /etc/issue.net and /opt/app/old (whiteouts) and replaces /opt/app/conf (opaque dir). rimg test fixture built by image-fixtures/build.sh."
  image='{tags: [$tag],
       config: {Cmd: ["bash"], Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                Labels: ({"org.opencontainers.image.description": $desc,
                          "org.opencontainers.image.version": "bookworm"} + $extra)},
       layers: [
         {tar: $base, created_by: "debootstrap --variant=minbase --include=procps,iproute2 bookworm"},
         {tar: $add, created_by: "COPY app/ /opt/app/ + /etc/app.conf + /etc/motd # rimg fixture layer 2"},
         {tar: $del, created_by: "RUN rm -rf /usr/share/doc/... /etc/issue.net /opt/app/old; replace /opt/app/conf # rimg fixture layer 3"}
       ]}'
  common=(--arg base "$base" --arg add "$src/debian-add.tar" --arg del "$src/debian-delete.tar" --arg desc "$desc")
  layout debian "{layout: \$layout, layer_cache: \$lc, images: [$image]}" "${common[@]}" \
    --arg tag bookworm --argjson extra '{}'
  layout centos "{layout: \$layout, layer_cache: \$lc, images: [$image]}" "${common[@]}" \
    --arg tag latest --argjson extra \
    '{"io.rimg.fixture.stand-in": "Debian bookworm (debootstrap minbase + procps), NOT CentOS: Docker Hub is unreachable here"}'
  stamp debian "$h"
  stamp centos "$h"
  log "debian + centos built in $((SECONDS - t))s"
fi

fi

# ------------------------------------------------------------------------------------------------ edge, hostile
if want edge hostile; then
# The layer engineer's scripts write layer tars into a directory:
#   edge-layers.py OUTDIR            -> layer1.tar layer2.tar layer3.tar (stacked bottom-up)
#   hostile-layers.py OUTDIR OUTSIDE -> refuse-*.tar / allow-*.tar, one case each, aimed at OUTSIDE
# edge becomes one 3-layer image (tag latest); hostile becomes one single-layer image per case, tagged with
# the case name (refuse-dotdot, allow-dangling, ...), all aimed at $hostile_outside.
hostile_outside=${RIMG_HOSTILE_OUTSIDE:-/tmp/rimg-hostile-outside}
edge_hostile() { # KIND
  local kind=$1 script=$here/$1-layers.py h t
  if [[ ! -f $script ]]; then
    log "SKIP $kind: $script does not exist (yet)"
    return 0
  fi
  h=$(inputs_hash "$script" "$hostile_outside")
  if fresh "$kind" "$h"; then
    log "$kind up to date"
    return 0
  fi
  t=$SECONDS
  rm -rf "$src/$kind" && mkdir -p "$src/$kind"
  if [[ $kind == edge ]]; then
    "$py" "$script" "$src/$kind"
    local tars
    tars=$(find "$src/$kind" -maxdepth 1 -name 'layer*.tar' | sort -V | jq -R -s 'split("\n") | map(select(length > 0))')
    [[ $(jq length <<<"$tars") -gt 0 ]] || { echo "build.sh: $script wrote no layer*.tar" >&2; exit 1; }
    layout edge '{layout: $layout, layer_cache: $lc, images: [
        {tags: ["latest"], config: {Cmd: ["/bin/sh"], Labels: {"org.opencontainers.image.description":
          "rimg edge-case layers from image-fixtures/edge-layers.py (whiteouts, opaque dirs, replacements, hardlinks, xattrs, devices, long names)"}},
         layers: ($tars | to_entries | map({tar: .value, created_by: "edge-layers.py layer \(.key + 1)"}))}]}' \
      --argjson tars "$tars"
  else
    "$py" "$script" "$src/$kind" "$hostile_outside"
    local tars
    tars=$(find "$src/$kind" -maxdepth 1 -name '*.tar' | sort | jq -R -s 'split("\n") | map(select(length > 0))')
    [[ $(jq length <<<"$tars") -gt 0 ]] || { echo "build.sh: $script wrote no *.tar" >&2; exit 1; }
    layout hostile '{layout: $layout, layer_cache: $lc, images: ($tars | map(
        (. | split("/") | last | rtrimstr(".tar")) as $case |
        {tags: [$case], config: {Cmd: ["/bin/sh"], Labels: {
           "org.opencontainers.image.description": "rimg hostile layer case \($case) from image-fixtures/hostile-layers.py",
           "io.rimg.fixture.hostile-outside": $outside}},
         layers: [{tar: ., created_by: "hostile-layers.py \($case)"}]}))}' \
      --argjson tars "$tars" --arg outside "$hostile_outside"
  fi
  stamp "$kind" "$h"
  log "$kind built in $((SECONDS - t))s"
}
edge_hostile edge
edge_hostile hostile

fi

# ------------------------------------------------------------------------------------------------ large
if want large; then
if ((with_large)); then
  h=$(inputs_hash "$base" large-1024)
  if fresh large "$h"; then
    log "large up to date"
  else
    t=$SECONDS
    "$py" "$fx" large-layer --mib 1024 "$base" "$src/large.tar" >"$cache/large-layer.json"
    layout large '{layout: $layout, layer_cache: $lc, images: [
        {tags: ["latest"], config: {Cmd: ["/bin/sh"], Labels: {"org.opencontainers.image.description":
          "~1 GiB single layer: copies of Debian /usr plus pseudo-random files; rimg pull benchmark fixture"}},
         layers: [{tar: $tar, created_by: "COPY data/ /data/ # rimg benchmark fixture"}]}]}' --arg tar "$src/large.tar"
    rm -f "$src/large.tar" # the compressed blob is cached in cache/layers; the 1 GiB tar is not needed
    stamp large "$h"
    log "large built in $((SECONDS - t))s"
  fi
fi

fi

log "all fixtures ready under $out in $((SECONDS - t_all))s"
for d in "$out"/*/index.json; do
  name=$(basename "$(dirname "$d")")
  printf '  %-8s %s  tags: %s\n' "$name" "$out/$name" "$(jq -r '[.manifests[].annotations["org.opencontainers.image.ref.name"]] | join(", ")' "$d")"
done
