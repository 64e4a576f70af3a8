#!/usr/bin/env bash
# bench-zdbfs.sh — `qsfs zdbfs` over `qsfs zdb` against a directory on the same
# disk. Every test runs ROUNDS times, native and zdbfs interleaved (the order
# rotates each round), and the table shows the median with the range, so a
# slow spell of the VM hits every side. Each round starts every zdbfs on a
# fresh zdb (zdb only appends: the fio jobs alone leave gigabytes of old
# versions behind, and two mounts' worth of them filled this VM's disk; a
# fresh stack also avoids carrying a previous round's memory state over).
# Where the kernel has FUSE over
# io_uring, a second zdbfs (own zdb) runs with -o uring=on next to the first
# (-o uring=off): the fuse module's enable_uring parameter is set to Y for the
# run and restored afterwards. Needs root (drop_caches, FUSE), dd, fio and
# bin/qsfs (`make build`). Prints a markdown section on stdout; progress on
# stderr.
#
#   BENCH_DIR   where to work (default /var/tmp; must be on the disk measured)
#   QSFS_BIN    binary (default bin/qsfs)
#   ROUNDS      rounds per test (default 3)
#   FIO_RUNTIME seconds per fio job (default 10)
#   DD_MIB      size of the dd test (default 1024)
#   NFILES      number of 4 KiB files (default 10000)
#   ZDBFS_OPTS  extra -o options for zdbfs (default none)
#   URING       0 = skip the io_uring mount (default 1 where the kernel has it)
#   CEILING     0 = skip the FUSE ceiling (default 1): zdbfs/cmd/fuseceiling, a FUSE
#               server with no file system behind it, mounted twice (discarding
#               WRITE data, and storing it in a zdb as 128 KiB SETs), joins the
#               rounds of the write tests (dd write, small files, fio writes);
#               needs go to build it
set -euo pipefail

cd "$(dirname "$0")/.."
QSFS_BIN=${QSFS_BIN:-bin/qsfs}
QSFS_BIN=$(realpath "$QSFS_BIN")
BENCH_DIR=${BENCH_DIR:-/var/tmp}
ROUNDS=${ROUNDS:-3}
FIO_RUNTIME=${FIO_RUNTIME:-10}
DD_MIB=${DD_MIB:-1024}
NFILES=${NFILES:-10000}
ZDBFS_OPTS=${ZDBFS_OPTS:-}
URING=${URING:-1}
CEILING=${CEILING:-1}
URING_PARAM=/sys/module/fuse/parameters/enable_uring
[[ -w $URING_PARAM ]] || URING=0

[[ $EUID -eq 0 ]] || { echo "bench-zdbfs: needs root" >&2; exit 1; }
[[ -x $QSFS_BIN ]] || { echo "bench-zdbfs: $QSFS_BIN missing; run make build" >&2; exit 1; }
for tool in dd fio fusermount3 awk sort; do
	command -v $tool >/dev/null || { echo "bench-zdbfs: needs $tool" >&2; exit 1; }
done

W=$(mktemp -d "$BENCH_DIR/qsfs-bench-zdbfs.$$.XXXX")
mkdir -p "$W/native"
TARGETS=(native zdbfs)
((URING)) && TARGETS+=(uring)
# the FUSE ceiling's mounts: no storage, and WRITE data stored in a zdb
CEIL=()
if ((CEILING)); then
	if CGO_ENABLED=0 go build -o "$W/fuseceiling" ./zdbfs/cmd/fuseceiling; then
		CEIL=(null fwd)
	else
		echo "bench-zdbfs: could not build zdbfs/cmd/fuseceiling; no FUSE ceiling" >&2
	fi
fi
declare -A ZDB_PID ZDBFS_PID
URING_OLD=
cleanup() {
	local t mnt
	for t in zdbfs uring null fwd; do
		mnt=$W/mnt.$t
		if grep -qs " $mnt fuse\.[a-z]* " /proc/mounts; then fusermount3 -u "$mnt" || umount -l "$mnt" || true; fi
		[[ -n ${ZDBFS_PID[$t]:-} ]] && kill "${ZDBFS_PID[$t]}" 2>/dev/null && wait "${ZDBFS_PID[$t]}" 2>/dev/null || true
		[[ -n ${ZDB_PID[$t]:-} ]] && kill "${ZDB_PID[$t]}" 2>/dev/null && wait "${ZDB_PID[$t]}" 2>/dev/null || true
	done
	[[ -n $URING_OLD ]] && echo "$URING_OLD" >"$URING_PARAM"
	rm -rf "$W"
}
trap cleanup EXIT

log() { echo "bench-zdbfs: $*" >&2; }
now() { date +%s.%N; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }

# start_stack <target> <uring mode>: a zdb and a zdbfs mounted at $W/mnt.<target>
start_stack() {
	local t=$1 mnt=$W/mnt.$1
	mkdir -p "$mnt"
	"$QSFS_BIN" zdb --socket "$W/zdb.$t.sock" --data "$W/zdb.$t/data" --index "$W/zdb.$t/index" >"$W/zdb.$t.log" 2>&1 &
	ZDB_PID[$t]=$!
	for _ in $(seq 100); do [[ -S $W/zdb.$t.sock ]] && break; sleep 0.1; done
	"$QSFS_BIN" zdbfs -o "autons,unix=$W/zdb.$t.sock,uring=$2${ZDBFS_OPTS:+,$ZDBFS_OPTS}" "$mnt" >"$W/zdbfs.$t.log" 2>&1 &
	ZDBFS_PID[$t]=$!
	for _ in $(seq 100); do grep -qs " $mnt fuse.zdbfs " /proc/mounts && break; sleep 0.1; done
	grep -qs " $mnt fuse.zdbfs " /proc/mounts || { cat "$W/zdbfs.$t.log" >&2; exit 1; }
}
# stop_stack <target>: records the peak memory (max) and CPU (sum) of its
# zdbfs and zdb, unmounts, stops them and removes the zdb's files
declare -A HWM_FS HWM_DB CPU_FS CPU_DB
stop_stack() {
	local t=$1 mnt=$W/mnt.$1 v
	v=$(hwm "${ZDBFS_PID[$t]}")
	((v > ${HWM_FS[$t]:-0})) && HWM_FS[$t]=$v
	v=$(hwm "${ZDB_PID[$t]}")
	((v > ${HWM_DB[$t]:-0})) && HWM_DB[$t]=$v
	CPU_FS[$t]=$(awk -v a="${CPU_FS[$t]:-0}" -v b="$(cpu "${ZDBFS_PID[$t]}")" 'BEGIN { print a + b }')
	CPU_DB[$t]=$(awk -v a="${CPU_DB[$t]:-0}" -v b="$(cpu "${ZDB_PID[$t]}")" 'BEGIN { print a + b }')
	fusermount3 -u "$mnt" || umount -l "$mnt"
	wait "${ZDBFS_PID[$t]}" 2>/dev/null || true
	kill "${ZDB_PID[$t]}" && wait "${ZDB_PID[$t]}" 2>/dev/null || true
	ZDBFS_PID[$t]= ZDB_PID[$t]=
	rm -rf "$W/zdb.$t" "$W/zdb.$t.sock"
}
# start_ceiling <null|fwd>: fuseceiling mounted at $W/mnt.<target>; fwd
# stores WRITE data in its own zdb (sequential mode)
start_ceiling() {
	local t=$1 mnt=$W/mnt.$1 args=()
	mkdir -p "$mnt"
	if [[ $t == fwd ]]; then
		"$QSFS_BIN" zdb --mode seq --socket "$W/zdb.$t.sock" --data "$W/zdb.$t/data" --index "$W/zdb.$t/index" >"$W/zdb.$t.log" 2>&1 &
		ZDB_PID[$t]=$!
		for _ in $(seq 100); do [[ -S $W/zdb.$t.sock ]] && break; sleep 0.1; done
		args=(-zdb "$W/zdb.$t.sock")
	fi
	"$W/fuseceiling" "${args[@]}" "$mnt" >"$W/fuseceiling.$t.log" 2>&1 &
	ZDBFS_PID[$t]=$!
	for _ in $(seq 100); do grep -qs " $mnt fuse.fuseceiling " /proc/mounts && break; sleep 0.1; done
	grep -qs " $mnt fuse.fuseceiling " /proc/mounts || { cat "$W/fuseceiling.$t.log" >&2; exit 1; }
}
stop_ceiling() {
	local t=$1
	umount "$W/mnt.$t" || umount -l "$W/mnt.$t"
	wait "${ZDBFS_PID[$t]}" 2>/dev/null || true
	if [[ -n ${ZDB_PID[$t]:-} ]]; then kill "${ZDB_PID[$t]}" && wait "${ZDB_PID[$t]}" 2>/dev/null || true; fi
	ZDBFS_PID[$t]= ZDB_PID[$t]=
	rm -rf "$W/zdb.$t" "$W/zdb.$t.sock"
}
is_ceiling() { [[ $1 == null || $1 == fwd ]]; }

if ((URING)); then
	URING_OLD=$(cat "$URING_PARAM")
	echo Y >"$URING_PARAM"
fi

# R[<test>.<target>] holds the space-separated results of every round.
declare -A R
put() { R[$1.$2]="${R[$1.$2]:-} $3"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

dir_of() { if [[ $1 == native ]]; then echo "$W/native"; else echo "$W/mnt.$1"; fi; }

# The tests. Each one leaves no dirty data behind (sync, untimed), so the
# next test does not pay for it.
t_dd() { # write then cold read
	local target=$1 dir t0 s
	dir=$(dir_of "$target")
	drop
	t0=$(now)
	dd if=/dev/zero of="$dir/dd.dat" bs=1M count="$DD_MIB" conv=fsync status=none
	s=$(since "$t0")
	put ddw "$target" "$(mbps $((DD_MIB << 20)) "$s")"
	if is_ceiling "$target"; then # it keeps no data to read back
		rm -f "$dir/dd.dat"
		return
	fi
	drop
	t0=$(now)
	dd if="$dir/dd.dat" of=/dev/null bs=1M status=none
	s=$(since "$t0")
	put ddr "$target" "$(mbps $((DD_MIB << 20)) "$s")"
	rm -f "$dir/dd.dat"
	sync
}

t_small() { # create NFILES x 4 KiB in a fresh directory, then ls -l cold
	local target=$1 round=$2 dir d t0 s
	dir=$(dir_of "$target")
	d=$dir/small.$round
	mkdir "$d"
	drop
	t0=$(now)
	for ((i = 0; i < NFILES; i++)); do printf '%4096s' '' >"$d/f$i"; done
	s=$(since "$t0")
	put create "$target" "$(awk -v n="$NFILES" -v s="$s" 'BEGIN { printf "%.0f", n / s }')"
	is_ceiling "$target" && return # it does not list directories
	drop
	t0=$(now)
	ls -l "$d" >/dev/null
	s=$(since "$t0")
	put ls "$target" "$(awk -v s="$s" 'BEGIN { printf "%.3f", s }')"
	# the files stay until the end: ext4 slows down inode allocation for
	# 30 s after a mass delete, which would penalise the next native round
}

fio_job() { # fio_job <target> <rw> <bs> <key>
	local dir rw=$2 bs=$3 key=$4 out
	dir=$(dir_of "$1")
	[[ $rw == read || $rw == randread ]] && drop
	out=$(fio --name=b --directory="$dir" --filename=fio.dat --size=512M --rw="$rw" --bs="$bs" \
		--ioengine=psync --iodepth=1 --end_fsync=1 --time_based --runtime="$FIO_RUNTIME" \
		--output-format=terse --terse-version=3 2>/dev/null)
	# terse v3: field 7/8 = read bw KiB/s / iops, 48/49 = write bw KiB/s / iops
	case $rw in
	read) put "$key" "$1" "$(awk -F';' '{printf "%.0f", $7 * 1024 / 1e6}' <<<"$out")" ;;
	write) put "$key" "$1" "$(awk -F';' '{printf "%.0f", $48 * 1024 / 1e6}' <<<"$out")" ;;
	randread) put "$key" "$1" "$(awk -F';' '{print $8}' <<<"$out")" ;;
	randwrite) put "$key" "$1" "$(awk -F';' '{print $49}' <<<"$out")" ;;
	esac
	sync
}

t_fio() {
	local target=$1 job jobs=("write 1M seqw" "read 1M seqr" "randwrite 4k randw" "randread 4k randr")
	# the FUSE ceiling keeps no data to read back
	is_ceiling "$target" && jobs=("write 1M seqw" "randwrite 4k randw")
	# the file is laid out once by the first job and reused by the others
	for job in "${jobs[@]}"; do
		set -- $job
		fio_job "$target" "$1" "$2" "$3"
	done
	rm -f "$(dir_of "$target")/fio.dat"
	sync
}

for ((round = 1; round <= ROUNDS; round++)); do
	start_stack zdbfs off
	((URING)) && start_stack uring on
	for t in "${CEIL[@]}"; do start_ceiling "$t"; done
	for t in dd small fio; do
		# the FUSE ceiling runs the writes only (t_dd, t_small, t_fio)
		all=("${TARGETS[@]}" "${CEIL[@]}")
		# rotate the targets each round: every one runs first, last, ...
		n=${#all[@]} order=()
		for ((i = 0; i < n; i++)); do order+=("${all[(i + round - 1) % n]}"); done
		for target in "${order[@]}"; do
			log "round $round/$ROUNDS: $t on $target"
			"t_$t" "$target" "$round"
		done
	done
	for t in "${TARGETS[@]:1}"; do stop_stack "$t"; done
	for t in "${CEIL[@]}"; do stop_ceiling "$t"; done
done
# usage <target>: the memory and CPU table row of its zdbfs and zdb
usage() {
	local t=$1 name="qsfs zdbfs"
	[[ $t == uring ]] && name="qsfs zdbfs, io_uring"
	printf '| %s | %d MiB | %.1f s |\n' "$name" $((HWM_FS[$t] / 1024)) "${CPU_FS[$t]}"
	printf '| qsfs zdb (of that zdbfs) | %d MiB | %.1f s |\n' $((HWM_DB[$t] / 1024)) "${CPU_DB[$t]}"
}
USAGE=$(for t in "${TARGETS[@]:1}"; do usage "$t"; done)

# med <values...>: the median; range <values...>: min–max
med() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "–" hi }'; }
# row <label> <test> <higher-is-better: 1|0>: native, then each zdbfs with its ratio
row() { row_of "$@" "${TARGETS[@]:1}"; }
# row_of <label> <test> <higher-is-better> <target...>: native, then each target with its ratio
row_of() {
	local n z mn mz ratio t line label=$1 test=$2 hib=$3
	shift 3
	# shellcheck disable=SC2086
	n=(${R[$test.native]})
	mn=$(med "${n[@]}")
	line="| $label | $mn ($(range "${n[@]}")) |"
	for t in "$@"; do
		# shellcheck disable=SC2086
		z=(${R[$test.$t]})
		mz=$(med "${z[@]}")
		if [[ $hib == 1 ]]; then
			ratio=$(awk -v a="$mn" -v b="$mz" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "n/a" }')
		else
			ratio=$(awk -v a="$mn" -v b="$mz" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
		fi
		line+=" $mz ($(range "${z[@]}")) | **$ratio** |"
	done
	echo "$line"
}
# of <test> <a> <b>: the median of target a over the median of target b
of() {
	# shellcheck disable=SC2086
	awk -v a="$(med ${R[$1.$2]})" -v b="$(med ${R[$1.$3]})" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
}
# ceiling_section: the FUSE ceiling's table, when it ran
ceiling_section() {
	((${#CEIL[@]})) || return 0
	cat <<CEILMD

### The FUSE ceiling on this machine

\`zdbfs/cmd/fuseceiling\` is a FUSE server with no file system behind it, mounted with the settings of zdbfs
that shape the kernel's requests (writeback cache, 1 MiB writes, 16 background requests, one-second times, FLUSH
answered ENOSYS): it keeps names in a map and answers from memory (it serves writes only, so the read tests leave it
out). "No storage" discards WRITE data: what FUSE itself costs here, the most a file system over \`/dev/fuse\` can
expect. "→ zdb" stores the data as 128 KiB SETs in a \`qsfs zdb\` with the client zdbfs uses (a pipeline per WRITE,
one \`writev\`) and answers once zdb has it, with no cache, metadata or write-back: what the FUSE hop plus zdb's
ingest cost when nothing else is done. Its mounts ran in the same interleaved rounds as the table above.

| test | native | FUSE, no storage | ratio | FUSE → zdb | ratio | zdbfs, /dev/fuse | ratio |
|---|---|---|---|---|---|---|---|
$(row_of "dd write ${DD_MIB} MiB \`bs=1M conv=fsync\` (MB/s)" ddw 1 null fwd zdbfs)
$(row_of "create ${NFILES} × 4 KiB files (files/s)" create 1 null fwd zdbfs)
$(row_of "fio seq write 1M, end_fsync (MB/s)" seqw 1 null fwd zdbfs)
$(row_of "fio randwrite 4k, end_fsync (IOPS)" randw 1 null fwd zdbfs)

zdbfs, per median: $(of ddw zdbfs fwd) of the → zdb server's \`dd\` write, $(of seqw zdbfs fwd) of its fio sequential write, and
$(of create zdbfs null) of the no-storage server's file creation (the → zdb server stores each small file before it answers,
zdbfs writes it back later, so for small files the no-storage server is the reference). Near 1, zdbfs is as fast as
a server with no file system behind it: what remains is FUSE's and zdb's own cost on this machine. For random 4 KiB
writes the → zdb server stores each page as it comes, while zdbfs reads, changes and writes the 128 KiB block the
page belongs to (the layout's block size).
CEILMD
}

# the table head: one pair of columns per zdbfs
head_cols() {
	local h="| test | native |" u="|---|---|"
	h+=" zdbfs, /dev/fuse | ratio |"
	u+="---|---|"
	if ((URING)); then
		h+=" zdbfs, io_uring | ratio |"
		u+="---|---|"
	fi
	printf '%s\n%s\n' "$h" "$u"
}
# uring_note: which transports ran, and how
uring_note() {
	if ((URING)); then
		echo "Two zdbfs mounts ran, each over its own zdb: one with \`-o uring=off\` (requests read from /dev/fuse),"
		echo "one with \`-o uring=on\` (FUSE over io_uring, served on the CPU that made the request; the fuse module's"
		echo "\`enable_uring\` parameter was set to Y for the run and put back to ${URING_OLD:-its value} afterwards). zdbfs's default,"
		echo "\`uring=auto\`, uses io_uring when the kernel offers it, i.e. when \`enable_uring\` is Y."
	else
		echo "FUSE over io_uring was not measured (kernel without it, or URING=0): zdbfs read requests from /dev/fuse."
	fi
}

# idle_note: how this machine's idle CPUs wake up, which bounds every FUSE
# round trip between two CPUs (small-file creation above all)
idle_note() {
	local drv poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
	drv=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null) || return 0
	echo
	if [[ $drv == haltpoll && -r $poll ]]; then
		echo "CPU idle: cpuidle driver haltpoll, guest_halt_poll_ns = $(cat $poll)."
		if [[ $(cat $poll) == 0 ]]; then
			echo "With guest halt polling off, an idle vCPU halts at once and every wake-up from the other vCPU is a VM exit:"
			echo "each FUSE request pays two. See docs/zdbfs.md (small files) for what this costs."
		fi
	else
		echo "CPU idle: cpuidle driver $drv, governor $(cat /sys/devices/system/cpu/cpuidle/current_governor 2>/dev/null || echo unknown)."
	fi
}

cat <<MD
## zdbfs

\`qsfs zdbfs\` over \`qsfs zdb\` (unix socket, mixed mode, \`-o autons${ZDBFS_OPTS:+,$ZDBFS_OPTS}\`) against a directory
on the same disk ($(df --output=source "$BENCH_DIR" | tail -1), $(nproc) CPUs, kernel $(uname -r)). Each test ran
$ROUNDS times, native and zdbfs interleaved; cells are the median (min–max). Ratio = zdbfs / native of the medians
(for \`ls -l\`, native time / zdbfs time): higher is better, 1.00 is parity.
$(uring_note)

$(head_cols)
$(row "dd write ${DD_MIB} MiB \`bs=1M conv=fsync\` (MB/s)" ddw 1)
$(row "dd cold read after drop_caches (MB/s)" ddr 1)
$(row "create ${NFILES} × 4 KiB files (files/s)" create 1)
$(row "\`ls -l\` of them, cold (s)" ls 0)
$(row "fio seq write 1M, end_fsync (MB/s)" seqw 1)
$(row "fio seq read 1M, cold (MB/s)" seqr 1)
$(row "fio randwrite 4k, end_fsync (IOPS)" randw 1)
$(row "fio randread 4k, cold (IOPS)" randr 1)

| process | peak RSS (VmHWM, highest round) | CPU time (all rounds) |
|---|---|---|
$USAGE

What the numbers mean: zdbfs's \`fsync\` returns when zdb holds the data (written to zdb's files, as with the
official zdbfs and zdb without \`--sync\`), while native \`fsync\` waits for the disk; \`sync\` runs untimed
after every test, so nobody pays for the previous test's write-back. Cold reads drop the kernel caches; zdbfs's
own block cache (\`cachesize\`, default 64 MiB) is not dropped. 4 KiB files are written by a shell loop without
forking (\`printf\` builtin) into a fresh directory per round. fio: 512 MiB file, psync, iodepth 1, ${FIO_RUNTIME} s
time-based, buffered. A random 4 KiB read fetches a whole 128 KiB block from zdb; from the second partial read of a
block on, zdbfs also hands the rest of it to the kernel's page cache, so random reads over a file that fits in
memory turn into page cache hits within the run (natively every 4 KiB page is read from disk once).
$(idle_note)
$(ceiling_section)
MD
