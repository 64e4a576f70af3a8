#!/usr/bin/env bash
# Assembles the managed plugin's directory: <out>/config.json and
# <out>/rootfs/ with the static qsfs binary, iptables (xtables-nft-multi, its
# libraries and the dlopen'ed xtables extensions), ip, fusermount3 and the
# libraries they load. Offline: everything is copied from this host.
#
#   scripts/build-rootfs.sh [bin/qsfs] [plugin-build]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-bin/qsfs}
out=${2:-plugin-build}
root=$out/rootfs
[ -x "$bin" ] || { echo "build-rootfs: $bin not found: run make build" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$root"/{usr/sbin,usr/bin,lib,lib64,usr/lib/x86_64-linux-gnu,run/docker/plugins,run/netns,mnt/volumes,var/lib/qsfs,etc/qsfs/secrets,tmp,proc,sys,dev}
ln -s /run "$root/var/run"
install -m 0755 "$bin" "$root/qsfs"

# copy_with_libs FILE...: copies each file to the same path in rootfs, with
# the shared libraries ldd lists.
copy_with_libs() {
  local f lib
  for f in "$@"; do
    [ -e "$f" ] || continue
    mkdir -p "$root$(dirname "$f")"
    cp -aL "$f" "$root$f"
    for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -aL "$lib" "$root$lib"
    done
  done
}

xt=$(readlink -f /usr/sbin/xtables-nft-multi)
copy_with_libs "$xt" /usr/sbin/ip /usr/bin/ip /usr/bin/fusermount3
for l in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf xtables-nft-multi "$root/usr/sbin/$l"
done
# The extensions are dlopen'ed: ldd of the binary does not show them.
xtdir=/usr/lib/x86_64-linux-gnu/xtables
mkdir -p "$root$xtdir"
cp -a "$xtdir"/. "$root$xtdir"/
copy_with_libs "$xtdir"/*.so
[ -e "$root/usr/bin/fusermount3" ] && ln -sf fusermount3 "$root/usr/bin/fusermount"
# Official-program names dispatch to the same binary.
for p in zdb zdbfs zstor hook; do ln -sf /qsfs "$root/usr/bin/$p"; done
# A file that differs per build: dockerd refuses a byte-identical rootfs.
echo "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ) $$ $RANDOM" > "$root/.build"
cp config.json "$out/config.json"
echo "build-rootfs: $out ($(du -sh "$root" | cut -f1))"
