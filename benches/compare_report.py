#!/usr/bin/env python3
"""The side-by-side table of benches/compare.sh, from the JSON reports in one directory.

Usage: compare_report.py DIR

Reads DIR/<run>.json (one `keyward bench ... --output json` report each), DIR/memory.json and
DIR/machine.json; writes DIR/results.json (everything, with ratios and the targets) and
DIR/table.md (Markdown, also printed). Exits 1 if any run had errors. Standard library only.

A store workload run in several rounds has one report per round: <run>.json for the first,
<run>@2.json, <run>@3.json ... for the others. The tables then show the round with the median
calls/s of each target, and every ratio is the median of the per-round ratios (the targets of
one round ran back to back, so drift hits them alike); the rounds are listed too.
"""

import json
import os
import sys

STORE_OPS = ["put", "get", "list", "mixed", "watch"]
STORE_TARGETS = [
    ("kmsv2", "keyward (kms v2)"),
    ("identity", "keyward (identity)"),
    ("etcd", "etcd"),
]
KMS_RUNS = [
    ("kms-decrypt", "plugin Decrypt"),
    ("kms-health", "gRPC health Check (empty RPC)"),
    ("unix-pingpong", "raw Unix-socket ping-pong (64 B)"),
    ("kms-storm", "decrypt storm"),
]
MIB = 1024


def show_us(us):
    """Microseconds with a unit, as `keyward bench` prints them."""
    if us < 1000:
        return f"{us} µs"
    if us < 1_000_000:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def show_rate(r):
    return f"{r:,.0f}"


def ratio(a, b):
    return a / b if b else float("nan")


def median(xs):
    """The median of a non-empty list (the mean of the middle two for an even count)."""
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def load(directory):
    """(runs, rounds, memory, machine): `runs` maps a run's name to its report (for a run of
    several rounds, the round with the median calls/s); `rounds` maps it to every round's
    report, in round order."""
    rounds = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json") or name in ("memory.json", "machine.json", "results.json"):
            continue
        base, _, n = name[: -len(".json")].partition("@")
        with open(os.path.join(directory, name)) as f:
            rounds.setdefault(base, []).append((int(n or 1), json.load(f)))
    rounds = {k: [r for _, r in sorted(v, key=lambda x: x[0])] for k, v in rounds.items()}
    runs = {}
    for name, rs in rounds.items():
        by_rate = sorted(rs, key=lambda r: r["calls_per_second"])
        runs[name] = by_rate[(len(by_rate) - 1) // 2]

    def optional(name):
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    return runs, rounds, optional("memory.json"), optional("machine.json")


def rate(runs, name):
    return runs[name]["calls_per_second"] if name in runs else float("nan")


def round_ratio(rounds, a, b):
    """The median over the rounds both runs have of a's calls/s over b's."""
    pairs = list(zip(rounds.get(a, []), rounds.get(b, [])))
    if not pairs:
        return float("nan")
    return median([ratio(x["calls_per_second"], y["calls_per_second"]) for x, y in pairs])


def setup_calls(r):
    """Calls a run made before its warm-up: the store keys, or the ciphertexts to decrypt."""
    if r.get("target") in ("store", "etcd"):
        return r.get("keys", 0)
    if r.get("target") == "kms":
        if "storm" in r:
            return r["storm"]
        return 256 if r.get("op") in ("decrypt", "mixed") else 0
    return 0


def cpu_per_call(r, nproc):
    """(server µs, client µs, share of all CPUs busy with both) over a whole run, or None.

    The CPU times cover setup and warm-up too, so they are divided by every call the run made;
    setup calls are writes, so this overstates a little the cost of the reads of get and list.
    """
    if "server_cpu_seconds" not in r:
        return None
    n = r["calls"] + r.get("warmup_calls", 0) + setup_calls(r)
    if n == 0 or not r.get("wall_seconds"):
        return None
    busy = (r["server_cpu_seconds"] + r["client_cpu_seconds"]) / (nproc * r["wall_seconds"])
    return r["server_cpu_seconds"] * 1e6 / n, r["client_cpu_seconds"] * 1e6 / n, busy


def targets(runs, rounds, mem):
    """Each target of the performance issue: (what, wanted, measured, met)."""
    out = []
    put_ratio = round_ratio(rounds, "store-kmsv2-put", "store-etcd-put")
    out.append((
        "store durable writes (1 KiB, kms v2, 16 clients) vs etcd",
        "≥ 1.5× (long-term 3×)",
        f"{put_ratio:.2f}×",
        put_ratio >= 1.5,
    ))
    for op in ("list", "watch"):
        r = round_ratio(rounds, f"store-kmsv2-{op}", f"store-etcd-{op}")
        out.append((f"store {op} vs etcd", "≥ 1×", f"{r:.2f}×", r >= 1))
    for op in ("put", "get"):
        r = round_ratio(rounds, f"store-kmsv2-{op}", f"store-identity-{op}")
        out.append((
            f"encryption cost, {op}: kms v2 vs identity",
            "≤ 10 % slower",
            f"{(1 - r) * 100:.1f} % slower" if r <= 1 else f"{(r - 1) * 100:.1f} % faster",
            r >= 0.9,
        ))
    get_ratio = round_ratio(rounds, "store-kmsv2-get", "store-etcd-get")
    out.append((
        "store reads vs etcd linearizable reads",
        "≥ 2×",
        f"{get_ratio:.2f}×",
        get_ratio >= 2,
    ))
    dec = runs.get("kms-decrypt")
    health = runs.get("kms-health")
    if dec and health:
        r = ratio(dec["calls_per_second"], health["calls_per_second"])
        out.append((
            "plugin Decrypt vs empty RPC, 64 concurrent",
            "≥ 90 %",
            f"{r * 100:.1f} %",
            r >= 0.9,
        ))
        p99 = dec["latency_us"]["p99"]
        out.append(("plugin Decrypt p99, 64 concurrent", "< 1 ms", show_us(p99), p99 < 1000))
    storm = runs.get("kms-storm")
    if storm:
        t = storm["time_to_finish_seconds"]
        n = storm.get("storm", 0)
        if n == 10_000:
            out.append(("decrypt storm, 10,000 seeds", "< 0.5 s", f"{t:.3f} s", t < 0.5))
        else:
            out.append((f"decrypt storm, {n:,} seeds", "< 0.5 s at 10,000", f"{t:.3f} s", None))
    if "plugin_hwm_kib" in mem:
        hwm = mem["plugin_hwm_kib"] / MIB
        out.append((
            "plugin RSS under load (peak, VmHWM)",
            "≤ 15 MiB",
            f"{hwm:.1f} MiB (now {mem['plugin_rss_kib'] / MIB:.1f})",
            hwm <= 15,
        ))
    if "store_loaded_rss_kib" in mem:
        n = mem.get("secrets_loaded", 0)
        rss = mem["store_loaded_rss_kib"] / MIB
        what = f"store holding {n:,} Secrets (RSS of keyward dev)"
        if n >= 100_000:
            out.append((what, "≤ 250 MiB", f"{rss:.1f} MiB (peak {mem['store_loaded_hwm_kib'] / MIB:.1f})", rss <= 250))
        else:
            out.append((what, "≤ 250 MiB at 100,000", f"{rss:.1f} MiB", None))
    if mem.get("store_dir_kib") and mem.get("etcd_dir_kib"):
        kw, etcd = mem["store_dir_kib"] / MIB, mem["etcd_dir_kib"] / MIB
        out.append((
            "store directory after the workloads and the load vs etcd's",
            "≤ etcd's",
            f"{kw:.1f} MiB against {etcd:.1f} MiB",
            kw <= etcd,
        ))
    return out


def table(runs, rounds, mem, machine):
    lines = []
    add = lines.append
    if machine:
        add(f"Run of {machine.get('date_utc', '?')}, {machine.get('mode', '?')} mode "
            f"({machine.get('duration', '?')} per workload): {machine.get('nproc', '?')} CPUs "
            f"({machine.get('cpu', '?')}), {machine.get('etcd', '?')}, {machine.get('keyward', '?')} "
            f"on {machine.get('store_backend', 'sled')}; "
            f"load average {machine.get('load_before', '?')} before, {machine.get('load_after', '?')} after.")
        add("")
    n_rounds = max((len(rounds.get(f"store-{t}-{op}", [])) for op in STORE_OPS
                    for t, _ in STORE_TARGETS), default=1)
    add("Store workloads, 16 clients on 4 connections, 1 KiB values (calls/s; p50 / p99)"
        + (f", the median of {n_rounds} rounds; ratios are medians of the per-round ratios:"
           if n_rounds > 1 else ":"))
    add("")
    add("| op | keyward (kms v2) | keyward (identity) | etcd | kms v2 / etcd | kms v2 / identity |")
    add("|---|---:|---:|---:|---:|---:|")
    for op in STORE_OPS:
        cells = []
        for target, _ in STORE_TARGETS:
            r = runs.get(f"store-{target}-{op}")
            if r is None:
                cells.append("–")
                continue
            l = r["latency_us"]
            cells.append(f"{show_rate(r['calls_per_second'])} ({show_us(l['p50'])} / {show_us(l['p99'])})")
        k_e = round_ratio(rounds, f"store-kmsv2-{op}", f"store-etcd-{op}")
        k_i = round_ratio(rounds, f"store-kmsv2-{op}", f"store-identity-{op}")
        add(f"| {op} | {' | '.join(cells)} | {k_e:.2f}× | {k_i:.2f}× |")
    add("")
    if n_rounds > 1:
        add("Each round (calls/s of kms v2 / identity / etcd; kms v2 / etcd):")
        add("")
        add("| op | " + " | ".join(f"round {i + 1}" for i in range(n_rounds)) + " |")
        add("|---|" + "---:|" * n_rounds)
        for op in STORE_OPS:
            cols = [rounds.get(f"store-{t}-{op}", []) for t, _ in STORE_TARGETS]
            cells = []
            for i in range(n_rounds):
                rs = [c[i]["calls_per_second"] if i < len(c) else float("nan") for c in cols]
                cells.append(" / ".join(show_rate(x) for x in rs) + f"; {ratio(rs[0], rs[2]):.2f}×")
            add(f"| {op} | " + " | ".join(cells) + " |")
        add("")
    add("KMS workloads, 64 concurrent on 4 connections (keyward kms serve alone):")
    add("")
    add("| run | calls/s | p50 | p90 | p99 | p99.9 | max |")
    add("|---|---:|---:|---:|---:|---:|---:|")
    for name, label in KMS_RUNS:
        r = runs.get(name)
        if r is None:
            continue
        l = r["latency_us"]
        rate_cell = show_rate(r["calls_per_second"])
        if "time_to_finish_seconds" in r:
            label += f", {r.get('storm', 0):,} seeds"
            rate_cell += f" (done in {r['time_to_finish_seconds']:.3f} s)"
        add(f"| {label} | {rate_cell} | {show_us(l['p50'])} | {show_us(l['p90'])} | "
            f"{show_us(l['p99'])} | {show_us(l['p99_9'])} | {show_us(l['max'])} |")
    d, h, p = (rate(runs, n) for n in ("kms-decrypt", "kms-health", "unix-pingpong"))
    add("")
    add(f"Decrypt / health: {ratio(d, h) * 100:.1f} %; health / ping-pong: {ratio(h, p) * 100:.1f} %; "
        f"Decrypt / ping-pong: {ratio(d, p) * 100:.1f} %.")
    nproc = (machine or {}).get("nproc") or os.cpu_count()
    add("")
    add("CPU per call (user + system, over the whole run including setup and warm-up; "
        "the ping-pong's echo runs inside the client):")
    add("")
    add("| run | server CPU / call | client CPU / call | all CPUs busy |")
    add("|---|---:|---:|---:|")
    names = [f"store-{t}-{op}" for op in STORE_OPS for t, _ in STORE_TARGETS]
    names += [n for n, _ in KMS_RUNS]
    for name in names:
        r = runs.get(name)
        c = cpu_per_call(r, nproc) if r else None
        if c is None:
            continue
        server, client, busy = c
        add(f"| {name} | {server:.1f} µs | {client:.1f} µs | {busy * 100:.0f} % |")
    add("")
    if (machine or {}).get("mode") == "short":
        add("Targets (short mode: a smoke run, usually of a debug build; not a measurement):")
    else:
        add("Targets:")
    add("")
    add("| target | wanted | measured | met |")
    add("|---|---|---|---|")
    for what, wanted, measured, met in targets(runs, rounds, mem):
        add(f"| {what} | {wanted} | {measured} | {'n/a' if met is None else ('yes' if met else '**no**')} |")
    if mem:
        add("")
        add(f"Memory: plugin VmRSS {mem.get('plugin_rss_kib', 0) / MIB:.1f} MiB "
            f"(peak {mem.get('plugin_hwm_kib', 0) / MIB:.1f}); keyward dev after the store workloads "
            f"{mem.get('store_after_workloads_rss_kib', 0) / MIB:.1f} MiB; after loading "
            f"{mem.get('secrets_loaded', 0):,} Secrets in {mem.get('load_seconds', 0):.1f} s: "
            f"{mem.get('store_loaded_rss_kib', 0) / MIB:.1f} MiB (peak "
            f"{mem.get('store_loaded_hwm_kib', 0) / MIB:.1f}); store directory "
            f"{mem.get('store_dir_kib', 0) / MIB:.1f} MiB, etcd directory {mem.get('etcd_dir_kib', 0) / MIB:.1f} MiB.")
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    runs, rounds, mem, machine = load(directory)
    if not runs:
        sys.exit(f"compare_report.py: no reports in {directory}")
    text = table(runs, rounds, mem, machine)
    with open(os.path.join(directory, "table.md"), "w") as f:
        f.write(text)
    results = {
        "machine": machine,
        "memory": mem,
        "runs": runs,
        "rounds": {name: rs for name, rs in rounds.items() if len(rs) > 1},
        "targets": [
            {"target": w, "wanted": want, "measured": m, "met": met}
            for w, want, m, met in targets(runs, rounds, mem)
        ],
    }
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    print(text)
    failed = {
        f"{n}@{i + 1}": r["errors_by_code"]
        for n, rs in rounds.items()
        for i, r in enumerate(rs)
        if r.get("errors")
    }
    if failed:
        print(f"compare_report.py: runs with errors: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
