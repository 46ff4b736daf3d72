#!/usr/bin/env bash
# Kubernetes API vs keyward.v1 gRPC on the same keyward dev store: get and list, 3 interleaved rounds.
set -euo pipefail
KW=${KW:-$PWD/target/release/keyward}
cd "${WORK:-$(mktemp -d)}"
$KW dev >dev.out 2>dev.err & DEV=$!
trap 'kill $DEV 2>/dev/null; wait 2>/dev/null || true' EXIT
for i in $(seq 1 100); do [ -f keyward-dev/kubeconfig ] && [ -S keyward-dev/keyward.sock ] && break; sleep 0.2; done
rate() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["calls_per_second"]), d["ok"], d["calls"])'; }
for op in ${OPS:-get list put}; do
 for round in 1 2 3; do
  g=$($KW bench store --op $op --keys 200 --duration 3s --warmup 1s --concurrency 16 --connections 4 -o json | rate)
  k=$($KW bench store --kubeconfig keyward-dev/kubeconfig --op $op --keys 200 --duration 3s --warmup 1s --concurrency 16 --connections 16 -o json | rate)
  echo "$op $round grpc $g kube $k"
 done
done
