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

# The local backends live in a network namespace of their own, created here
# and joined to the host by a veth pair, so a volume's namespace reaches them
# through the host exactly as it would reach remote backends, and no traffic
# goes anywhere but to addresses this run created. Addresses: IPv4
# 100.124.<n>.0/30 and IPv6 fd8c:5f0e:be00:<n>::/64, n derived from the pid.
qsfs_backends_net() {
  [ -n "${QSFS_BE_NS:-}" ] && return 0
  local n=$(($$ % 250))
  QSFS_BE_NS="qsfs-be-$$"
  QSFS_BE_HOSTIF="qbeh$$"
  QSFS_BE_NSIF="qben$$"
  QSFS_BE_IP4="100.124.$n.2"
  QSFS_BE_HOST4="100.124.$n.1"
  QSFS_BE_IP6="fd8c:5f0e:be00:$(printf %x "$n")::2"
  QSFS_BE_HOST6="fd8c:5f0e:be00:$(printf %x "$n")::1"
  # Exported so the processes a run spawns (bats runs each test in its own
  # process) name the same namespace.
  export QSFS_BE_NS QSFS_BE_HOSTIF QSFS_BE_NSIF QSFS_BE_IP4 QSFS_BE_HOST4 QSFS_BE_IP6 QSFS_BE_HOST6
}

# qsfs_host_ip: the IPv4 address of the backends' namespace.
qsfs_host_ip() { qsfs_backends_net; echo "$QSFS_BE_IP4"; }

# qsfs_host_ip6: the IPv6 address of the backends' namespace; empty when the
# host has IPv6 disabled.
qsfs_host_ip6() {
  qsfs_backends_net
  ip netns exec "$QSFS_BE_NS" ip -6 -o addr show dev "$QSFS_BE_NSIF" scope global 2>/dev/null |
    grep -q "$QSFS_BE_IP6" && echo "$QSFS_BE_IP6"
}

# qsfs_backends_ns_up: creates the backends' namespace and its veth pair.
qsfs_backends_ns_up() {
  qsfs_backends_net
  ip netns add "$QSFS_BE_NS" || return 1
  # recorded for a later run's cleanup (make demo KEEP=1, then make demo)
  mkdir -p "$QW/backends"
  echo "$QSFS_BE_NS $QSFS_BE_HOSTIF" >"$QW/backends/net"
  ip link add "$QSFS_BE_HOSTIF" type veth peer name "$QSFS_BE_NSIF" netns "$QSFS_BE_NS" || return 1
  ip addr add "$QSFS_BE_HOST4/30" dev "$QSFS_BE_HOSTIF"
  ip link set "$QSFS_BE_HOSTIF" up
  ip netns exec "$QSFS_BE_NS" ip link set lo up
  ip netns exec "$QSFS_BE_NS" ip addr add "$QSFS_BE_IP4/30" dev "$QSFS_BE_NSIF"
  ip netns exec "$QSFS_BE_NS" ip link set "$QSFS_BE_NSIF" up
  ip netns exec "$QSFS_BE_NS" ip route add default via "$QSFS_BE_HOST4"
  if [ -e /proc/sys/net/ipv6/conf/all/disable_ipv6 ] && [ "$(cat /proc/sys/net/ipv6/conf/all/disable_ipv6)" = 0 ]; then
    ip addr add "$QSFS_BE_HOST6/64" dev "$QSFS_BE_HOSTIF" nodad 2>/dev/null || true
    ip netns exec "$QSFS_BE_NS" ip addr add "$QSFS_BE_IP6/64" dev "$QSFS_BE_NSIF" nodad 2>/dev/null || true
    ip netns exec "$QSFS_BE_NS" ip -6 route add default via "$QSFS_BE_HOST6" 2>/dev/null || true
  fi
}

# qsfs_backends_start PORT: two `qsfs zdb` backends in their own namespace:
# user-key mode on PORT with namespaces m1..m4 (metadata) and sequential mode
# on PORT+1 with d1..d4 (data). Sets QSFS_GROUPS and QSFS_META.
qsfs_backends_start() {
  local port=$1 ip
  qsfs_backends_ns_up || { echo "cannot create the backends' namespace" >&2; return 1; }
  ip=$QSFS_BE_IP4
  mkdir -p "$QW/backends"
  local be="ip netns exec $QSFS_BE_NS"
  setsid $be "$QSFS_BIN" zdb --mode user --listen :: --port "$port" --data "$QW/backends/meta/data" \
    --index "$QW/backends/meta/index" >"$QW/backends/meta.log" 2>&1 </dev/null &
  echo $! >"$QW/backends/meta.pid"
  setsid $be "$QSFS_BIN" zdb --mode seq --listen :: --port $((port + 1)) --data "$QW/backends/data/data" \
    --index "$QW/backends/data/index" >"$QW/backends/data.log" 2>&1 </dev/null &
  echo $! >"$QW/backends/data.pid"
  wait_for 20 $be redis-cli -p "$port" PING || return 1
  wait_for 20 $be redis-cli -p $((port + 1)) PING || return 1
  local i
  for i in 1 2 3 4; do
    $be redis-cli -p "$port" NSNEW "m$i" >/dev/null
    $be redis-cli -p $((port + 1)) NSNEW "d$i" >/dev/null
  done
  QSFS_META="$ip:$port/m1,$ip:$port/m2,$ip:$port/m3,$ip:$port/m4"
  QSFS_GROUPS="$ip:$((port + 1))/d1,$ip:$((port + 1))/d2;$ip:$((port + 1))/d3,$ip:$((port + 1))/d4"
  export QSFS_META QSFS_GROUPS
}

# qsfs_backends_stop: stops the two backends (by PID) and removes their
# namespace and veth pair.
qsfs_backends_stop() {
  local f pid end
  for f in "$QW"/backends/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    end=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  local ns hostif
  if [ -e "$QW/backends/net" ]; then
    read -r ns hostif <"$QW/backends/net"
    rm -f "$QW/backends/net"
  else
    qsfs_backends_net
    ns=$QSFS_BE_NS hostif=$QSFS_BE_HOSTIF
  fi
  ip link del "$hostif" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
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

