#!/usr/bin/env bash
# Audit cost: off / authz / audit fsync / audit no-fsync, get and put, 3 rounds interleaved.
set -euo pipefail
KW=${KW:-$PWD/target/release/keyward}
cd "${WORK:-$(mktemp -d)}"
rm -rf off authz fs nofs *.sock audit-*.log* 
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
A="--authorization-policy rbac.yaml --token-auth-file tokens.csv"
$KW server --data off --encryption-config enc.yaml --socket $PWD/off.sock 2>off.err &
$KW server --data authz --encryption-config enc.yaml --socket $PWD/authz.sock $A 2>authz.err &
$KW server --data fs --encryption-config enc.yaml --socket $PWD/fs.sock $A --audit-log-path $PWD/audit-fs.log --audit-policy-file audit-policy.yaml 2>fs.err &
$KW server --data nofs --encryption-config enc.yaml --socket $PWD/nofs.sock $A --audit-log-path $PWD/audit-nofs.log --audit-policy-file audit-policy.yaml --audit-log-sync never 2>nofs.err &
sleep 3
for op in ${OPS:-get put}; do
 for round in $(seq 1 ${ROUNDS:-3}); do
  for c in off authz fs nofs; do
   tok=""; [ $c != off ] && tok="--token-file bench.token"
   r=$($KW bench store --server unix://$PWD/$c.sock $tok --op $op --keys 200 --duration 3s --warmup 1s --concurrency 16 --output json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d.get("throughput", d.get("calls_per_second", 0))))' 2>/dev/null || echo ERR)
   echo "$op $round $c $r"
  done
 done
done
kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true
