#!/usr/bin/env bash
# Two keyward dev servers (before / after: BIN_A, BIN_B as $1 $2), the Kubernetes API get (and OPS) through each in turn,
# the order flipped every round; LOAD=BIN uses one load tool for both. Prints calls/s and the server's CPU ticks per run.
#   ROUNDS=8 OPS=get LOAD=/path/before benches/kube_before_after.sh /path/before /path/after
set -euo pipefail
A=$1; B=$2; ROUNDS=${ROUNDS:-4}
cd "${WORK:-$(mktemp -d)}"; rm -rf a b; mkdir a b
(cd a && $A dev >dev.out 2>dev.err) & PA=$!
(cd b && $B dev >dev.out 2>dev.err) & PB=$!
trap 'kill $PA $PB 2>/dev/null; wait 2>/dev/null || true' EXIT
for d in a b; do for i in $(seq 1 150); do [ -f $d/keyward-dev/kubeconfig ] && [ -S $d/keyward-dev/keyward.sock ] && break; sleep 0.2; done; done
rate() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["calls_per_second"]), d["ok"], d["calls"])'; }
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
SA=$( (pgrep -P $PA || true) | head -1); SA=${SA:-$PA}; SB=$( (pgrep -P $PB || true) | head -1); SB=${SB:-$PB}
echo "servers: $SA $SB"
for op in ${OPS:-get}; do
 for r in $(seq 1 $ROUNDS); do
  for x in a b; do
   if [ $(( r % 2 )) = 0 ]; then x=$([ $x = a ] && echo b || echo a); fi
   bin=$([ $x = a ] && echo $A || echo $B); s=$([ $x = a ] && echo $SA || echo $SB)
   c0=$(cpu $s)
   out=$(${LOAD:-$bin} bench store --kubeconfig $x/keyward-dev/kubeconfig --op $op --keys 200 --duration 4s --warmup 1s --concurrency 16 --connections 16 -o json | rate)
   c1=$(cpu $s)
   echo "$op round $r $x: $out cpu_ticks $((c1-c0))"
  done
 done
done
