# Shared shell functions for `make demo`, the bats suite and the benchmark:
# a private dockerd, a busybox image without a registry, local 0-db backends
# as `qsfs zdb` processes, and the managed plugin. Source it; every function
# works under a work directory ($QW) and stops only what it started.
#
# Variables: QW (work directory, required), QSFS_BIN (default bin/qsfs),
# DOCKER_CLI (default /usr/bin/docker, the 20.10 CLI), PLUGIN (plugin name,
# default qsfs-<pid>:dev ... set by the caller).

QSFS_ROOT=${QSFS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
QSFS_BIN=${QSFS_BIN:-$QSFS_ROOT/bin/qsfs}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}

# D runs the docker CLI against the private dockerd.
D() { "$DOCKER_CLI" -H "unix://$QW/docker.sock" "$@"; }

# wait_for SECONDS CMD...: retries CMD every 0.2 s until it succeeds.
wait_for() {
  local t=$1; shift
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}

# qsfs_dockerd_start NAME: a private dockerd under $QW (own data and exec
# roots, own containerd namespace, no bridge, no iptables).
qsfs_dockerd_start() {
  local name=$1
  mkdir -p "$QW/data" "$QW/exec"
  setsid dockerd --data-root "$QW/data" --exec-root "$QW/exec" -H "unix://$QW/docker.sock" \
    --pidfile "$QW/docker.pid" --bridge=none --iptables=false --ip-masq=false \
    --containerd-namespace "$name" --containerd-plugins-namespace "$name-plugins" \
    >>"$QW/dockerd.log" 2>&1 </dev/null &
  wait_for 60 D info || { echo "dockerd did not start; log:" >&2; tail -20 "$QW/dockerd.log" >&2; return 1; }
}

# qsfs_dockerd_stop: stops the private dockerd (and its plugins).
qsfs_dockerd_stop() {
  local pid
  pid=$(cat "$QW/docker.pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local end=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$QW/docker.pid"
}

# qsfs_busybox_image: imports busybox:local from Debian's busybox-static.
qsfs_busybox_image() {
  D image inspect busybox:local >/dev/null 2>&1 && return 0
  local bb=$QW/bbroot
  mkdir -p "$bb/bin"
  cp /bin/busybox "$bb/bin/"
  local a
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$bb/bin/$a"; done
  tar -C "$bb" -cf "$QW/busybox.tar" .
  D import --change 'ENV PATH=/bin' "$QW/busybox.tar" busybox:local >/dev/null
}

# qsfs_host_ip: an address of this host that a volume's namespace reaches
# through the host (the default route's source, else the first global one).
qsfs_host_ip() {
  local ip
  ip=$(ip -4 route get 192.0.2.123 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)
  [ -n "$ip" ] || ip=$(ip -4 -o addr show scope global | grep -v ' qfs' | awk '{print $4}' | cut -d/ -f1 | head -1)
  echo "$ip"
}

# qsfs_backends_start PORT: two `qsfs zdb` backends on this host: user-key
# mode on PORT with namespaces m1..m4 (metadata) and sequential mode on
# PORT+1 with d1..d4 (data). Sets QSFS_GROUPS and QSFS_META for the host IP.
qsfs_backends_start() {
  local port=$1 ip
  ip=$(qsfs_host_ip)
  [ -n "$ip" ] || { echo "no global IPv4 address on this host for the backends" >&2; return 1; }
  mkdir -p "$QW/backends"
  setsid "$QSFS_BIN" zdb --mode user --port "$port" --data "$QW/backends/meta/data" \
    --index "$QW/backends/meta/index" >"$QW/backends/meta.log" 2>&1 </dev/null &
  echo $! >"$QW/backends/meta.pid"
  setsid "$QSFS_BIN" zdb --mode seq --port $((port + 1)) --data "$QW/backends/data/data" \
    --index "$QW/backends/data/index" >"$QW/backends/data.log" 2>&1 </dev/null &
  echo $! >"$QW/backends/data.pid"
  wait_for 20 redis-cli -p "$port" PING || return 1
  wait_for 20 redis-cli -p $((port + 1)) PING || return 1
  local i
  for i in 1 2 3 4; do
    redis-cli -p "$port" NSNEW "m$i" >/dev/null
    redis-cli -p $((port + 1)) NSNEW "d$i" >/dev/null
  done
  QSFS_META="$ip:$port/m1,$ip:$port/m2,$ip:$port/m3,$ip:$port/m4"
  QSFS_GROUPS="$ip:$((port + 1))/d1,$ip:$((port + 1))/d2;$ip:$((port + 1))/d3,$ip:$((port + 1))/d4"
  export QSFS_META QSFS_GROUPS
}

# qsfs_backends_stop: stops the two backends.
qsfs_backends_stop() {
  local f
  for f in "$QW"/backends/*.pid; do
    [ -e "$f" ] || continue
    kill -TERM "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

# qsfs_plugin_install NAME [KEY=VALUE...]: builds the plugin directory from
# $QSFS_BIN, creates the managed plugin NAME on the private dockerd with its
# state and secrets under $QW, applies the settings and enables it.
# The state directory is ${PLUGIN_STATE:-$QW/state}.
qsfs_plugin_install() {
  local name=$1; shift
  local state=${PLUGIN_STATE:-$QW/state}
  "$QSFS_ROOT/scripts/build-rootfs.sh" "$QSFS_BIN" "$QW/plugin-$name" >/dev/null
  mkdir -p "$state" "$QW/secrets" /run/netns
  D plugin create "$name" "$QW/plugin-$name" >/dev/null
  D plugin set "$name" state.source="$state" secrets.source="$QW/secrets" "$@"
  D plugin enable "$name" >/dev/null
}

# qsfs_plugin_id NAME: the managed plugin's id.
qsfs_plugin_id() { D plugin inspect -f '{{.Id}}' "$1"; }

# qsfs_unmount_under DIR: lazily unmounts whatever is still mounted under DIR
# (deepest first), e.g. after a failed test.
qsfs_unmount_under() {
  local dir=$1 m
  for m in $(awk -v d="$dir" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

# qsfs_teardown_netns_of STATE_DIR: removes namespaces of the volume ids
# found under a state directory (data/<id>, tombstones/<id>.json, volumes).
qsfs_teardown_netns_of() {
  local state=$1 id
  for id in $( (ls "$state/data" 2>/dev/null; ls "$state/tombstones" 2>/dev/null | sed 's/\.json$//'; \
      cat "$state"/volumes/*/volume.json 2>/dev/null | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p') | sort -u); do
    ip netns pids "qfs-ns-$id" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    "$QSFS_BIN" volume teardown "$id" >/dev/null 2>&1 || true
  done
}

# qsfs_host_ip6: a global IPv6 address of this host (the default route's
# source, else the first global one); empty when there is none.
qsfs_host_ip6() {
  local ip
  ip=$(ip -6 route get 2001:db8::123 2>/dev/null | sed -n 's/.* src \([0-9a-f:]*\).*/\1/p' | head -1)
  [ -n "$ip" ] || ip=$(ip -6 -o addr show scope global | grep -v ' qfs' | awk '{print $4}' | cut -d/ -f1 | head -1)
  echo "$ip"
}
