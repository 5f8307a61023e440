#!/usr/bin/env bash
# The one-command demo (README): installs the system packages, builds rimg, builds the fixture images,
# starts a loopback registry holding them under Docker Hub names, then pulls and runs "centos:latest"
# through it as a docker.io mirror.
#
# Docker Hub is unreachable on the machines this is developed on, so library/centos:latest in the local
# registry is a Debian bookworm image (debootstrap minbase + procps) with a label saying so.
#
# Usage: scripts/demo.sh            (as root; uses rimg's default --root unless RIMG_ROOT is set)
# Stop the registry afterwards with: scripts/registry.sh stop
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
mirror=http://127.0.0.1:5000

step() {
  printf '\n\033[1m$ %s\033[0m\n' "$*"
  local t=$SECONDS
  "$@"
  printf '  (%ss)\n' "$((SECONDS - t))"
}

step bash setup.sh
step cargo build --release
step bash image-fixtures/build.sh
step bash scripts/registry.sh start
step bash scripts/push-fixtures.sh
# The FUSE overlay also answers to rimg-overlayfs (mount -t fuse.rimg-overlayfs, podman's mount_program).
ln -sf rimg "$repo/target/release/rimg-overlayfs"
export PATH=$repo/target/release:$PATH
step rimg --registry-mirror "$mirror" pull centos:latest
step rimg --registry-mirror "$mirror" run --rm centos:latest ps -ef
