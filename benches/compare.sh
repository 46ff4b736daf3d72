#!/usr/bin/env bash
# Compares keyward with etcd on this machine, with `keyward bench` as the load tool for both.
#
#   benches/compare.sh           release build (cargo build --release), ~10 s per workload in
#                                three rounds, and a store loaded with 100,000 Secrets for its
#                                memory use (~10 min + build)
#   benches/compare.sh --short   an existing binary (KEYWARD_BIN, default target/debug/keyward),
#                                ~2 s per workload, 200 keys, a 2,000-seed storm, 2,000 Secrets for
#                                the memory figure: a smoke run for CI (about a minute), not a
#                                measurement
#
# What runs, all on loopback and on the same disk (a temp dir under target/, refused if tmpfs):
#   - etcd (one member, default settings; installed with apt-get if missing)
#   - keyward dev with its default EncryptionConfiguration (kms v2 through its own plugin)
#   - keyward dev with an identity EncryptionConfiguration (the cost of encryption)
#   - keyward kms serve alone (the KMS workloads, and the plugin's own memory)
# The store workloads (put, get, list, mixed, watch; 16 clients, 1 KiB values) run against both
# keyward stores and against etcd, one target after the other for each workload. The KMS
# workloads are Decrypt and the gRPC health floor at 64 concurrent, a 10,000-seed decrypt storm,
# and the raw Unix-socket ping-pong floor.
#
# Output (KEYWARD_COMPARE_OUT, default target/bench-compare): one JSON report per run, memory.json,
# machine.json, results.json (everything, with ratios and targets), table.md (printed at the end)
# and latency.svg (latency percentiles). Needs etcd, python3 and cargo; nothing else.
# Environment: KEYWARD_BIN (binary to use; skips the build), KEYWARD_ETCD_BIN (default etcd),
# KEYWARD_COMPARE_SHORT=1 (same as --short), KEYWARD_COMPARE_KEEP=1 (keep the temp dir and logs),
# KEYWARD_COMPARE_BACKEND=log|sled (the engine of both keyward dev stores, default log: the default engine),
# KEYWARD_COMPARE_ROUNDS=N (rounds of each store workload: 3 in full mode, 1 in short mode; the
# three targets run back to back in each round, in an order that turns, and the report takes
# the median of the per-round ratios: one 10 s run per target swung the put ratio by ±0.1).
set -Eeuo pipefail
trap 'echo "compare.sh: line $LINENO failed (exit $?): $BASH_COMMAND" >&2' ERR

usage() { sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

short=${KEYWARD_COMPARE_SHORT:-0}
for arg in "$@"; do
  case "$arg" in
    --short) short=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

backend=${KEYWARD_COMPARE_BACKEND:-log}
case "$backend" in
  sled | log) ;;
  *) echo "compare.sh: KEYWARD_COMPARE_BACKEND must be sled or log, not $backend" >&2; exit 2 ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

die() { echo "compare.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed (for the report and the chart)"

if [ "$short" = 1 ]; then
  mode=short duration=2s warmup=300ms keys=200 storm=2000 load_keys=2000 rounds=${KEYWARD_COMPARE_ROUNDS:-1}
  bin=${KEYWARD_BIN:-target/debug/keyward}
  [ -x "$bin" ] || die "$bin not found: build it first (cargo build) or set KEYWARD_BIN"
else
  mode=full duration=10s warmup=1s keys=1000 storm=10000 load_keys=100000 rounds=${KEYWARD_COMPARE_ROUNDS:-3}
  if [ -n "${KEYWARD_BIN:-}" ]; then
    bin=$KEYWARD_BIN
  else
    echo "== cargo build --release"
    cargo build --release --locked --bin keyward
    bin=target/release/keyward
  fi
  [ -x "$bin" ] || die "$bin is not an executable"
fi
[[ $rounds =~ ^[1-9][0-9]?$ ]] || die "KEYWARD_COMPARE_ROUNDS must be a whole number from 1 to 99, not $rounds"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

etcd_bin=${KEYWARD_ETCD_BIN:-etcd}
if ! command -v "$etcd_bin" >/dev/null; then
  [ "$(id -u)" = 0 ] || die "etcd is not installed and this is not root: apt-get install etcd-server"
  echo "== installing etcd-server"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  command -v "$etcd_bin" >/dev/null || die "etcd-server installed but $etcd_bin is not on PATH"
fi

out=${KEYWARD_COMPARE_OUT:-$repo/target/bench-compare}
mkdir -p "$out"
rm -f "$out"/*.json "$out"/table.md "$out"/latency.svg

mkdir -p "$repo/target"
work=$(mktemp -d "$repo/target/compare.XXXXXX")
pids=()
cleanup() {
  local rc=$? pid i
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" != 0 ]; then
    for f in "$work"/*.log; do
      [ -s "$f" ] && { echo "--- $f (last lines)" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  if [ "${KEYWARD_COMPARE_KEEP:-0}" = 1 ]; then
    echo "kept $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fstype=$(stat -f -c %T "$work")
[ "$fstype" != tmpfs ] && [ "$fstype" != ramfs ] ||
  die "$work is on $fstype; durable-write figures need a real disk"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(loadavg)
if ! python3 -c "import os, sys; sys.exit(os.getloadavg()[0] > 0.5 * os.cpu_count())"; then
  echo "warning: load average is $load_before on $(nproc) CPUs: other work will disturb the figures" >&2
fi

# Waits for a file (a socket) to appear while process $2 is alive.
wait_for() {
  local path=$1 pid=$2 i
  for i in $(seq 1 300); do
    [ -e "$path" ] && return 0
    kill -0 "$pid" 2>/dev/null || die "process $pid exited before $path appeared"
    sleep 0.1
  done
  die "$path did not appear within 30 s"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

echo "== starting etcd, keyward dev (kms v2), keyward dev (identity) on $backend, keyward kms serve in $work"
client_port=$(free_port)
peer_port=$(free_port)
etcd_url=http://127.0.0.1:$client_port
"$etcd_bin" --name compare --data-dir "$work/etcd" \
  --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "compare=http://127.0.0.1:$peer_port" --initial-cluster-state new \
  --logger zap --log-level warn </dev/null >"$work/etcd.log" 2>&1 &
etcd_pid=$!
pids+=("$etcd_pid")

mkdir -p "$work/kw-kms" "$work/kw-identity"
"$bin" dev --data "$work/kw-kms" --backend "$backend" </dev/null >"$work/dev-kms.log" 2>&1 &
dev_kms_pid=$!
pids+=("$dev_kms_pid")
# keyward dev writes its EncryptionConfiguration only if there is none: give it identity.
cat >"$work/kw-identity/encryption-config.yaml" <<'YAML'
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - identity: {}
YAML
"$bin" dev --data "$work/kw-identity" --backend "$backend" </dev/null >"$work/dev-identity.log" 2>&1 &
dev_identity_pid=$!
pids+=("$dev_identity_pid")

"$bin" kms init --data "$work/plugin" --generate-keyfile "$work/plugin-root.key" >/dev/null
"$bin" kms serve --data "$work/plugin" --seal "keyfile:$work/plugin-root.key" \
  --socket "$work/plugin.sock" --admin-socket "$work/plugin-admin.sock" \
  </dev/null >"$work/plugin.log" 2>&1 &
plugin_pid=$!
pids+=("$plugin_pid")

wait_for "$work/kw-kms/keyward.sock" "$dev_kms_pid"
wait_for "$work/kw-identity/keyward.sock" "$dev_identity_pid"
wait_for "$work/plugin.sock" "$plugin_pid"
python3 - "$etcd_url/health" <<'PY' || die "etcd did not become healthy; see $work/etcd.log"
import sys, time, urllib.request
deadline = time.time() + 30
while time.time() < deadline:
    try:
        if b'"health":"true"' in urllib.request.urlopen(sys.argv[1], timeout=2).read():
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
PY

clk=$(getconf CLK_TCK)
# CPU seconds (user + system) process $1 has used so far; 0 for "-".
cpu_of() {
  if [ "$1" = - ]; then echo 0; else awk -v t="$clk" '{print ($14 + $15) / t}' "/proc/$1/stat"; fi
}
# CPU seconds used by this shell's finished children (the bench runs).
children_cpu() { awk -v t="$clk" '{print ($16 + $17) / t}' "/proc/$$/stat"; }

# run NAME SERVER_PID ARGS...: one `keyward bench` run, its JSON report in $out/NAME.json, with
# the CPU time the server process (SERVER_PID, or - for none) and the bench client used over the
# whole run (setup and warm-up included) and the run's wall time added.
run() {
  local name=$1 server=$2 s0 c0 t0 s1 c1 t1
  shift 2
  s0=$(cpu_of "$server") c0=$(children_cpu) t0=$(date +%s.%N)
  "$bin" bench "$@" --output json >"$out/$name.json"
  t1=$(date +%s.%N) c1=$(children_cpu) s1=$(cpu_of "$server")
  python3 - "$out/$name.json" "$name" "$s0" "$s1" "$c0" "$c1" "$t0" "$t1" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
s0, s1, c0, c1, t0, t1 = map(float, sys.argv[3:])
r = json.load(open(path))
r["server_cpu_seconds"] = round(s1 - s0, 3)
r["client_cpu_seconds"] = round(c1 - c0, 3)
r["wall_seconds"] = round(t1 - t0, 3)
json.dump(r, open(path, "w"))
l = r["latency_us"]
print(f"  {name:<24} {r['calls_per_second']:>10.0f} calls/s  p50 {l['p50']:>6} µs  "
      f"p99 {l['p99']:>6} µs  errors {r['errors']}  cpu server {s1 - s0:.1f} s client {c1 - c0:.1f} s "
      f"in {t1 - t0:.1f} s")
PY
}

# VmRSS and VmHWM (peak) of a process, in KiB, as JSON fields.
rss() {
  awk -v p="$2" '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} END {printf "\"%s_rss_kib\": %d, \"%s_hwm_kib\": %d", p, r, p, h}' \
    "/proc/$1/status"
}

store_flags=(--concurrency 16 --connections 4 --value-size 1KiB --keys "$keys"
  --duration "$duration" --warmup "$warmup")
echo "== store workloads ($mode: $duration each after $warmup warm-up, 16 clients, 1 KiB values, $keys keys)"
# store_run TARGET OP ROUND: one store workload against one target; rounds after the first
# write their report as NAME@ROUND.
store_run() {
  local name="store-$1-$2"
  [ "$3" = 1 ] || name+="@$3"
  case $1 in
    kmsv2) run "$name" "$dev_kms_pid" store --server "unix://$work/kw-kms/keyward.sock" --op "$2" "${store_flags[@]}" ;;
    identity) run "$name" "$dev_identity_pid" store --server "unix://$work/kw-identity/keyward.sock" --op "$2" "${store_flags[@]}" ;;
    etcd) run "$name" "$etcd_pid" store --etcd "$etcd_url" --op "$2" "${store_flags[@]}" ;;
  esac
}
for op in put get list mixed watch; do
  for r in $(seq "$rounds"); do
    # The targets of a round run back to back; the order turns each round so that none always
    # runs first (after the previous workload) or last.
    case $(( (r - 1) % 3 )) in
      0) order=(kmsv2 identity etcd) ;;
      1) order=(identity etcd kmsv2) ;;
      2) order=(etcd kmsv2 identity) ;;
    esac
    [ "$rounds" = 1 ] || echo "  round $r of $op"
    for t in "${order[@]}"; do store_run "$t" "$op" "$r"; done
  done
done
store_mem_1k=$(rss "$dev_kms_pid" store_after_workloads)

echo "== KMS workloads (64 concurrent on 4 connections; keyward kms serve alone)"
kms_flags=(--endpoint "unix://$work/plugin.sock" --concurrency 64 --connections 4)
run kms-health "$plugin_pid" kms "${kms_flags[@]}" --op health --duration "$duration" --warmup "$warmup"
run kms-decrypt "$plugin_pid" kms "${kms_flags[@]}" --op decrypt --duration "$duration" --warmup "$warmup"
run kms-storm "$plugin_pid" kms "${kms_flags[@]}" --storm "$storm"
run unix-pingpong - unix-pingpong --concurrency 64 --connections 4 --payload 64 \
  --duration "$duration" --warmup "$warmup"
plugin_mem=$(rss "$plugin_pid" plugin)

echo "== loading $load_keys Secrets of 1 KiB into the kms v2 store"
t0=$(date +%s.%N)
run store-load "$dev_kms_pid" store --server "unix://$work/kw-kms/keyward.sock" --op get --keys "$load_keys" \
  --concurrency 16 --connections 4 --value-size 1KiB --requests 1000 --warmup 0s
t1=$(date +%s.%N)
store_mem=$(rss "$dev_kms_pid" store_loaded)
store_du=$(du -sk "$work/kw-kms/store" | cut -f1)
etcd_du=$(du -sk "$work/etcd" | cut -f1)
cat >"$out/memory.json" <<JSON
{$plugin_mem, $store_mem_1k, $store_mem, "secrets_loaded": $load_keys,
 "load_seconds": $(python3 -c "print(round($t1 - $t0, 3))"),
 "store_dir_kib": $store_du, "etcd_dir_kib": $etcd_du}
JSON

load_after=$(loadavg)
python3 - "$out/machine.json" <<PY
import json, os, platform, subprocess, sys, time
def first(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"
model = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
json.dump({
    "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "mode": "$mode", "store_backend": "$backend", "duration": "$duration", "warmup": "$warmup", "keys": $keys, "rounds": $rounds,
    "nproc": os.cpu_count(), "cpu": model, "memory_gib": round(mem_kib / 2**20, 1),
    "kernel": platform.release(), "fs": "$fstype",
    "etcd": first(["$etcd_bin", "--version"]), "keyward": first(["$bin", "--version"]),
    "binary": "$bin", "load_before": "$load_before", "load_after": "$load_after",
}, open(sys.argv[1], "w"), indent=1)
PY

python3 benches/compare_report.py "$out"
python3 benches/chart.py "$out/results.json" "$out/latency.svg"
echo "== results in $out (table.md, results.json, latency.svg)"
