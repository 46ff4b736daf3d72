#!/usr/bin/env bash
# What kms v2 costs a get, in steady state: four `keyward dev` servers (BEFORE and AFTER, each with
# an identity EncryptionConfiguration and with its default kms v2 one), 1,000 Secrets of 1 KiB,
# `keyward bench store --op get` (16 clients on 4 connections) against each in turn, ROUNDS times.
#   benches/get_cost.sh BEFORE_BIN AFTER_BIN [ROUNDS=4]
# Each run lasts 14 s; the server's CPU is read over 8 s of it (from 5 s to 13 s), after set-up
# and warm-up, and divided by the gets of that window (the run's gets/s times the window), so
# that the writes of the set-up, which side_by_side.sh counts, are left out. Prints gets/s,
# CPU per get and the 1-minute load per run. The machine's other work disturbs every figure:
# compare rounds, not runs.
set -Eeuo pipefail
before=$1 after=$2 rounds=${3:-4}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$repo/target/sidebench"
work=$(mktemp -d "$repo/target/sidebench/getcost.XXXXXX")
targets=(before-identity before-kmsv2 after-identity after-kmsv2)
declare -A pid
cleanup() {
  for t in "${targets[@]}"; do [ -n "${pid[$t]:-}" ] && kill -TERM "${pid[$t]}" 2>/dev/null || true; done
  sleep 2
  rm -rf "$work"
}
trap cleanup EXIT
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  if [[ $t == *identity ]]; then
    # keyward dev writes its EncryptionConfiguration only if there is none.
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n' >"$work/$t/encryption-config.yaml"
  fi
  bin=$before; [[ $t == after* ]] && bin=$after
  "$bin" dev --data "$work/$t" >"$work/$t.log" 2>&1 &
  pid[$t]=$!
done
for t in "${targets[@]}"; do
  for i in $(seq 300); do [ -e "$work/$t/keyward.sock" ] && break; sleep 0.1; done
done
sleep 2
clk=$(getconf CLK_TCK)
cpu() { awk -v t="$clk" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    "$after" bench store --server "unix://$work/$t/keyward.sock" --op get --concurrency 16 \
      --connections 4 --value-size 1KiB --keys 1000 --duration 14s --warmup 1s --output json \
      >"$work/run.json" 2>/dev/null &
    bench=$!
    sleep 5
    c0=$(cpu "${pid[$t]}") t0=$(date +%s.%N)
    sleep 8
    c1=$(cpu "${pid[$t]}") t1=$(date +%s.%N)
    wait "$bench"
    python3 - "$work/run.json" "$r" "$t" "$c0" "$c1" "$t0" "$t1" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); c0, c1, t0, t1 = map(float, sys.argv[4:8])
gets = r["calls_per_second"] * (t1 - t0)
print(f"round {sys.argv[2]} {sys.argv[3]:<16} {r['calls_per_second']:>8.0f} get/s  "
      f"{1e6 * (c1 - c0) / gets:5.1f} µs of server CPU per get  load {sys.argv[8]}")
PY
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
