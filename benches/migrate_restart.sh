#!/usr/bin/env bash
# `keyward migrate` through the CLI against a running `keyward dev` holding N 1 KiB Secrets after
# a KEK rotation, its memory before and after, and the restart time of `keyward dev` with those
# Secrets after a clean stop and after `kill -9` (right after the migration, so the write-ahead
# log holds what the migration wrote since the last checkpoint).
#   benches/migrate_restart.sh BIN [N=100000]
# Prints: load time, RSS after loading, migrate time and rate, RSS after migrating (and the peak),
# server CPU of the migration, the store directory's size, and the two restart times (from start
# until `keyward get secrets -n empty` answers). KEYWARD_SIDE_KEEP=1 keeps the data directory;
# KEYWARD_MIGRATE_ARGS adds arguments to `keyward migrate` (e.g. --batch-size 1024);
# KEYWARD_BACKEND=sled runs keyward dev on sled (default log, the default engine).
set -Eeuo pipefail
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") n=${2:-100000}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$repo/target/sidebench"
work=$(mktemp -d "$repo/target/sidebench/mig.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null || true; sleep 2; kill -KILL "$pid" 2>/dev/null || true; }
  [ "${KEYWARD_SIDE_KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
clk=$(getconf CLK_TCK)
cpu() { awk -v t="$clk" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
rss() { awk '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} END {printf "RSS %.1f MiB (peak %.1f MiB)", r/1024, h/1024}' "/proc/$1/status"; }
now() { date +%s.%N; }
sock=$work/dev/keyward.sock
# Starts keyward dev (its pid in $pid) and sets $took to the seconds until it answers a list
# of an empty namespace.
start() {
  local t0 t1
  t0=$(now)
  "$bin" dev --data "$work/dev" --backend "${KEYWARD_BACKEND:-log}" >>"$work/dev.log" 2>&1 &
  pid=$!
  until "$bin" get secrets -n empty --server "unix://$sock" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { tail "$work/dev.log"; exit 1; }
    sleep 0.02
  done
  t1=$(now)
  took=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
}
mkdir -p "$work/dev"
echo "binary $bin; $n Secrets; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start; echo "first start: $took s"
t0=$(now)
"$bin" bench store --server "unix://$sock" --op get --keys "$n" --concurrency 16 --connections 4 \
  --value-size 1KiB --requests 1000 --warmup 0s >/dev/null
t1=$(now)
echo "loaded $n in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s; $(rss $pid)"
"$bin" kms rotate --admin-socket "$work/dev/kms-admin.sock" >/dev/null
c0=$(cpu $pid); t0=$(now)
"$bin" migrate --server "unix://$sock" ${KEYWARD_MIGRATE_ARGS:-} >"$work/migrate.out" 2>&1
t1=$(now); c1=$(cpu $pid)
tail -n 2 "$work/migrate.out"
python3 -c "d=$t1 - $t0; c=$c1 - $c0; print(f'migrate: {d:.2f} s, {$n / d:,.0f} objects/s, server CPU {c:.1f} s ({1e6 * c / $n:.0f} µs/object)')"
echo "after migrate: $(rss $pid); store dir $(du -sh "$work/dev/store" | cut -f1); wal $(du -sh "$work/dev/store/wal" 2>/dev/null | cut -f1)"
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
wal=$(du -sh "$work/dev/store/wal" 2>/dev/null | cut -f1 || echo none); start
echo "restart after kill -9 (wal $wal): $took s; $(rss $pid)"
"$bin" migrate --server "unix://$sock" --dry-run 2>&1 | tail -n 1
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
wal=$(du -sh "$work/dev/store/wal" 2>/dev/null | cut -f1 || echo none); start
echo "restart after a clean stop (wal $wal): $took s; $(rss $pid)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
