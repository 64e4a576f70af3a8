#!/usr/bin/env bash
# `make demo`: the embedded default end to end on this host, as root.
#  1. two local 0-db backends as `qsfs zdb` processes (4 metadata and 4 data
#     namespaces),
#  2. a private dockerd (own data/exec roots, no bridge, no iptables), so the
#     host's Docker is left alone,
#  3. the managed plugin built from bin/qsfs, with plugin-wide defaults that
#     point at the backends and an encryption key from its secrets directory,
#  4. `docker volume create -d qsfs demo` (no options: the defaults apply),
#  5. a container that writes, a second one that reads, the volume's status,
#     and the plugin's metrics.
# Everything is removed at the end; KEEP=1 leaves it running (the script then
# prints how to use and stop it).
set -euo pipefail
QW=${QSFS_DEMO_DIR:-/tmp/qsfs-demo}
source "$(dirname "$0")/lib.sh"
PORT=${QSFS_DEMO_PORT:-29900}
METRICS=127.0.0.1:$((PORT + 90))

cleanup() {
  set +e
  echo "--- cleaning up"
  D volume rm -f demo >/dev/null 2>&1
  D plugin disable -f qsfs >/dev/null 2>&1
  qsfs_dockerd_stop
  qsfs_backends_stop
  qsfs_unmount_under "$QW"
  qsfs_teardown_netns_of "$QW/state"
  rm -rf "$QW"
}

[ "$(id -u)" = 0 ] || { echo "make demo needs root" >&2; exit 1; }
if [ -e "$QW/docker.pid" ]; then cleanup; fi
mkdir -p "$QW"
[ "${KEEP:-0}" = 1 ] || trap cleanup EXIT

step() { echo; echo "=== $*"; }

step "local backends: qsfs zdb in their own network namespace, ports $PORT (metadata) and $((PORT + 1)) (data)"
qsfs_backends_start "$PORT"
echo "groups: $QSFS_GROUPS"
echo "meta:   $QSFS_META"

step "private dockerd ($QW)"
qsfs_dockerd_start "qsfs-demo"
qsfs_busybox_image

step "managed plugin qsfs (defaults: the backends above, 2+2 shards, key from the secrets directory)"
mkdir -p "$QW/secrets"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$QW/secrets/demo.key"
chmod 600 "$QW/secrets/demo.key"
qsfs_plugin_install qsfs \
  QSFS_OPT_GROUPS="$QSFS_GROUPS" QSFS_OPT_META="$QSFS_META" \
  QSFS_OPT_MINIMAL_SHARDS=2 QSFS_OPT_EXPECTED_SHARDS=4 QSFS_OPT_KEY_FILE=demo.key \
  QSFS_OPT_ROTATE=10s QSFS_METRICS_ADDR="$METRICS"
D plugin ls

step "docker volume create -d qsfs demo"
D volume create -d qsfs demo

step "a container writes"
D run --rm -v demo:/data busybox:local sh -c \
  'echo "hello from qsfs" > /data/hello && dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null && md5sum /data/blob > /data/blob.md5 && ls -l /data'

step "another container reads"
D run --rm -v demo:/data busybox:local sh -c 'cat /data/hello && md5sum -c /data/blob.md5'

step "docker volume inspect demo"
D volume inspect demo

step "a long-running container; qsfs volume status while it is mounted"
D run -d --name demo-reader -v demo:/data busybox:local sleep 600 >/dev/null
sleep 12 # one zdb rotation: the data files are uploaded to the backends
SOCK=/run/docker/plugins/$(qsfs_plugin_id qsfs)/qsfs.sock
"$QSFS_BIN" volume status demo --socket "$SOCK"

step "metrics (http://$METRICS/metrics)"
curl -s "http://$METRICS/metrics" | grep -E '^qsfs_volume_(state|mounts|network_transmit_bytes_total|local_bytes)|^qsfs_zstor_zstore_store_commands_finished' || true
D rm -f demo-reader >/dev/null

if [ "${KEEP:-0}" = 1 ]; then
  echo
  echo "KEEP=1: left running. Use:  /usr/bin/docker -H unix://$QW/docker.sock ..."
  echo "Stop with:  QSFS_DEMO_DIR=$QW scripts/demo.sh  (restarts and cleans) or rerun make demo"
  exit 0
fi
step "demo done"
