#!/usr/bin/env bash
# Two rimg binaries side by side on the Dockerfile.examples (issue 13's builder rework: the typed image
# config and the split builder must neither change what is built nor cost time):
#   same image   a SOURCE_DATE_EPOCH no-cache build gives the same image ID and manifest digest with both,
#                and both leave the same build-cache keys
#   no-cache     rimg build --no-cache (bases pulled beforehand), median wall time and mean user+sys CPU
#   cached       a rebuild that is all cache hits
# Each binary has its own store; hyperfine interleaves nothing, so run it on a quiet machine or read the
# CPU columns.
#
# Usage: OLD=path/to/rimg-before [NEW=path/to/rimg] benches/build/ab.sh [--runs N] [--port P]
#   NEW defaults to cargo build --release's target/release/rimg. Needs the fixture images
#   (RIMG_FIXTURES_DIR, default .work/fixtures), hyperfine, python3 and docker-registry.
#   Prints a markdown table.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))
cd "$repo"

runs=15
port=5078
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift ;;
    --port) port=$2; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "ab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
: "${OLD:?OLD=path to the rimg binary to compare against}"
for tool in hyperfine python3 docker-registry; do
  command -v "$tool" >/dev/null || { echo "ab.sh: $tool missing" >&2; exit 1; }
done
if [[ -z ${NEW:-} ]]; then
  cargo build --release --quiet
  NEW=$repo/target/release/rimg
fi
work=$repo/.work/bench/build-ab
rm -rf "$work"; mkdir -p "$work"
bash scripts/registry.sh start --port "$port" --dir "$work/registry" >/dev/null
trap 'bash scripts/registry.sh stop --port "$port" --dir "$work/registry" >/dev/null 2>&1 || true' EXIT
bash scripts/push-fixtures.sh "127.0.0.1:$port" >/dev/null
mirror=http://127.0.0.1:$port

for v in old new; do
  bin=$OLD; [[ $v == new ]] && bin=$NEW
  for base in busybox:latest alpine:3.20.3 debian:bookworm; do
    "$bin" --root "$work/$v" --registry-mirror "$mirror" pull -q "$base" >/dev/null
    "$bin" --root "$work/repro-$v" --registry-mirror "$mirror" pull -q "$base" >/dev/null
  done
done

for dir in Dockerfile.examples/*/; do
  ex=$(basename "$dir")
  for v in old new; do
    bin=$OLD; [[ $v == new ]] && bin=$NEW
    SOURCE_DATE_EPOCH=1700000000 "$bin" --root "$work/repro-$v" build -q --no-cache -t "ab/$ex" "$dir" >/dev/null
    echo "$("$bin" --root "$work/repro-$v" inspect --format '{{.Id}}' "ab/$ex") $("$bin" --root "$work/repro-$v" \
      inspect --format '{{.Descriptor.digest}}' "ab/$ex")" > "$work/$ex.$v.id"
  done
  hyperfine -N --runs "$runs" --warmup 2 --export-json "$work/$ex-nocache.json" \
    -n old "$OLD --root $work/old build -q --no-cache -t ab/$ex $dir" \
    -n new "$NEW --root $work/new build -q --no-cache -t ab/$ex $dir" >/dev/null 2>&1
  hyperfine -N --runs "$runs" --warmup 2 --export-json "$work/$ex-cached.json" \
    -n old "$OLD --root $work/old build -q -t ab/$ex $dir" \
    -n new "$NEW --root $work/new build -q -t ab/$ex $dir" >/dev/null 2>&1
done
if diff <(ls "$work/repro-old/build-cache" | sort) <(ls "$work/repro-new/build-cache" | sort) >/dev/null; then
  echo "build-cache keys: the same ($(ls "$work/repro-new/build-cache" | wc -l) keys)"
else
  echo "build-cache keys: DIFFERENT"
fi
echo
python3 - "$work" <<'PY'
import glob, json, os, sys
work = sys.argv[1]
print("| example | same image | no-cache wall old → new [ms] | no-cache CPU old → new [ms] "
      "| cached wall old → new [ms] | cached CPU old → new [ms] |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for f in sorted(glob.glob(f"{work}/*-nocache.json")):
    ex = os.path.basename(f)[: -len("-nocache.json")]
    same = open(f"{work}/{ex}.old.id").read() == open(f"{work}/{ex}.new.id").read()
    nc = json.load(open(f))["results"]
    c = json.load(open(f"{work}/{ex}-cached.json"))["results"]
    wall = lambda r: r["median"] * 1000
    cpu = lambda r: (r["user"] + r["system"]) * 1000
    print(f"| {ex} | {'yes' if same else 'NO'} | {wall(nc[0]):.0f} → {wall(nc[1]):.0f} "
          f"| {cpu(nc[0]):.0f} → {cpu(nc[1]):.0f} | {wall(c[0]):.1f} → {wall(c[1]):.1f} "
          f"| {cpu(c[0]):.1f} → {cpu(c[1]):.1f} |")
PY
