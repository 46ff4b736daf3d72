#!/usr/bin/env python3
"""Latency percentiles of benches/compare.sh as an SVG chart. Standard library only.

Usage: chart.py RESULTS_JSON OUT_SVG

One panel per store workload (keyward with kms v2, keyward with identity, etcd) and one for the
KMS plugin (Decrypt, the gRPC health floor, the raw Unix-socket ping-pong floor); each shows
p50, p90, p99 and p99.9 on a logarithmic latency axis.
"""

import json
import math
import sys
from xml.sax.saxutils import escape

PERCENTILES = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99_9", "p99.9")]
STORE_SERIES = [
    ("store-kmsv2-{op}", "keyward, kms v2", "#1f77b4"),
    ("store-identity-{op}", "keyward, identity", "#2ca02c"),
    ("store-etcd-{op}", "etcd", "#d62728"),
]
KMS_SERIES = [
    ("kms-decrypt", "plugin Decrypt", "#1f77b4"),
    ("kms-health", "gRPC health (empty RPC)", "#9467bd"),
    ("unix-pingpong", "raw Unix-socket ping-pong", "#7f7f7f"),
]
PANEL_W, PANEL_H = 300, 250
PLOT_L, PLOT_R, PLOT_T, PLOT_B = 58, 12, 34, 92
COLS = 3
TOP = 62


def show_us(us):
    if us < 1000:
        return f"{us:g} µs"
    if us < 1_000_000:
        return f"{us / 1e3:g} ms"
    return f"{us / 1e6:g} s"


def panels(runs, concurrency):
    out = []
    for op in ["put", "get", "list", "mixed", "watch"]:
        series = [(label, color, runs.get(key.format(op=op))) for key, label, color in STORE_SERIES]
        out.append((f"store {op}, {concurrency} clients", series))
    out.append(("KMS plugin, 64 concurrent", [(l, c, runs.get(k)) for k, l, c in KMS_SERIES]))
    return out


def ticks(lo, hi):
    """Gridline values (µs) for a log axis from lo to hi: decades, plus 2 and 5 if few decades."""
    decades = int(round(math.log10(hi / lo)))
    steps = [1, 2, 5] if decades <= 3 else [1]
    out = []
    d = lo
    while d <= hi * 1.0001:
        for s in steps:
            v = d * s
            if v <= hi * 1.0001:
                out.append(v)
        d *= 10
    return out


def panel_svg(x0, y0, title, series):
    parts = []
    add = parts.append
    values = [r["latency_us"][k] for _, _, r in series if r for k, _ in PERCENTILES]
    values = [max(v, 1) for v in values]
    add(f'<g transform="translate({x0},{y0})">')
    add(f'<text x="{PANEL_W / 2}" y="18" class="pt">{escape(title)}</text>')
    if not values:
        add(f'<text x="{PANEL_W / 2}" y="{PANEL_H / 2}" class="lg">no data</text></g>')
        return "".join(parts)
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10
    pw, ph = PANEL_W - PLOT_L - PLOT_R, PANEL_H - PLOT_T - PLOT_B

    def y(v):
        return PLOT_T + ph - (math.log10(max(v, 1)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

    def x(i):
        return PLOT_L + pw * (i + 0.5) / len(PERCENTILES)

    add(f'<rect x="{PLOT_L}" y="{PLOT_T}" width="{pw}" height="{ph}" class="plot"/>')
    for v in ticks(lo, hi):
        major = abs(math.log10(v) - round(math.log10(v))) < 1e-9
        add(f'<line x1="{PLOT_L}" x2="{PLOT_L + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'class="{"gM" if major else "gm"}"/>')
        add(f'<text x="{PLOT_L - 5}" y="{y(v) + 4:.1f}" class="yl">{escape(show_us(v))}</text>')
    for i, (_, label) in enumerate(PERCENTILES):
        add(f'<text x="{x(i):.1f}" y="{PLOT_T + ph + 16}" class="xl">{label}</text>')
    for n, (label, color, r) in enumerate(series):
        ly = PLOT_T + ph + 34 + n * 15
        add(f'<line x1="{PLOT_L}" x2="{PLOT_L + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
        if r is None:
            add(f'<text x="{PLOT_L + 24}" y="{ly}" class="lg">{escape(label)} (not run)</text>')
            continue
        lat = r["latency_us"]
        rate = r["calls_per_second"]
        add(f'<text x="{PLOT_L + 24}" y="{ly}" class="lg">{escape(label)}: {rate:,.0f}/s</text>')
        pts = [(x(i), y(lat[k])) for i, (k, _) in enumerate(PERCENTILES)]
        add(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
            + " ".join(f"{px:.1f},{py:.1f}" for px, py in pts) + '"/>')
        for (px, py), (k, name) in zip(pts, PERCENTILES):
            add(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}">'
                f"<title>{escape(label)} {name}: {escape(show_us(lat[k]))}</title></circle>")
    add("</g>")
    return "".join(parts)


def chart(results):
    runs = results["runs"]
    machine = results.get("machine", {})
    concurrency = next((r["concurrency"] for n, r in runs.items() if n.startswith("store-")), 16)
    ps = panels(runs, concurrency)
    rows = math.ceil(len(ps) / COLS)
    width, height = COLS * PANEL_W + 20, TOP + rows * PANEL_H + 10
    title = "keyward vs etcd: latency percentiles (log scale; lower is better)"
    sub = (f"{machine.get('date_utc', '')}, {machine.get('nproc', '?')} CPUs, "
           f"{machine.get('mode', '')} mode, {machine.get('duration', '')} per workload, 1 KiB values; "
           f"load {machine.get('load_before', '?')} → {machine.get('load_after', '?')}")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        "<style>.t{font-size:16px;font-weight:bold;text-anchor:middle}"
        ".s{font-size:11px;fill:#555;text-anchor:middle}"
        ".pt{font-size:13px;font-weight:bold;text-anchor:middle}"
        ".yl{font-size:10px;fill:#444;text-anchor:end}.xl{font-size:11px;text-anchor:middle}"
        ".lg{font-size:11px}.plot{fill:#fafafa;stroke:#999}"
        ".gM{stroke:#bbb}.gm{stroke:#e4e4e4}</style>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="24" class="t">{escape(title)}</text>',
        f'<text x="{width / 2}" y="44" class="s">{escape(sub)}</text>',
    ]
    for i, (name, series) in enumerate(ps):
        out.append(panel_svg(10 + (i % COLS) * PANEL_W, TOP + (i // COLS) * PANEL_H, name, series))
    out.append("</svg>\n")
    return "\n".join(out)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        results = json.load(f)
    with open(sys.argv[2], "w") as f:
        f.write(chart(results))


if __name__ == "__main__":
    main()
