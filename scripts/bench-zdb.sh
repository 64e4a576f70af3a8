#!/usr/bin/env bash
# bench-zdb.sh: redis-benchmark against `qsfs zdb` on the native disk.
#
# SET and GET, 4 KiB and 128 KiB values, pipeline 1 and 16, in a user-key
# namespace (`default`) and a sequential namespace (`1`, selected with
# redis-benchmark's --dbnum, which sends `SELECT 1`). Prints a markdown
# section (heading + table) on stdout; progress goes to stderr.
#
# How each case is driven (redis-benchmark 7):
#   user SET  -t set -d SIZE -r 1000000000      (keys key:<random>, new data)
#   user GET  -x GET < "bench:get"              (one key holding SIZE bytes)
#   seq  SET  --dbnum 1 -x SET "" < value       (every request appends a new id)
#   seq  GET  zdb/cmd/zdbbench -ns 1 -id 0      (id 0 holds SIZE bytes)
# redis-benchmark cannot send a sequential GET: the 8-byte id contains NUL
# bytes and its -x argument is cut at the first NUL, so that row comes from
# zdbbench, a small Go RESP client run with the same -c/-n/-P (built with go).
#
# Runs as root after `make build`; needs redis-benchmark and redis-cli.
# Knobs: QSFS_BIN, ZDB_BENCH_DIR (default /var/tmp), ZDB_BENCH_CLIENTS (16),
# ZDB_BENCH_N_4K (50000), ZDB_BENCH_N_128K (5000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${QSFS_BIN:-$ROOT/bin/qsfs}
CLIENTS=${ZDB_BENCH_CLIENTS:-16}
N_4K=${ZDB_BENCH_N_4K:-50000}
N_128K=${ZDB_BENCH_N_128K:-5000}

for tool in redis-benchmark redis-cli; do
	command -v "$tool" >/dev/null || { echo "bench-zdb: $tool not installed" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "bench-zdb: $BIN not found (run make build)" >&2; exit 1; }
export PATH=/usr/local/go/bin:$PATH

WORK=$(mktemp -d "${ZDB_BENCH_DIR:-/var/tmp}/qsfs-bench-zdb.XXXXXX")
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$WORK/zdbbench" ./zdb/cmd/zdbbench)
PORT=$((20000 + RANDOM % 20000))
ZDB_PID=""

cleanup() {
	if [ -n "$ZDB_PID" ]; then kill "$ZDB_PID" 2>/dev/null || true; wait "$ZDB_PID" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }

start_zdb() {
	rm -rf "$WORK/db"
	mkdir -p "$WORK/db"
	"$BIN" zdb --listen 127.0.0.1 --port "$PORT" --data "$WORK/db/data" --index "$WORK/db/index" \
		>"$WORK/zdb.log" 2>&1 &
	ZDB_PID=$!
	for _ in $(seq 200); do
		[ "$(cli PING 2>/dev/null)" = PONG ] && break
		sleep 0.05
	done
	[ "$(cli PING 2>/dev/null)" = PONG ] || { echo "bench-zdb: zdb did not start" >&2; cat "$WORK/zdb.log" >&2; exit 1; }
	cli NSNEW 1 >/dev/null
	cli NSSET 1 mode seq >/dev/null
}

stop_zdb() {
	kill "$ZDB_PID"
	wait "$ZDB_PID" 2>/dev/null || true
	ZDB_PID=""
}

# rps <redis-benchmark args...>: requests per second from the CSV output
rps() {
	redis-benchmark -h 127.0.0.1 -p "$PORT" -c "$CLIENTS" --csv "$@" 2>/dev/null |
		awk -F'","' 'NR==2 { gsub(/"/, "", $2); print $2 }'
}

ROWS=()
# settle: write back dirty pages left by the previous case so each case
# starts from the same page-cache state
settle() { sync; }

row() { # namespace op size pipeline n rps
	local mbs
	mbs=$(awk -v r="$6" -v s="$3" 'BEGIN { printf "%.1f", r * s / 1e6 }')
	ROWS+=("| $1 | $2 | $(($3 / 1024)) KiB | $4 | $5 | $(printf '%.0f' "$6") | $mbs |")
	echo "bench-zdb: $1 $2 $(($3 / 1024))KiB P$4: $6 ops/s, $mbs MB/s" >&2
}

for size in 4096 131072; do
	n=$N_4K
	[ "$size" -gt 4096 ] && n=$N_128K
	head -c "$size" /dev/zero | tr '\0' 'v' >"$WORK/value"
	printf 'bench:get' >"$WORK/getkey"
	start_zdb
	for p in 1 16; do
		settle
		row user SET "$size" "$p" "$n" "$(rps -n "$n" -P "$p" -t set -d "$size" -r 1000000000)"
	done
	cli -x SET bench:get <"$WORK/value" >/dev/null
	for p in 1 16; do
		row user GET "$size" "$p" "$n" "$(rps -n "$n" -P "$p" -x GET <"$WORK/getkey")"
	done
	for p in 1 16; do
		settle
		row seq SET "$size" "$p" "$n" "$(rps -n "$n" -P "$p" --dbnum 1 -x SET "" <"$WORK/value")"
	done
	for p in 1 16; do
		row seq "GET (zdbbench)" "$size" "$p" "$n" \
			"$("$WORK/zdbbench" -a "127.0.0.1:$PORT" -ns 1 -id 0 -c "$CLIENTS" -n "$n" -P "$p")"
	done
	stop_zdb
done

FS=$(df -T "$WORK" | awk 'NR==2 { print $2 " on " $1 }')
CPU=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
echo "## zdb: redis-benchmark against qsfs zdb"
echo
echo "redis-benchmark $(redis-benchmark --version | awk '{ print $2 }'), $CLIENTS clients, data and index on $FS,"
echo "$(nproc) CPUs ($CPU). Every acknowledged SET is in the files (write(2) done) before its reply;"
echo "no fsync (official default); \`sync\` runs before each SET case. MB/s = ops/s x value size / 10^6."
echo "Single run per row; \"GET (zdbbench)\" rows come from zdb/cmd/zdbbench (redis-benchmark cannot send"
echo "the NUL bytes of a sequential id), same connections, requests and pipeline."
echo
echo "| namespace | op | value | pipeline | requests | ops/s | MB/s |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
