#!/usr/bin/env bats
# Podman (rootful, runc, explicit ulimits) through the plugin in host mode:
# `qsfs plugin` runs on the host with its own socket, state and mount root;
# Podman reaches it through containers.conf [engine.volume_plugins], with
# its own --root/--runroot/--tmpdir so the host's Podman is untouched.

load helpers

P() {
  CONTAINERS_CONF="$QW/podman/containers.conf" podman --root "$QW/podman/root" \
    --runroot "$QW/podman/runroot" --tmpdir "$QW/podman/tmp" "$@"
}

# start_plugin: the host-mode plugin on $QW/qsfs.sock.
start_plugin() {
  QSFS_METRICS_ADDR= QSFS_SUBNET4="$SUBNET4" QSFS_SUBNET6="$SUBNET6" \
    setsid "$QSFS_BIN" plugin -socket "$QW/qsfs.sock" -state "$QW/hoststate" -mounts "$QW/hostmnt" \
    >>"$QW/plugin.log" 2>&1 </dev/null &
  echo $! >"$QW/host.plugin.pid"
  wait_for 10 test -S "$QW/qsfs.sock"
}

setup_file() {
  need_root_tools podman runc
  new_workdir podman
  mkdir -p "$QW/podman/root" "$QW/podman/runroot" "$QW/podman/tmp"
  export SUBNET4="100.123.$(($$ % 250)).0/24" SUBNET6="fd8c:5f0e:$(printf %x $((0x9c00 + $$ % 250)))::/48"
  start_plugin
  cat >"$QW/podman/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[engine.volume_plugins]
qsfs = "$QW/qsfs.sock"
EOF
  mkdir -p "$QW/bbroot/bin"
  cp /bin/busybox "$QW/bbroot/bin/"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$QW/bbroot/bin/$a"; done
  tar -C "$QW/bbroot" -cf "$QW/busybox.tar" .
  P import --change 'ENV PATH=/bin' "$QW/busybox.tar" localhost/busybox:local >/dev/null
}

teardown_file() {
  if [ -n "${QW:-}" ] && [ -d "$QW/podman" ]; then
    P rm -af >/dev/null 2>&1 || true
    P volume rm -af >/dev/null 2>&1 || true
    P system reset -f >/dev/null 2>&1 || true
  fi
  cleanup_all
}

teardown() {
  if [ -z "$BATS_TEST_COMPLETED" ]; then
    echo "--- plugin log (tail)"
    tail -15 "$QW/plugin.log" || true
  fi
}

@test "podman: create with --driver qsfs, write and read from two containers" {
  run P volume create --driver qsfs -o cache=2G pv1
  [ "$status" -eq 0 ]
  P run --rm --network none -v pv1:/data localhost/busybox:local sh -c 'echo from-podman > /data/f'
  run P run --rm --network none -v pv1:/data localhost/busybox:local cat /data/f
  [ "$status" -eq 0 ]
  [ "$output" = from-podman ]
  run P volume inspect pv1
  [[ "$output" == *'"state": "idle"'* ]]
  [[ "$output" == *'"cache": "2GiB"'* ]]
}

@test "podman: a long-running container and a second one (Podman's fixed mount ID)" {
  P volume create --driver qsfs pv2
  P run -d --name pr1 --network none -v pv2:/data localhost/busybox:local sh -c 'echo a > /data/f; sleep 600'
  wait_for 20 P exec pr1 cat /data/f
  run P run --rm --network none -v pv2:/data localhost/busybox:local cat /data/f
  [ "$output" = a ]
  run "$QSFS_BIN" volume status pv2 --socket "$QW/qsfs.sock"
  [[ "$output" == *"STATE          mounted"* ]]
  P rm -f pr1
  run "$QSFS_BIN" volume status pv2 --socket "$QW/qsfs.sock"
  [[ "$output" == *"MOUNTS         0"* ]]
}

@test "podman: bad options are refused and rm removes the volume from the plugin" {
  run P volume create --driver qsfs -o colour=red pbad
  [ "$status" -ne 0 ]
  [[ "$output" == *'option "colour"'* ]]
  P volume create --driver qsfs pv3
  [ -d "$QW/hoststate/volumes/pv3" ]
  P volume rm pv3
  [ ! -d "$QW/hoststate/volumes/pv3" ]
}

@test "podman: a plugin restart restores the mount in the background" {
  P volume create --driver qsfs pv4
  P run -d --name pr2 --network none -v pv4:/data localhost/busybox:local sh -c 'echo kept > /data/f; sleep 600'
  wait_for 20 P exec pr2 cat /data/f
  pid=$(cat "$QW/host.plugin.pid")
  kill -TERM "$pid"
  wait_for 15 sh -c "! kill -0 $pid"
  start_plugin
  restored() { "$QSFS_BIN" volume status pv4 --socket "$QW/qsfs.sock" | grep -q 'STATE          mounted'; }
  wait_for 20 restored
  # Podman still counts pr2's mount and reuses the (restored) mountpoint.
  run P run --rm --network none -v pv4:/data localhost/busybox:local cat /data/f
  [ "$output" = kept ]
  P rm -f pr2
  run "$QSFS_BIN" volume status pv4 --socket "$QW/qsfs.sock"
  [[ "$output" == *"MOUNTS         0"* ]]
}

@test "host-mode plugin removes its socket on SIGTERM" {
  pid=$(cat "$QW/host.plugin.pid")
  kill -TERM "$pid"
  wait_for 15 sh -c "! kill -0 $pid"
  [ ! -e "$QW/qsfs.sock" ]
  rm -f "$QW/host.plugin.pid"
}
