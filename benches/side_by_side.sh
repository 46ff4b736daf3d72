#!/usr/bin/env bash
# One store workload side by side (16 clients on 4 connections, 1 KiB values, 1,000 keys, kms v2
# through keyward dev's own plugin): keyward BEFORE, keyward AFTER and etcd on the same disk, ROUNDS
# rounds of DURATION each, the three targets in turn within each round so that drift hits them
# alike. OP is any `keyward bench store --op` (put, get, list, mixed, watch).
#   benches/side_by_side.sh OP BEFORE_BIN AFTER_BIN [ROUNDS=3] [DURATION=10s]
# Prints calls/s, p50/p99 and the server's CPU per call (setup and warm-up included) per run, the
# load average before and after, and the size of the three data directories and of the log.
# KEYWARD_SIDE_KEEP=1 keeps the data directories. BEFORE_BIN or AFTER_BIN written `identity:BIN`
# runs that keyward dev with an identity EncryptionConfiguration (values stored in plaintext), so
# that `side_by_side.sh get identity:BIN BIN` measures what kms v2 costs a read; written `log:BIN`
# (or `identity:log:BIN`), it runs keyward dev --backend log, so that `side_by_side.sh put BIN
# log:BIN` compares the two embedded engines with etcd. Odd rounds run
# BEFORE first, even rounds AFTER first (etcd last), so that neither always follows the other.
# RATE=N offers every target the same N calls/s (`bench store --rate N`, an open loop) instead of
# 16 clients as fast as they go: a slower target then does not run fewer calls per wake-up and
# per write, which changes what each call costs. Pick N below the slowest target's closed-loop
# throughput (say 70 %); the line of each run then also gives the achieved rate, the calls
# started late, and the server's CPU per call over the measured window alone (sampled every
# 0.1 s; set-up and warm-up left out, 0.5 s trimmed at each end), which is the figure to compare.
# ETCD=0 leaves etcd out. KEYS=N uses N keys instead of 1,000.
set -Eeuo pipefail
op=$1 before=$2 after=$3 rounds=${4:-3} dur=${5:-10s}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$repo/target/sidebench"
work=$(mktemp -d "$repo/target/sidebench/run.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 2
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  [ "${KEYWARD_SIDE_KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
if [ "${ETCD:-1}" != 0 ]; then
  cp=$(port); pp=$(port); url=http://127.0.0.1:$cp
  etcd --name w --data-dir "$work/etcd" --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls http://127.0.0.1:$pp --initial-advertise-peer-urls http://127.0.0.1:$pp \
    --initial-cluster w=http://127.0.0.1:$pp --initial-cluster-state new --logger zap --log-level warn >"$work/etcd.log" 2>&1 &
  pids+=($!); etcd_pid=$!
fi
mkdir -p "$work/before" "$work/after"
before_backend=sled after_backend=sled
for t in before after; do
  b=${!t}
  if [[ $b == identity:* ]]; then
    b=${b#identity:}
    # keyward dev writes its EncryptionConfiguration only if there is none.
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n' >"$work/$t/encryption-config.yaml"
    echo "$t: identity"
  fi
  if [[ $b == log:* ]]; then
    b=${b#log:}
    printf -v "${t}_backend" log
    echo "$t: --backend log"
  fi
  printf -v "$t" '%s' "$b"
done
"$before" dev --data "$work/before" --backend "$before_backend" >"$work/before.log" 2>&1 & pids+=($!); before_pid=$!
"$after" dev --data "$work/after" --backend "$after_backend" >"$work/after.log" 2>&1 & pids+=($!); after_pid=$!
for s in "$work/before/keyward.sock" "$work/after/keyward.sock"; do for i in $(seq 300); do [ -e "$s" ] && break; sleep 0.1; done; done
sleep 2
clk=$(getconf CLK_TCK)
cpu() { awk -v t="$clk" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
flags=(--op "$op" --concurrency 16 --connections 4 --value-size 1KiB --keys "${KEYS:-1000}" --duration "$dur" --warmup 1s --output json)
rate=${RATE:-}
[ -n "$rate" ] && flags+=(--rate "$rate")
echo "op $op${rate:+ at $rate calls/s}; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  order=(before after); (( r % 2 == 0 )) && order=(after before)
  [ "${ETCD:-1}" = 0 ] || order+=(etcd)
  for t in "${order[@]}"; do
    case $t in
      before) target=(--server "unix://$work/before/keyward.sock"); pid=$before_pid ;;
      after) target=(--server "unix://$work/after/keyward.sock"); pid=$after_pid ;;
      etcd) target=(--etcd "$url"); pid=$etcd_pid ;;
    esac
    if [ -z "$rate" ]; then
      c0=$(cpu $pid)
      "$after" bench store "${target[@]}" "${flags[@]}" > "$work/$t-$r.json" 2>/dev/null
      c1=$(cpu $pid)
      python3 - "$work/$t-$r.json" "$t" "$r" "$c0" "$c1" "$op" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency_us"]
calls = r.get("calls", 0) + r.get("warmup_calls", 0)
cpu = float(sys.argv[5]) - float(sys.argv[4])
print(f"round {sys.argv[3]} {sys.argv[2]:<7} {r['calls_per_second']:>8.0f} {sys.argv[6]}/s  p50 {l['p50']:>6} µs  p99 {l['p99']:>6} µs  errors {r['errors']}  server cpu {cpu:.1f} s ({1e6*cpu/max(calls,1):.1f} µs/call, {calls} calls)")
PY
    else
      # The bench runs under a sampler of the server's CPU, so that the measured window can be
      # cut out afterwards: it ends when the bench exits and lasts its elapsed_seconds.
      python3 - "$work/$t-$r.json" "$t" "$r" "$op" "$pid" "$clk" "$(cut -d' ' -f1 /proc/loadavg)" \
        "$after" bench store "${target[@]}" "${flags[@]}" <<'PY'
import json, subprocess, sys, time
out, t, rnd, op, pid, clk, load = sys.argv[1:8]
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / int(clk)
samples = [(time.monotonic(), cpu())]
with open(out, "w") as o:
    p = subprocess.Popen(sys.argv[8:], stdout=o, stderr=subprocess.DEVNULL)
    while p.poll() is None:
        time.sleep(0.1)
        samples.append((time.monotonic(), cpu()))
end = time.monotonic()
samples.append((end, cpu()))
if p.returncode != 0:
    sys.exit(f"round {rnd} {t}: bench store failed ({p.returncode})")
def at(x):
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        if t0 <= x <= t1:
            return c0 + (c1 - c0) * (x - t0) / max(t1 - t0, 1e-9)
    return samples[0][1] if x < samples[0][0] else samples[-1][1]
r = json.load(open(out)); l = r["latency_us"]
total = samples[-1][1] - samples[0][1]
calls = r["calls"] + r["warmup_calls"]
el = r["elapsed_seconds"]
trim = 0.5 if el >= 2 else 0.0
w0, w1 = end - el + trim, end - trim
steady = 1e6 * (at(w1) - at(w0)) / max(r["calls_per_second"] * (w1 - w0), 1)
print(f"round {rnd} {t:<7} {r['calls_per_second']:>8.0f} {op}/s of {r['target_calls_per_second']:.0f}  late {r['late_calls']:>5}  "
      f"p50 {l['p50']:>6} µs  p99 {l['p99']:>6} µs  errors {r['errors']}  server cpu {total:.1f} s "
      f"({1e6*total/max(calls,1):.1f} µs/call, {calls} calls)  measured window {steady:.1f} µs/call  load {load}")
PY
    fi
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
du -sh "$work/before/store" "$work/after/store" $([ -d "$work/etcd" ] && echo "$work/etcd")
ls -la "$work/after/store/wal" 2>/dev/null || true
