#!/usr/bin/env bash
# Installs every system package rimg's build, demo, tests and benchmarks need. Idempotent: run it as often as
# you like; it only installs what is missing.
set -euo pipefail

pkgs=(
  # registry + image tooling used as real peers and independent oracles
  docker-registry skopeo umoci runc fuse-overlayfs buildah podman
  # filesystem + runtime
  fuse3 attr iproute2 procps util-linux kmod
  # fixture sources
  busybox-static debootstrap
  # tests and benchmarks
  curl jq hyperfine apache2-utils python3 gcc pkg-config time openssl zstd xz-utils bzip2 liblzma-dev strace
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package enables and starts a registry service on :5000 with htpasswd auth; rimg never uses it
# (each user of a registry starts its own with its own config), so keep it out of the way.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true
echo "setup: all packages present"
