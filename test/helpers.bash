# Shared setup of the bats suite. Each file starts what it needs under its
# own work directory ($QW, unique per run) and removes it in teardown_file,
# also after failures. Only processes started here are stopped.

QSFS_ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
export QSFS_ROOT
export QSFS_BIN=${QSFS_BIN:-$QSFS_ROOT/bin/qsfs}
# shellcheck source=../scripts/lib.sh
source "$QSFS_ROOT/scripts/lib.sh"

# need_root_tools: skip the whole file without root or the tools.
need_root_tools() {
  [ "$(id -u)" = 0 ] || skip "needs root"
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || skip "needs $t"
  done
  [ -e /dev/fuse ] || skip "needs /dev/fuse"
}

# new_workdir TAG: exports QW, a fresh work directory for this file.
new_workdir() {
  QW=$(mktemp -d "/tmp/qsfs-bats-$1-XXXXXX")
  export QW
  echo "$QW" >"$BATS_FILE_TMPDIR/qw"
}

# vstatus VOLUME FIELD: a field of the volume's Status in docker inspect.
vstatus() { D volume inspect -f "{{index .Status \"$2\"}}" "$1"; }

# plugin_sock NAME: the managed plugin's socket on the host.
plugin_sock() { echo "/run/docker/plugins/$(qsfs_plugin_id "$1")/qsfs.sock"; }

# dump_logs: shows the dockerd log tail (plugin output included) on failure.
dump_logs() {
  echo "--- plugin log (tail)"
  grep 'plugin=' "$QW/dockerd.log" 2>/dev/null | tail -15 || true
}

# cleanup_all: everything this file started, in order.
cleanup_all() {
  [ -n "${QW:-}" ] && [ -d "$QW" ] || return 0
  if [ -e "$QW/docker.pid" ]; then
    local c
    for c in $(D ps -aq 2>/dev/null); do D rm -f "$c" >/dev/null 2>&1 || true; done
    for c in $(D volume ls -q 2>/dev/null); do D volume rm -f "$c" >/dev/null 2>&1 || true; done
    for c in $(D plugin ls -q 2>/dev/null); do D plugin disable -f "$c" >/dev/null 2>&1 || true; done
    qsfs_dockerd_stop
  fi
  qsfs_backends_stop
  local f
  for f in "$QW"/*.plugin.pid "$QW"/*.daemon.pid; do
    [ -e "$f" ] || continue
    kill -TERM "$(cat "$f")" 2>/dev/null || true
    sleep 1
    rm -f "$f"
  done
  qsfs_unmount_under "$QW"
  for f in "$QW"/state "$QW"/state-* "$QW"/hoststate; do
    [ -d "$f" ] && qsfs_teardown_netns_of "$f"
  done
  qsfs_unmount_under "$QW"
  rm -rf "$QW"
}
