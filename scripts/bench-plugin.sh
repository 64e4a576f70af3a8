#!/usr/bin/env bash
# The plugin's benchmark (run by scripts/bench.sh, or alone as root after
# make build): time of `docker run --rm -v VOLUME:/data busybox true` with a
# `local` volume, a local-only qsfs volume and a qsfs volume with backends
# (zstor running), through the managed plugin on a private dockerd; and the
# resident memory of one idle mounted volume's processes. Prints markdown.
set -euo pipefail
QW=$(mktemp -d /tmp/qsfs-bench-plugin-XXXXXX)
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-10}
PORT=$((30000 + $$ % 5000))

cleanup() {
  set +e
  for c in $(D ps -aq 2>/dev/null); do D rm -f "$c" >/dev/null 2>&1; done
  for v in $(D volume ls -q 2>/dev/null); do D volume rm -f "$v" >/dev/null 2>&1; done
  D plugin disable -f qsfs >/dev/null 2>&1
  qsfs_dockerd_stop
  qsfs_backends_stop
  qsfs_unmount_under "$QW"
  qsfs_teardown_netns_of "$QW/state"
  rm -rf "$QW"
}
trap cleanup EXIT

{
  qsfs_backends_start "$PORT"
  qsfs_dockerd_start "qsfs-bench-$$"
  qsfs_busybox_image
  mkdir -p "$QW/secrets"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$QW/secrets/k.key"
  qsfs_plugin_install qsfs QSFS_METRICS_ADDR=
  D volume create -d local loc
  D volume create -d qsfs qlocal
  D volume create -d qsfs -o groups="$QSFS_GROUPS" -o meta="$QSFS_META" -o minimal_shards=2 \
    -o expected_shards=4 -o key_file=k.key qarch
} >/dev/null

# time_runs VOLUME: prints "median mean min max" in ms over RUNS runs (one
# warm-up run first).
time_runs() {
  local v=$1 i t0 t1
  D run --rm -v "$v:/data" busybox:local true
  local ts=()
  for ((i = 0; i < RUNS; i++)); do
    t0=$(date +%s%N)
    D run --rm -v "$v:/data" busybox:local true
    t1=$(date +%s%N)
    ts+=($(((t1 - t0) / 1000000)))
  done
  printf '%s\n' "${ts[@]}" | sort -n | awk '{a[NR]=$1; s+=$1} END {printf "%d | %d | %d | %d", a[int((NR+1)/2)], s/NR, a[1], a[NR]}'
}

echo "## Plugin: container start with a volume, and idle memory"
echo
echo "\`docker run --rm -v VOLUME:/data busybox true\` through the managed plugin (private dockerd 20.10,"
echo "$RUNS runs after one warm-up). Each qsfs run mounts (network namespace, zdb, zdbfs, and zstor"
echo "for the volume with backends) and unmounts on exit; backends are two local \`qsfs zdb\` processes."
echo
echo "| volume | median ms | mean ms | min ms | max ms |"
echo "|---|---|---|---|---|"
echo "| local driver | $(time_runs loc) |"
echo "| qsfs, local only (zdb + zdbfs) | $(time_runs qlocal) |"
echo "| qsfs, 2+2 shards on 4 backends (zstor + zdb + zdbfs) | $(time_runs qarch) |"
echo

D run -d --name idle -v qarch:/data busybox:local sleep 600 >/dev/null
sleep 5
id=$(D volume inspect -f '{{index .Status "id"}}' qarch)
echo "Resident memory of one idle mounted volume with backends (id $id), from /proc/<pid>/status VmRSS:"
echo
echo "| process | RSS KiB |"
echo "|---|---|"
total=0
for pid in $(pgrep -f "data/$id/"); do
  name=$(tr '\0' ' ' </proc/"$pid"/cmdline | awk '{for (i=1;i<=NF;i++) if ($i ~ /^(zdb|zdbfs|zstor)$/) {print $i; exit}} END {}')
  [ -n "$name" ] || name=$(cat /proc/"$pid"/comm)
  rss=$(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status)
  total=$((total + rss))
  echo "| $name | $rss |"
done
echo "| **total** | **$total** |"
