#!/usr/bin/env bash
# Installs the Debian packages qsfs needs to build, run and test on a fresh
# Debian 12 machine (as root). Idempotent: does nothing when all are present.
set -euo pipefail
pkgs=(docker.io iptables fuse3 bats redis-tools busybox-static fio podman runc
      docker-compose prometheus iproute2 procps psmisc util-linux kmod curl jq)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "go toolchain not found in PATH (expected /usr/local/go/bin)" >&2; exit 1; }
