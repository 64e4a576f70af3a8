#!/usr/bin/env bash
# `make bench`: runs every scripts/bench-*.sh (each prints a markdown
# section) and writes docs/benchmarks.md with the date and the machine.
set -uo pipefail
cd "$(dirname "$0")/.."
out=docs/benchmarks.md
tmp=$(mktemp)
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh) on the machine below; each section says how it measured"
  echo "(the zdbfs section: medians of interleaved rounds). Nothing in the test suite asserts these numbers."
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(uname -sr), $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM"
  echo "- Disk: $(df -h --output=source,fstype,size . | tail -1 | awk '{print $1" ("$2", "$3")"}')"
  echo "- qsfs: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  for s in scripts/bench-*.sh; do
    [ -e "$s" ] || continue
    echo
    echo "<!-- $s -->"
    if ! bash "$s"; then
      echo
      echo "_$s failed; see its output._"
    fi
  done
} >"$tmp"
mkdir -p docs
mv "$tmp" "$out"
echo "wrote $out"
