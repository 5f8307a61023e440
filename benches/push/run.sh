#!/usr/bin/env bash
# Cross-repository push benchmark (issue 20, item 9). An image of one ~500 MB layer (random bytes, so gzip
# keeps it ~500 MB) is built locally (FROM scratch + COPY: no repository is named after it) and pushed to
# repository a/ of a loopback registry; then the same image is pushed again under other names:
#   rimg         rimg tag big:1 REG/bN/big:1 && rimg push REG/bN/big:1   (mounts every blob from a/)
#   rimg-old     the same with RIMG_OLD, a binary without distribution sources (uploads every byte)
#   skopeo       skopeo copy docker://REG/a/big:1 docker://REG/cN/big:1  (skopeo mounts too)
# Every timed push goes to a fresh repository (N = 1..runs), so each run does the same work. Writes
# benches/push/RESULTS.md with the exact commands, each run's seconds and the medians.
#
# Usage: benches/push/run.sh [--runs N] [--size-mb N] [--port P]
#   RIMG=path (default target/release/rimg, built if missing), RIMG_OLD=path (optional: old binary)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))
cd "$repo"

runs=5
size_mb=500
port=5057
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift ;;
    --size-mb) size_mb=$2; shift ;;
    --port) port=$2; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

rimg=${RIMG:-target/release/rimg}
old=${RIMG_OLD:-}
[[ -x $rimg ]] || cargo build --release
for tool in skopeo docker-registry; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool missing: run setup.sh" >&2; exit 1; }
done

work=$repo/.work/bench/push
reg=127.0.0.1:$port
results=$here/RESULTS.md
log() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
rm -rf "$work"
mkdir -p "$work/ctx"
bash scripts/registry.sh start --port "$port" --dir "$work/registry" >&2
trap 'bash scripts/registry.sh stop --port "$port" --dir "$work/registry" >/dev/null; rm -rf "$work/root" "$work/registry/data"' EXIT

log "building a ${size_mb} MB image"
head -c "$((size_mb * 1000 * 1000))" /dev/urandom >"$work/ctx/big.bin"
printf 'FROM scratch\nCOPY big.bin /big.bin\n' >"$work/ctx/Dockerfile"
root=$work/root
"$rimg" --root "$root" build -q -t big:1 "$work/ctx" >/dev/null
rm -f "$work/ctx/big.bin"

# seconds of one command, to stdout
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  printf '%.3f' "$(echo "$t1 - $t0" | bc)"
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

sync
log "first push (every byte goes up)"
first=$(seconds "$rimg" --root "$root" push -q big:1 "$reg/a/big:1")
declare -A times=()
for ((i = 1; i <= runs; i++)); do
  "$rimg" --root "$root" tag big:1 "$reg/b$i/big:1"
  times[rimg]+="$(seconds "$rimg" --root "$root" push -q "$reg/b$i/big:1") "
  times[skopeo]+="$(seconds skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
    "docker://$reg/a/big:1" "docker://$reg/c$i/big:1") "
  if [[ -n $old ]]; then
    "$rimg" --root "$root" tag big:1 "$reg/d$i/big:1"
    times[rimg-old]+="$(seconds "$old" --root "$root" push -q "$reg/d$i/big:1") "
  fi
  log "run $i: rimg/skopeo/old: ${times[rimg]} / ${times[skopeo]} / ${times[rimg-old]:-}"
done

{
  echo "# Cross-repository push (issue 20, item 9)"
  echo
  echo "\`benches/push/run.sh --runs $runs --size-mb $size_mb\` on $(date -u '+%Y-%m-%d %H:%M UTC'), rimg $(git rev-parse --short HEAD)."
  echo "Image: one layer of ${size_mb} MB of random bytes (\`FROM scratch\` + \`COPY\`), registry: docker-registry on $reg."
  echo
  echo "| command | runs [s] | median [s] |"
  echo "|---|---|---:|"
  echo "| first push, \`rimg push big:1 REG/a/big:1\` (uploads every byte) | $first | $first |"
  for k in rimg rimg-old skopeo; do
    [[ -n ${times[$k]:-} ]] || continue
    case $k in
      rimg) what='`rimg tag big:1 REG/bN/big:1; rimg push REG/bN/big:1`' ;;
      rimg-old) what="the same with \`$old\` (before distribution sources)" ;;
      skopeo) what='`skopeo copy docker://REG/a/big:1 docker://REG/cN/big:1`' ;;
    esac
    echo "| $what | ${times[$k]% } | $(tr ' ' '\n' <<<"${times[$k]}" | grep . | median) |"
  done
} >"$results"
cat "$results"
