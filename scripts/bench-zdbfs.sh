#!/usr/bin/env bash
# bench-zdbfs.sh — `qsfs zdbfs` over `qsfs zdb` against a directory on the same
# disk, in one run. Needs root (drop_caches, FUSE), dd, fio and bin/qsfs
# (`make build`). Prints a markdown section on stdout; progress on stderr.
#
#   BENCH_DIR   where to work (default /var/tmp; must be on the disk measured)
#   QSFS_BIN    binary (default bin/qsfs)
#   FIO_RUNTIME seconds per fio job (default 20)
#   DD_MIB      size of the dd test (default 1024)
#   NFILES      number of 4 KiB files (default 10000)
set -euo pipefail

cd "$(dirname "$0")/.."
QSFS_BIN=${QSFS_BIN:-bin/qsfs}
QSFS_BIN=$(realpath "$QSFS_BIN")
BENCH_DIR=${BENCH_DIR:-/var/tmp}
FIO_RUNTIME=${FIO_RUNTIME:-20}
DD_MIB=${DD_MIB:-1024}
NFILES=${NFILES:-10000}

[[ $EUID -eq 0 ]] || { echo "bench-zdbfs: needs root" >&2; exit 1; }
[[ -x $QSFS_BIN ]] || { echo "bench-zdbfs: $QSFS_BIN missing; run make build" >&2; exit 1; }
for tool in dd fio fusermount3 awk; do
	command -v $tool >/dev/null || { echo "bench-zdbfs: needs $tool" >&2; exit 1; }
done

W=$(mktemp -d "$BENCH_DIR/qsfs-bench-zdbfs.$$.XXXX")
NATIVE=$W/native
MNT=$W/mnt
mkdir -p "$NATIVE" "$MNT"
ZDB_PID= ZDBFS_PID=
cleanup() {
	if grep -qs " $MNT fuse.zdbfs " /proc/mounts; then fusermount3 -u "$MNT" || umount -l "$MNT" || true; fi
	[[ -n $ZDBFS_PID ]] && kill "$ZDBFS_PID" 2>/dev/null && wait "$ZDBFS_PID" 2>/dev/null || true
	[[ -n $ZDB_PID ]] && kill "$ZDB_PID" 2>/dev/null && wait "$ZDB_PID" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

log() { echo "bench-zdbfs: $*" >&2; }
now() { date +%s.%N; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

"$QSFS_BIN" zdb --socket "$W/zdb.sock" --data "$W/zdb/data" --index "$W/zdb/index" >"$W/zdb.log" 2>&1 &
ZDB_PID=$!
for _ in $(seq 100); do [[ -S $W/zdb.sock ]] && break; sleep 0.1; done
"$QSFS_BIN" zdbfs -o "autons,unix=$W/zdb.sock" "$MNT" >"$W/zdbfs.log" 2>&1 &
ZDBFS_PID=$!
for _ in $(seq 100); do grep -qs " $MNT fuse.zdbfs " /proc/mounts && break; sleep 0.1; done
grep -qs " $MNT fuse.zdbfs " /proc/mounts || { cat "$W/zdbfs.log" >&2; exit 1; }

declare -A R
# rate <key> <bytes> <seconds> -> MB/s
rate() { R[$1]=$(awk -v b="$2" -v s="$3" 'BEGIN { printf "%.0f", b / s / 1e6 }'); }

fio_job() { # fio_job <dir> <rw> <bs> <key>
	local dir=$1 rw=$2 bs=$3 key=$4 out
	[[ $rw == read || $rw == randread ]] && drop
	out=$(fio --name=b --directory="$dir" --filename=fio.dat --size=512M --rw="$rw" --bs="$bs" \
		--ioengine=psync --iodepth=1 --end_fsync=1 --time_based --runtime="$FIO_RUNTIME" \
		--output-format=terse --terse-version=3 2>/dev/null)
	# terse v3: field 7/8 = read bw KiB/s / iops, 48/49 = write bw KiB/s / iops
	case $rw in
	read) R[$key]=$(awk -F';' '{printf "%.0f", $7 * 1024 / 1e6}' <<<"$out") ;;
	write) R[$key]=$(awk -F';' '{printf "%.0f", $48 * 1024 / 1e6}' <<<"$out") ;;
	randread) R[$key]=$(awk -F';' '{print $8}' <<<"$out") ;;
	randwrite) R[$key]=$(awk -F';' '{print $49}' <<<"$out") ;;
	esac
}

for target in native zdbfs; do
	dir=$NATIVE
	[[ $target == zdbfs ]] && dir=$MNT
	log "$target: dd write ${DD_MIB} MiB conv=fsync"
	drop
	t0=$(now); dd if=/dev/zero of="$dir/dd.dat" bs=1M count="$DD_MIB" conv=fsync status=none; t1=$(now)
	rate "$target.ddw" $((DD_MIB << 20)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
	log "$target: cold read"
	drop
	t0=$(now); dd if="$dir/dd.dat" of=/dev/null bs=1M status=none; t1=$(now)
	rate "$target.ddr" $((DD_MIB << 20)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
	rm -f "$dir/dd.dat"

	log "$target: $NFILES x 4 KiB files"
	mkdir "$dir/small"
	drop
	t0=$(now)
	for ((i = 0; i < NFILES; i++)); do printf '%4096s' '' >"$dir/small/f$i"; done
	t1=$(now)
	R[$target.create]=$(awk -v n="$NFILES" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}')
	drop
	t0=$(now); ls -l "$dir/small" >/dev/null; t1=$(now)
	R[$target.ls]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
	rm -rf "$dir/small"

	for job in "write 1M seqw" "read 1M seqr" "randwrite 4k randw" "randread 4k randr"; do
		set -- $job
		log "$target: fio $1 $2"
		fio_job "$dir" "$1" "$2" "$target.$3"
	done
	rm -f "$dir/fio.dat"
done

ZDBFS_HWM=$(hwm "$ZDBFS_PID")
ZDB_HWM=$(hwm "$ZDB_PID")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "n/a" }'; }
iratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

cat <<MD
## zdbfs

\`qsfs zdbfs\` over \`qsfs zdb\` (unix socket, mixed mode, \`-o autons\`) against a directory on the same disk
($(df --output=source "$BENCH_DIR" | tail -1), $(nproc) CPUs, kernel $(uname -r)). One run each; ratio = zdbfs / native
(for \`ls -l\`, native time / zdbfs time), higher is better.

| test | native | zdbfs | ratio |
|---|---|---|---|
| dd write ${DD_MIB} MiB \`bs=1M conv=fsync\` (MB/s) | ${R[native.ddw]} | ${R[zdbfs.ddw]} | $(ratio "${R[native.ddw]}" "${R[zdbfs.ddw]}") |
| dd cold read after drop_caches (MB/s) | ${R[native.ddr]} | ${R[zdbfs.ddr]} | $(ratio "${R[native.ddr]}" "${R[zdbfs.ddr]}") |
| create ${NFILES} × 4 KiB files (files/s) | ${R[native.create]} | ${R[zdbfs.create]} | $(ratio "${R[native.create]}" "${R[zdbfs.create]}") |
| \`ls -l\` of them, cold (s) | ${R[native.ls]} | ${R[zdbfs.ls]} | $(iratio "${R[native.ls]}" "${R[zdbfs.ls]}") |
| fio seq write 1M, end_fsync (MB/s) | ${R[native.seqw]} | ${R[zdbfs.seqw]} | $(ratio "${R[native.seqw]}" "${R[zdbfs.seqw]}") |
| fio seq read 1M, cold (MB/s) | ${R[native.seqr]} | ${R[zdbfs.seqr]} | $(ratio "${R[native.seqr]}" "${R[zdbfs.seqr]}") |
| fio randwrite 4k (IOPS) | ${R[native.randw]} | ${R[zdbfs.randw]} | $(ratio "${R[native.randw]}" "${R[zdbfs.randw]}") |
| fio randread 4k, cold (IOPS) | ${R[native.randr]} | ${R[zdbfs.randr]} | $(ratio "${R[native.randr]}" "${R[zdbfs.randr]}") |

| process | peak RSS (VmHWM) |
|---|---|
| qsfs zdbfs | $((ZDBFS_HWM / 1024)) MiB |
| qsfs zdb | $((ZDB_HWM / 1024)) MiB |

fio: 512 MiB file, psync, iodepth 1, ${FIO_RUNTIME} s time-based, buffered. 4 KiB files are written by a shell loop
without forking (\`printf\` builtin). zdbfs block cache: default \`cachesize\` (512 × 128 KiB = 64 MiB).
MD
