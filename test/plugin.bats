#!/usr/bin/env bats
# End to end through the managed plugin, on a private dockerd started here:
# create/inspect/ls, bad options, shared data, container restarts, docker cp,
# a failing Mount, an archived volume with local backends (uploads, status,
# update), FUSE over io_uring in the plugin's zdbfs, disaster recovery by a
# second plugin on an empty state root,
# rm + create while the old volume drains, metrics, plugin
# disable/enable, a dockerd restart, and compose with driver_opts.

load helpers

setup_file() {
  need_root_tools dockerd redis-cli curl
  new_workdir docker
  export DNAME="qsfs-bats-$$"
  export PORT=$((21000 + $$ % 8000))
  export METRICS="127.0.0.1:$((PORT + 90))"
  qsfs_backends_start "$PORT"
  qsfs_dockerd_start "$DNAME"
  qsfs_busybox_image
  mkdir -p "$QW/secrets"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$QW/secrets/k.key"
  chmod 600 "$QW/secrets/k.key"
  qsfs_plugin_install qsfs QSFS_METRICS_ADDR="$METRICS" \
    QSFS_SUBNET4="100.125.$(($$ % 250)).0/24" QSFS_SUBNET6="fd8c:5f0e:$(printf %x $((0x9b00 + $$ % 250)))::/48"
}

teardown_file() {
  cleanup_all
}

teardown() {
  [ -n "$BATS_TEST_COMPLETED" ] || dump_logs
  restore_enable_uring
}

URING_PARAM=/sys/module/fuse/parameters/enable_uring
# restore_enable_uring: puts back the fuse module's enable_uring if a test set it
restore_enable_uring() {
  if [ -e "$QW/enable_uring.old" ]; then
    cat "$QW/enable_uring.old" >"$URING_PARAM"
    rm -f "$QW/enable_uring.old"
  fi
}

@test "create, inspect and ls a volume; create again is a no-op" {
  run D volume create -d qsfs v1
  [ "$status" -eq 0 ]
  run D volume ls --format '{{.Name}} {{.Driver}}'
  [[ "$output" == *"v1 qsfs:latest"* ]]
  [ "$(vstatus v1 state)" = created ]
  id=$(vstatus v1 id)
  [[ "$id" =~ ^[0-9a-f]{16}$ ]]
  run D volume inspect v1
  [[ "$output" == *'"cache": "10GiB"'* ]]
  [[ "$output" == *'"backends": "none (local only)"'* ]]
  D volume create -d qsfs v1
  [ "$(vstatus v1 id)" = "$id" ]
  [ -f "$QW/state/volumes/v1/volume.json" ]
  [ "$(stat -c %a "$QW/state/volumes/v1/volume.json")" = 600 ]
}

@test "bad -o values are refused, naming the key and the fix; nothing is written" {
  run D volume create -d qsfs -o colour=blue bad1
  [ "$status" -ne 0 ]
  [[ "$output" == *'option "colour"'*'remove it'* ]]
  run D volume create -d qsfs -o cache=lots bad2
  [ "$status" -ne 0 ]
  [[ "$output" == *'option "cache"'*'cache=10G'* ]]
  run D volume create -d qsfs -o groups=zdb.example.com:9900/ns -o meta="$QSFS_META" -o minimal_shards=1 -o expected_shards=1 -o key_file=k.key bad3
  [ "$status" -ne 0 ]
  [[ "$output" == *'option "groups"'*'IP literal'* ]]
  run D volume create -d qsfs -o groups="$QSFS_GROUPS" -o meta="$QSFS_META" -o minimal_shards=3 -o expected_shards=2 -o key_file=k.key bad4
  [ "$status" -ne 0 ]
  [[ "$output" == *'option "expected_shards"'* ]]
  run D volume create -d qsfs -o groups="$QSFS_GROUPS" -o meta="$QSFS_META" -o minimal_shards=2 -o expected_shards=4 bad5
  [ "$status" -ne 0 ]
  [[ "$output" == *'option "encryption_key"'*'key_file'* ]]
  run D volume create -d qsfs -o key_file=../../etc/shadow bad6
  [ "$status" -ne 0 ]
  [[ "$output" == *'option "key_file"'* ]]
  run D volume create -d qsfs 'a..b'
  [ "$status" -ne 0 ]
  [[ "$output" == *invalid* ]]
  run D volume ls -q
  [[ "$output" != *bad* ]]
  run ls "$QW/state/volumes"
  [[ "$output" != *bad* ]]
}

@test "two containers share data, kept across container restarts" {
  D volume create -d qsfs shared
  D run -d --name w1 -v shared:/data busybox:local sh -c '[ -e /data/f ] || echo one > /data/f; sleep 600'
  wait_for 20 D exec w1 cat /data/f
  run D run --rm -v shared:/data busybox:local cat /data/f
  [ "$output" = one ]
  [ "$(vstatus shared state)" = mounted ]
  [ "$(vstatus shared mounts)" = 1 ]
  D exec w1 sh -c 'echo two >> /data/f'
  D restart -t 1 w1
  wait_for 20 D exec w1 cat /data/f
  run D exec w1 cat /data/f
  [ "${lines[0]}" = one ] && [ "${lines[1]}" = two ]
  D rm -f w1
  [ "$(vstatus shared mounts)" = 0 ]
  [ "$(vstatus shared state)" = idle ]
  run D run --rm --user 1000:1000 -v shared:/data busybox:local cat /data/f
  [ "${lines[1]}" = two ]
}

@test "FUSE over io_uring: with the kernel's enable_uring on, the plugin's zdbfs serves the volume on its rings" {
  [ -w "$URING_PARAM" ] || skip "kernel without FUSE over io_uring"
  cat "$URING_PARAM" >"$QW/enable_uring.old"
  echo Y >"$URING_PARAM"
  D volume create -d qsfs ur
  D run -d --name u1 -v ur:/data busybox:local sh -c 'for i in $(seq 200); do echo $i > /data/f$i; done; sleep 600'
  wait_for 20 D exec u1 cat /data/f200
  id=$(vstatus ur id)
  pid=$(pgrep -f "zdbfs -o unix=/var/lib/qsfs/data/$id/" | head -1)
  [ -n "$pid" ]
  # every request answered on a ring is one completion: sum the rings' CqHead
  served=0
  for fd in /proc/"$pid"/fd/*; do
    [ "$(readlink "$fd")" = "anon_inode:[io_uring]" ] || continue
    n=$(awk '/^CqHead:/ {print $2}' /proc/"$pid"/fdinfo/"${fd##*/}")
    served=$((served + ${n:-0}))
  done
  echo "requests answered on the rings: $served"
  [ "$served" -gt 800 ]
  run D exec u1 cat /data/f123
  [ "$output" = 123 ]
  D rm -f u1
  run D run --rm -v ur:/data busybox:local cat /data/f200
  [ "$output" = 200 ]
  restore_enable_uring
}

@test "docker cp into a running container counts the mount ID twice" {
  D volume create -d qsfs cpv
  D run -d --name c1 -v cpv:/data busybox:local sleep 600
  echo copied >"$QW/cpfile"
  D cp "$QW/cpfile" c1:/data/cpfile
  run D exec c1 cat /data/cpfile
  [ "$output" = copied ]
  [ "$(vstatus cpv mounts)" = 1 ]
  [ "$(vstatus cpv state)" = mounted ]
  D rm -f c1
  [ "$(vstatus cpv mounts)" = 0 ]
}

@test "a failing Mount returns the process's output and leaves nothing behind" {
  PLUGIN_STATE="$QW/state-broken" qsfs_plugin_install qsfsbroken QSFS_ZDBFS=/usr/sbin/ip QSFS_METRICS_ADDR= \
    QSFS_SUBNET4="100.124.$(($$ % 250)).0/24"
  D volume create -d qsfsbroken fv
  id=$(vstatus fv id)
  run D run --rm -v fv:/data busybox:local true
  [ "$status" -ne 0 ]
  [[ "$output" == *"VolumeDriver.Mount"*"zdbfs exited"*"last output of zdbfs"* ]]
  [ "$(vstatus fv state)" = failed ]
  [ "$(vstatus fv mounts)" = 0 ]
  pm="$QW/data/plugins/$(qsfs_plugin_id qsfsbroken)/propagated-mount"
  run ls -A "$pm"
  [ -z "$output" ]
  run ip netns list
  [[ "$output" != *"$id"* ]]
  [ ! -e "$QW/state-broken/data/$id" ]
  run pgrep -f "$QW/state-broken/data/$id"
  [ "$status" -ne 0 ]
  D volume rm fv
  D plugin disable -f qsfsbroken
  D plugin rm -f qsfsbroken
}

@test "program paths: the stack runs from QSFS_ZDB/ZDBFS/ZSTOR/HOOK paths as official binaries would" {
  # /usr/bin/{zdb,zdbfs,zstor,hook} in the rootfs are the qsfs binary under
  # the official programs' names; the plugin runs them as plain programs.
  PLUGIN_STATE="$QW/state-prog" qsfs_plugin_install qsfsprog QSFS_METRICS_ADDR= \
    QSFS_ZDB=/usr/bin/zdb QSFS_ZDBFS=/usr/bin/zdbfs QSFS_ZSTOR=/usr/bin/zstor QSFS_HOOK=/usr/bin/hook \
    QSFS_SUBNET4="100.121.$(($$ % 250)).0/24" QSFS_SUBNET6="fd8c:5f0e:$(printf %x $((0x9d00 + $$ % 250)))::/48"
  cp "$QW/secrets/k.key" "$QW/secrets/k2.key"
  D volume create -d qsfsprog -o groups="$QSFS_GROUPS" -o meta="$QSFS_META" -o minimal_shards=2 \
    -o expected_shards=4 -o key_file=k2.key -o rotate=2 -o meta_prefix="prog-$$" pp
  D run --rm -v pp:/data busybox:local sh -c 'dd if=/dev/urandom of=/data/blob bs=1M count=2 2>/dev/null; md5sum /data/blob > /data/md5'
  run D run --rm -v pp:/data busybox:local md5sum -c /data/md5
  [ "$status" -eq 0 ]
  sock=$(plugin_sock qsfsprog)
  uploaded() { "$QSFS_BIN" volume status pp --socket "$sock" | awk '$1=="TX" && $2 > 2000000 {ok=1} END {exit !ok}'; }
  wait_for 60 uploaded
  run pgrep -af "^/usr/bin/zstor .*state-prog|^/usr/bin/zstor --log_file /var/lib/qsfs/data/$(vstatus pp id)"
  [ "$status" -eq 0 ]
  D volume rm pp
  D plugin disable -f qsfsprog
  D plugin rm -f qsfsprog
}

@test "disaster: a second plugin on an empty state root restores a volume from its backends and meta_prefix" {
  D volume create -d qsfs -o groups="$QSFS_GROUPS" -o meta="$QSFS_META" -o minimal_shards=2 \
    -o expected_shards=4 -o key_file=k.key -o rotate=0 dr
  D run --rm -v dr:/data busybox:local sh -c 'mkdir -p /data/a/b /data/p && chmod 700 /data/p &&
    echo one > /data/a/one && chmod 640 /data/a/one && echo s > /data/p/s && chmod 400 /data/p/s &&
    dd if=/dev/urandom of=/data/a/b/big bs=1M count=3 2>/dev/null && ln -s a/one /data/link && : > /data/empty'
  tree='cd /data && find . | sort | while read -r f; do stat -c "%n %A %s" "$f"; done; find . -type f | sort | xargs md5sum'
  D run --rm -v dr:/data busybox:local sh -c "$tree" >"$QW/dr.want"
  grep -q '^./a/b/big -rw-r--r-- 3145728$' "$QW/dr.want"
  prefix=$(D volume inspect -f '{{index .Status.backends "meta_prefix"}}' dr)
  [ "$prefix" = "qsfs-$(vstatus dr id)" ]
  # The last Unmount stored the current files (rotate=0: nothing else did);
  # zstor has uploaded everything once its queue is empty.
  drained() { "$QSFS_BIN" volume status dr --socket "$(plugin_sock qsfs)" | grep -q '^UPLOADS        0 pending, 0 failed'; }
  wait_for 60 drained
  PLUGIN_STATE="$QW/state-dr" qsfs_plugin_install qsfsdr QSFS_METRICS_ADDR= \
    QSFS_SUBNET4="100.122.$(($$ % 250)).0/24" QSFS_SUBNET6="fd8c:5f0e:$(printf %x $((0x9e00 + $$ % 250)))::/48"
  D volume create -d qsfsdr -o groups="$QSFS_GROUPS" -o meta="$QSFS_META" -o minimal_shards=2 \
    -o expected_shards=4 -o key_file=k.key -o meta_prefix="$prefix" dr2
  D run --rm -v dr2:/data busybox:local sh -c "$tree" >"$QW/dr.got"
  diff "$QW/dr.want" "$QW/dr.got"
  D volume rm dr2
  D plugin disable -f qsfsdr
  D plugin rm -f qsfsdr
  D volume rm dr
}

@test "archived volume: uploads to its backends, status and update over the socket" {
  D volume create -d qsfs -o groups="$QSFS_GROUPS" -o meta="$QSFS_META" -o minimal_shards=2 \
    -o expected_shards=4 -o key_file=k.key -o rotate=2 arch
  D run --rm -v arch:/data busybox:local sh -c 'dd if=/dev/urandom of=/data/blob bs=1M count=4 2>/dev/null; md5sum /data/blob > /data/md5'
  sock=$(plugin_sock qsfs)
  uploaded() { "$QSFS_BIN" volume status arch --socket "$sock" | awk '$1=="TX" && $2 > 4000000 {ok=1} END {exit !ok}'; }
  wait_for 60 uploaded
  run "$QSFS_BIN" volume status arch --socket "$sock"
  [ "$status" -eq 0 ]
  [[ "$output" == *"NAMESPACE      qfs-ns-"* ]]
  [[ "$output" == *"SHARDS         2/4"* ]]
  [[ "$output" != *"$(cat "$QW/secrets/k.key")"* ]]
  run "$QSFS_BIN" volume update arch -o expected_shards=3 --socket "$sock"
  [ "$status" -eq 0 ]
  [[ "$output" == *"SIGUSR1"* ]]
  run "$QSFS_BIN" volume update arch -o bogus=1 --socket "$sock"
  [ "$status" -ne 0 ]
  [[ "$output" == *'option "bogus"'* ]]
  run D run --rm -v arch:/data busybox:local md5sum -c /data/md5
  [ "$status" -eq 0 ]
  run curl -s "http://$METRICS/metrics"
  [[ "$output" == *'qsfs_volume_network_transmit_bytes_total{name="arch"'* ]]
  [[ "$output" == *'qsfs_zstor_zstore_store_commands_finished{name="arch"'* ]]
  [[ "$output" == *'qsfs_volume_state{name="arch"'* ]]
}

@test "Debian's prometheus scrapes the metrics endpoint; per-volume series are queried" {
  command -v prometheus >/dev/null || skip "needs prometheus"
  pport=$((PORT + 91))
  mkdir -p "$QW/prom"
  printf 'global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: qsfs\n    static_configs:\n      - targets: ["%s"]\n' \
    "$METRICS" >"$QW/prom/prometheus.yml"
  setsid prometheus --config.file="$QW/prom/prometheus.yml" --storage.tsdb.path="$QW/prom/data" \
    --web.listen-address="127.0.0.1:$pport" >"$QW/prom/log" 2>&1 </dev/null &
  echo $! >"$QW/prometheus.daemon.pid"
  q() { curl -s "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1"; }
  has_series() { q "$1" | grep -q '"name":"arch"'; }
  wait_for 60 has_series 'qsfs_volume_network_transmit_bytes_total{name="arch"} > 0'
  run q 'qsfs_volume_state{name="arch"}'
  [[ "$output" == *'"state":"idle"'* ]]
  run q 'qsfs_zstor_connection_status{name="arch",backend_type="data"}'
  [[ "$output" == *'"namespace":"d1"'* ]]
  kill -TERM "$(cat "$QW/prometheus.daemon.pid")"
  rm -f "$QW/prometheus.daemon.pid"
}

@test "IPv6 backends: the namespace reaches them and uploads" {
  ip6=$(qsfs_host_ip6)
  [ -n "$ip6" ] || skip "IPv6 is disabled on this host"
  m="[$ip6]:$PORT"
  d="[$ip6]:$((PORT + 1))"
  D volume create -d qsfs -o group1="$d/d1,$d/d2" -o group2="$d/d3,$d/d4" \
    -o meta="$m/m1,$m/m2,$m/m3,$m/m4" -o minimal_shards=2 -o expected_shards=4 -o key_file=k.key -o rotate=2 v6
  D run --rm -v v6:/data busybox:local sh -c 'dd if=/dev/urandom of=/data/blob bs=1M count=2 2>/dev/null'
  sock=$(plugin_sock qsfs)
  uploaded() { "$QSFS_BIN" volume status v6 --socket "$sock" | awk '$1=="TX" && $2 > 2000000 {ok=1} END {exit !ok}'; }
  wait_for 60 uploaded
  run "$QSFS_BIN" volume status v6 --socket "$sock"
  [[ "$output" == *"GROUPS         [$ip6]"* ]]
  [[ "$output" == *"UPLOADS        0 pending, 0 failed"* ]]
}

@test "rm then create of the same name while the old volume drains" {
  old=$(vstatus arch id)
  [ "$(vstatus arch state)" = idle ]
  D volume rm arch
  [ -f "$QW/state/tombstones/$old.json" ]
  run D volume ls -q
  [[ "$output" != *arch* ]]
  D volume create -d qsfs arch
  new=$(vstatus arch id)
  [ "$new" != "$old" ]
  run D run --rm -v arch:/data busybox:local ls -A /data
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  run "$QSFS_BIN" volume update arch -o cache=2G --socket "$(plugin_sock qsfs)"
  [ "$status" -eq 0 ]
  ip netns list | grep -q "qfs-ns-$old"
}

@test "data survives plugin disable and enable" {
  D volume create -d qsfs pd
  D run --rm -v pd:/data busybox:local sh -c 'echo before > /data/f'
  D plugin disable -f qsfs
  D plugin enable qsfs
  run D run --rm -v pd:/data busybox:local cat /data/f
  [ "$output" = before ]
}

@test "upgrade: the plugin re-created from a new build keeps volumes and data" {
  D volume create -d qsfs up1
  D run --rm -v up1:/data busybox:local sh -c 'echo v1 > /data/f'
  old=$(qsfs_plugin_id qsfs)
  D plugin disable -f qsfs
  D plugin rm -f qsfs
  qsfs_plugin_install qsfs QSFS_METRICS_ADDR="$METRICS" \
    QSFS_SUBNET4="100.125.$(($$ % 250)).0/24" QSFS_SUBNET6="fd8c:5f0e:$(printf %x $((0x9b00 + $$ % 250)))::/48"
  [ "$(qsfs_plugin_id qsfs)" != "$old" ]
  run D run --rm -v up1:/data busybox:local cat /data/f
  [ "$output" = v1 ]
  run D volume ls -q
  [[ "$output" == *up1* ]]
}

@test "data survives a dockerd restart (the plugin is re-enabled)" {
  D volume create -d qsfs dr
  D run --rm -v dr:/data busybox:local sh -c 'echo kept > /data/f'
  qsfs_dockerd_stop
  qsfs_dockerd_start "$DNAME"
  wait_for 30 D volume inspect dr
  run D run --rm -v dr:/data busybox:local cat /data/f
  [ "$output" = kept ]
  run D volume ls -q
  [[ "$output" == *dr* ]]
}

@test "compose with driver_opts" {
  command -v docker-compose >/dev/null || skip "needs docker-compose"
  mkdir -p "$QW/compose"
  cat >"$QW/compose/docker-compose.yml" <<'EOF'
version: "3.7"
services:
  app:
    image: busybox:local
    command: sh -c 'echo from-compose >> /data/log && cat /data/log'
    volumes:
      - data:/data
volumes:
  data:
    driver: qsfs:latest   # the name Docker reports; plain "qsfs" makes compose refuse a second up
    driver_opts:
      cache: "1G"
      rotate: "5m"
EOF
  cd "$QW/compose"
  export DOCKER_HOST="unix://$QW/docker.sock"
  run docker-compose -p qb up --abort-on-container-exit
  [ "$status" -eq 0 ]
  [[ "$output" == *from-compose* ]]
  [ "$(vstatus qb_data state)" = idle ]
  run D volume inspect qb_data
  [[ "$output" == *'"cache": "1GiB"'* ]]
  run docker-compose -p qb up --abort-on-container-exit
  [ "$status" -eq 0 ]
  [[ "$output" == *"from-compose"*"from-compose"* ]]
  run docker-compose -p qb down -v
  [ "$status" -eq 0 ]
  run D volume ls -q
  [[ "$output" != *qb_data* ]]
}
