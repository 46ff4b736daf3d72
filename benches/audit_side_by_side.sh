#!/usr/bin/env bash
# The cost of access control and audit, side by side on one machine: five `keyward server`s on
# the default engine (log-structured; sled in the runs before 2026-12-02) with one aesgcm key,
# benchmarked in turn within each round so that drift hits them alike:
#   off      no access flags (the caller is the server's uid: system:admin), nothing audited
#   authz    bearer token + RBAC (a Role allowing user `bench` in namespace `bench`)
#   fs       authz + audit at level Metadata, durable before the request goes on (the default)
#   nofs     as fs, with --audit-log-sync never (written, not synced: kube-apiserver's way)
#   nofs-rr  as nofs, with omitStages: [RequestReceived] (kube-apiserver's example policy)
#   batch    as nofs, with --audit-log-mode batch (requests queue their events and go on;
#            BATCH_WAIT sets --audit-log-batch-max-wait, default 5ms as the server's)
#   batch-rr as batch, with omitStages: [RequestReceived]
# Prints calls/s, the server's CPU (user + system) per call and its audit writer thread's share
# (batch mode), the whole machine's busy CPU per call (server, load tool, kernel threads such
# as writeback) and the load average for each. The CPU figures span the load tool's warm-up
# too, so compare them between servers, not with other runs. In a closed loop on few CPUs
# calls/s swings by 10 % or more between rounds; with RATE the CPU per call is the steadier
# measure of what a configuration costs. The last lines (`summary`) give, per binary, each
# configuration's median calls/s and the median of its per-round ratios against authz and off.
#   KW=target/release/keyward OPS="get put" ROUNDS=3 DUR=3s CONFIGS="off authz fs nofs nofs-rr" \
#     benches/audit_side_by_side.sh
# RATE=N drives every server at N calls/s (an open loop, `keyward bench store --rate`) instead of
# as fast as 16 clients go; compare latency and server CPU per call then.
# Two (or more) binaries side by side: BINS="before=/path/a after=/path/b" starts each
# configuration once per binary and runs them in turn within each round (binaries alternate
# inside every configuration, and their order flips from one round to the next).
set -euo pipefail
KW=${KW:-$PWD/target/release/keyward}
BINS=${BINS:-"kw=$KW"}
cd "${WORK:-$(mktemp -d)}"
rm -rf ./*-off ./*-authz ./*-fs ./*-nofs ./*-nofs-rr ./*-batch ./*-batch-rr ./*.sock audit-*.log* .audit-* results.jsonl
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
declare -A PID BIN
TAGS=""
for b in $BINS; do TAGS="$TAGS ${b%%=*}"; BIN[${b%%=*}]=${b#*=}; done
start() { # binary tag, config, extra flags...
  local tag=$1 c=$2 name="$1-$2"; shift 2
  # shellcheck disable=SC2086
  ${BIN[$tag]} server --data "$name" --encryption-config enc.yaml --socket "$PWD/$name.sock" "$@" 2>"$name.err" &
  PID[$name]=$!
}
for t in $TAGS; do
  for c in ${CONFIGS:-off authz fs nofs nofs-rr}; do
    case $c in
      off) start "$t" off ;;
      authz) start "$t" authz $A ;;
      fs) start "$t" fs $A --audit-log-path "$PWD/audit-$t-fs.log" --audit-policy-file audit-policy.yaml ;;
      nofs) start "$t" nofs $A --audit-log-path "$PWD/audit-$t-nofs.log" --audit-policy-file audit-policy.yaml --audit-log-sync never ;;
      nofs-rr) start "$t" nofs-rr $A --audit-log-path "$PWD/audit-$t-nofs-rr.log" --audit-policy-file audit-policy-rr.yaml --audit-log-sync never ;;
      batch) start "$t" batch $A --audit-log-path "$PWD/audit-$t-batch.log" --audit-policy-file audit-policy.yaml --audit-log-sync never --audit-log-mode batch --audit-log-batch-max-wait "${BATCH_WAIT:-5ms}" ;;
      batch-rr) start "$t" batch-rr $A --audit-log-path "$PWD/audit-$t-batch-rr.log" --audit-policy-file audit-policy-rr.yaml --audit-log-sync never --audit-log-mode batch --audit-log-batch-max-wait "${BATCH_WAIT:-5ms}" ;;
    esac
  done
done
trap 'kill ${PID[*]} 2>/dev/null; wait 2>/dev/null || true' EXIT
for name in "${!PID[@]}"; do
  until [ -S "$name.sock" ]; do sleep 0.2; done
done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Every CPU's busy time (all but idle and iowait), in ticks: the server, the load tool, the
# kernel's threads (writeback) and anything else running.
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# The CPU of the server's audit writer thread (batch mode), in ticks.
writer() {
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm")" = audit-batch ]; then awk '{print $14+$15}' "$t/stat"; fi
  done | awk '{s+=$1} END {print s+0}'
}
tick=$(getconf CLK_TCK)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
# The load tool is the first binary's, for every server.
first=${TAGS# }; first=${first%% *}
reversed() { local out=""; for t in $1; do out="$t $out"; done; echo "$out"; }
for op in ${OPS:-get put}; do
  for round in $(seq 1 "${ROUNDS:-3}"); do
    order=$TAGS; [ $((round % 2)) = 0 ] && order=$(reversed "$TAGS")
    for c in ${CONFIGS:-off authz fs nofs nofs-rr}; do
      for t in $order; do
        name="$t-$c"
        tok=""; [ "$c" != off ] && tok="--token-file bench.token"
        rate=""; [ -n "${RATE:-}" ] && rate="--rate $RATE"
        before=$(cpu "${PID[$name]}"); mbefore=$(busy); wbefore=$(writer "${PID[$name]}")
        # shellcheck disable=SC2086
        out=$(${BIN[$first]} bench store --server "unix://$PWD/$name.sock" $tok --op "$op" --keys 200 \
          --duration "${DUR:-3s}" --warmup 1s --concurrency 16 $rate --output json)
        after=$(cpu "${PID[$name]}"); mafter=$(busy); wafter=$(writer "${PID[$name]}")
        load=$(cut -d' ' -f1 /proc/loadavg)
        python3 - "$op" "$round" "$name" "$before" "$after" "$tick" "$load" "$out" "$mbefore" "$mafter" "$wbefore" "$wafter" "$t" "$c" <<'PY'
import json, sys
op, rnd, c, before, after, tick, load, out, mbefore, mafter, wbefore, wafter, tag, config = sys.argv[1:]
d = json.loads(out)
rate = d.get("throughput", d.get("calls_per_second", 0))
calls = d.get("calls", d.get("total_calls", 0)) or 1
secs = (float(after) - float(before)) / float(tick)
lat = d.get("latency_us", {})
msecs = (float(mafter) - float(mbefore)) / float(tick)
wsecs = (float(wafter) - float(wbefore)) / float(tick)
print(f"{op} {rnd} {c:14} {rate:9.0f}/s  server CPU {1e6 * secs / calls:6.1f} us/call  "
      f"(audit writer {1e6 * wsecs / calls:4.1f})  "
      f"machine CPU {1e6 * msecs / calls:6.1f} us/call  "
      f"p50 {lat.get('p50', 0)} p99 {lat.get('p99', 0)} us  load {load}")
with open("results.jsonl", "a") as f:
    f.write(json.dumps({"op": op, "round": int(rnd), "tag": tag, "config": config, "rate": rate,
                        "machine_us": 1e6 * msecs / calls}) + "\n")
PY
      done
    done
  done
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
# The summary: per binary and configuration the median calls/s, and the median over rounds of
# each round's ratio against RBAC alone (authz) and against no access control (off), the two
# costs docs/benchmarks.md reports.
python3 - <<'PY'
import json, statistics
rows = [json.loads(l) for l in open("results.jsonl")]
for op, tag in sorted({(r["op"], r["tag"]) for r in rows}):
    by = {}
    for r in rows:
        if (r["op"], r["tag"]) == (op, tag):
            by.setdefault(r["config"], {})[r["round"]] = r["rate"]
    parts = []
    order = list(by)
    for config, rounds in by.items():
        text = f"{config} {statistics.median(rounds.values()):,.0f}/s"
        # Against the baselines run before it in CONFIGS.
        for base in (b for b in ("authz", "off") if b in order[: order.index(config)]):
            common = [n for n in rounds if n in by[base]]
            if common:
                ratio = statistics.median(rounds[n] / by[base][n] - 1 for n in common)
                text += f", {100 * ratio:+.1f} % against {base}"
        parts.append(text)
    print(f"summary {op} {tag}: " + "; ".join(parts) + " (medians over rounds)")
PY
