#!/usr/bin/env bash
# The cost of access control and audit, side by side on one machine: five `keyward server`s on
# sled with one aesgcm key, benchmarked in turn within each round so that drift hits them alike.
#   off      no access flags (the caller is the server's uid: system:admin), nothing audited
#   authz    bearer token + RBAC (a Role allowing user `bench` in namespace `bench`)
#   fs       authz + audit at level Metadata, durable before the request goes on (the default)
#   nofs     as fs, with --audit-log-sync never (written, not synced: kube-apiserver's way)
#   nofs-rr  as nofs, with omitStages: [RequestReceived] (kube-apiserver's example policy)
# Prints calls/s and the server's CPU (user + system) per call for each.
#   KW=target/release/keyward OPS="get put" ROUNDS=3 DUR=3s CONFIGS="off authz fs nofs nofs-rr" \
#     benches/audit_side_by_side.sh
set -euo pipefail
KW=${KW:-$PWD/target/release/keyward}
cd "${WORK:-$(mktemp -d)}"
rm -rf off authz fs nofs nofs-rr ./*.sock audit-*.log* .audit-*
head -c 32 /dev/urandom | base64 > k.b64
cat > enc.yaml <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aesgcm:
          keys:
            - name: k1
              secret: $(cat k.b64)
YAML
echo 'bench-0c9f2f3a1b7d4e5f9a8b,bench,1001' > tokens.csv; chmod 600 tokens.csv
(umask 077; echo bench-0c9f2f3a1b7d4e5f9a8b > bench.token)
cat > rbac.yaml <<'YAML'
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: bench, namespace: bench}
rules:
  - {apiGroups: [""], resources: [secrets], verbs: [get, list, watch, create, update]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bench, namespace: bench}
subjects: [{kind: User, name: bench, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: Role, name: bench, apiGroup: rbac.authorization.k8s.io}
YAML
printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n' > audit-policy.yaml
printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n' > audit-policy-rr.yaml
A="--authorization-policy rbac.yaml --token-auth-file tokens.csv"
declare -A PID
start() { # name, extra flags...
  local name=$1; shift
  # shellcheck disable=SC2086
  $KW server --data "$name" --encryption-config enc.yaml --socket "$PWD/$name.sock" "$@" 2>"$name.err" &
  PID[$name]=$!
}
start off
start authz $A
start fs $A --audit-log-path "$PWD/audit-fs.log" --audit-policy-file audit-policy.yaml
start nofs $A --audit-log-path "$PWD/audit-nofs.log" --audit-policy-file audit-policy.yaml --audit-log-sync never
start nofs-rr $A --audit-log-path "$PWD/audit-nofs-rr.log" --audit-policy-file audit-policy-rr.yaml --audit-log-sync never
trap 'kill ${PID[*]} 2>/dev/null; wait 2>/dev/null || true' EXIT
for name in "${!PID[@]}"; do
  until [ -S "$name.sock" ]; do sleep 0.2; done
done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for op in ${OPS:-get put}; do
  for round in $(seq 1 "${ROUNDS:-3}"); do
    for c in ${CONFIGS:-off authz fs nofs nofs-rr}; do
      tok=""; [ "$c" != off ] && tok="--token-file bench.token"
      before=$(cpu "${PID[$c]}")
      # shellcheck disable=SC2086
      out=$($KW bench store --server "unix://$PWD/$c.sock" $tok --op "$op" --keys 200 \
        --duration "${DUR:-3s}" --warmup 1s --concurrency 16 --output json)
      after=$(cpu "${PID[$c]}")
      python3 - "$op" "$round" "$c" "$before" "$after" "$tick" "$out" <<'PY'
import json, sys
op, rnd, c, before, after, tick, out = sys.argv[1:]
d = json.loads(out)
rate = d.get("throughput", d.get("calls_per_second", 0))
calls = d.get("calls", d.get("total_calls", 0)) or 1
secs = (float(after) - float(before)) / float(tick)
print(f"{op} {rnd} {c:8} {rate:9.0f}/s  server CPU {1e6 * secs / calls:6.1f} us/call")
PY
    done
  done
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
