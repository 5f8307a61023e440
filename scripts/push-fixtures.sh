#!/usr/bin/env bash
# Pushes the fixture OCI layouts (image-fixtures/build.sh) into a registry with skopeo, named as on Docker
# Hub, so the registry can serve as a docker.io mirror (`rimg --registry-mirror http://127.0.0.1:5000 ...`).
#
# Usage: scripts/push-fixtures.sh [--fixtures DIR] [REGISTRY]          push everything (default 127.0.0.1:5000)
#        scripts/push-fixtures.sh [--fixtures DIR] [--creds USER:PASS] --one NAME[:TAG] REPO:TAG [REGISTRY]
#                                                                      push one layout image under any name
#
# What goes where (layout NAME:TAG -> REGISTRY/REPO:TAG, manifest format in the registry):
#   busybox:latest    -> library/busybox:latest        OCI manifest
#   busybox:multiarch -> library/busybox:multiarch     OCI index (amd64, arm64/v8 stand-in, attestation)
#   alpine:3.20.3     -> library/alpine:3.20.3, latest Docker schema2 (converted by skopeo --format v2s2)
#   alpine:3.20.3-zstd -> library/alpine:3.20.3-zstd  OCI manifest, zstd layer
#   debian:bookworm   -> library/debian:bookworm       OCI manifest, 3 layers
#   centos:latest     -> library/centos:latest         the Debian image + stand-in label (NOT CentOS)
#   edge:latest       -> rimg/edge:latest              (when built)
#   hostile:CASE      -> rimg/hostile:CASE             (when built; one tag per case: refuse-dotdot, allow-...)
#   large:latest      -> rimg/large:latest             (when built with --with-large)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))
fixtures=${RIMG_FIXTURES_DIR:-$repo/.work/fixtures}

one_src=""
one_dst=""
registry=""
creds=()
while (($#)); do
  case "$1" in
    --fixtures) fixtures=$2; shift ;;
    --one) one_src=$2; one_dst=$3; shift 2 ;;
    --creds) creds=(--dest-creds "$2"); shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "push-fixtures.sh: unknown option $1" >&2; exit 2 ;;
    *) registry=$1 ;;
  esac
  shift
done
registry=${registry:-127.0.0.1:5000}
registry=${registry#http://}
registry=${registry%/}

default_tag() {
  case "$1" in
    alpine) echo 3.20.3 ;;
    debian) echo bookworm ;;
    *) echo latest ;;
  esac
}

# skopeo flags that depend on what is pushed (see the table above)
flags_for() {
  case "$1" in
    busybox:multiarch) echo --all ;;
    alpine:*-zstd) ;; # Docker schema2 has no zstd layer type: stays OCI
    alpine:*) echo --format v2s2 ;;
  esac
}

push() { # NAME:TAG REPO:TAG
  local src=$1 dst=$2 name=${1%%:*} layout
  layout=$fixtures/$name
  if [[ ! -f $layout/index.json ]]; then
    echo "push-fixtures.sh: no fixture layout at $layout: run image-fixtures/build.sh first" >&2
    return 1
  fi
  # shellcheck disable=SC2046
  skopeo --insecure-policy copy -q --dest-tls-verify=false "${creds[@]}" $(flags_for "$src") \
    "oci:$layout:${src#*:}" "docker://$registry/$dst" >&2
  echo "pushed $src -> $registry/$dst"
}

code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$registry/v2/" || true)
case "$code" in
  200) ;;
  401)
    if ((${#creds[@]} == 0)); then
      echo "push-fixtures.sh: $registry requires authentication: not the registry from scripts/registry.sh" \
        "(Debian's packaged service?); pass --creds USER:PASS if that is intended" >&2
      exit 1
    fi
    ;;
  000) echo "push-fixtures.sh: no registry answers at http://$registry/v2/: run scripts/registry.sh start" >&2; exit 1 ;;
  *) echo "push-fixtures.sh: http://$registry/v2/ answered HTTP $code" >&2; exit 1 ;;
esac

if [[ -n $one_src ]]; then
  [[ $one_src == *:* ]] || one_src=$one_src:$(default_tag "$one_src")
  push "$one_src" "$one_dst"
  exit 0
fi

t=$SECONDS
push busybox:latest library/busybox:latest
push busybox:multiarch library/busybox:multiarch
push alpine:3.20.3 library/alpine:3.20.3
push alpine:3.20.3 library/alpine:latest
push alpine:3.20.3-zstd library/alpine:3.20.3-zstd
push debian:bookworm library/debian:bookworm
push centos:latest library/centos:latest
for name in edge hostile large; do
  if [[ -f $fixtures/$name/index.json ]]; then
    for tag in $(jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"]' "$fixtures/$name/index.json"); do
      push "$name:$tag" "rimg/$name:$tag"
    done
  else
    echo "skipped $name (no layout at $fixtures/$name)"
  fi
done
echo "all fixtures pushed to $registry in $((SECONDS - t))s"
