"""A self-contained HTML page about one model: regions, their linear maps, neuron traces, probes, ablations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from arcscope.files import atomic_write_text
from arcscope.report.html import escape, page
from arcscope.rnn.interpret import ablate, probe
from arcscope.rnn.model import ReluRNN, trace
from arcscope.rnn.regions import RegionMap, classify_regions, region_linear_map
from arcscope.rnn.tasks import sample_inputs

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

# On top of the shared page styles (report.html.BASE_CSS): section headings, tables and the card rows.
RNN_CSS = """
main{max-width:1200px}
h2{font-size:18px;margin-top:28px;border-bottom:1px solid var(--line);padding-bottom:4px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.pat{font-family:ui-monospace,monospace}
.cards{display:flex;flex-wrap:wrap;gap:18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px;max-width:520px}
.muted{color:var(--muted);font-size:12px}
"""


def _colour(v: float, vmax: float) -> str:
    """Diverging blue (negative) - white - red (positive)."""
    a = 0.0 if vmax <= 0 else max(-1.0, min(1.0, v / vmax))
    if a >= 0:
        r, g, b = 255, int(255 * (1 - a)), int(255 * (1 - a))
    else:
        r, g, b = int(255 * (1 + a)), int(255 * (1 + a)), 255
    return f"rgb({r},{g},{b})"


def _short(v: float) -> str:
    """At most 4 characters for a heat-map cell (the exact value is in its tooltip)."""
    return f"{v:.0f}" if abs(v) >= 9.95 else f"{v:.1f}".replace("-0.0", "0.0")


def heatmap_svg(a: np.ndarray, *, cell: int = 26, row_label: str = "out", col_label: str = "x") -> str:
    """An SVG heat map of a matrix (rows: outputs, columns: input steps) with values in the cells."""
    rows, cols = a.shape
    vmax = float(np.abs(a).max()) or 1.0
    left, top = 34, 16
    w, h = left + cols * cell + 4, top + rows * cell + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-size="9">']
    for c in range(cols):
        parts.append(
            f'<text x="{left + c * cell + cell / 2}" y="11" text-anchor="middle">{col_label}{c}</text>'
        )
    for r in range(rows):
        y = top + r * cell
        parts.append(f'<text x="{left - 4}" y="{y + cell / 2 + 3}" text-anchor="end">{row_label}{r}</text>')
        for c in range(cols):
            v = float(a[r, c])
            x = left + c * cell
            fg = "#fff" if abs(v) > 0.6 * vmax else "#222"
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{_colour(v, vmax)}">'
                f"<title>A[{r},{c}] = {v:.6g}</title></rect>"
            )
            if cell >= 22:
                parts.append(
                    f'<text x="{x + cell / 2}" y="{y + cell / 2 + 3}" text-anchor="middle" fill="{fg}">{_short(v)}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(
    counts: np.ndarray, total: int, *, top: int = 40, width: int = 760, height: int = 180
) -> str:
    """Bars for the ``top`` most populated regions, with the cumulative share as a line."""
    c = np.asarray(counts[:top], dtype=float)
    if len(c) == 0:
        return "<p>no regions</p>"
    left, bottom, pad = 40, 22, 8
    bw = (width - left - pad) / len(c)
    ch = height - bottom - pad
    vmax = c.max()
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">']
    for i, v in enumerate(c):
        bh = ch * v / vmax
        parts.append(
            f'<rect x="{left + i * bw:.1f}" y="{pad + ch - bh:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}" '
            f'fill="#4c78a8"><title>region {i}: {int(v):,} inputs ({v / total:.2%})</title></rect>'
        )
    cum = np.cumsum(c) / total
    pts = " ".join(f"{left + (i + 0.5) * bw:.1f},{pad + ch * (1 - v):.1f}" for i, v in enumerate(cum))
    parts.append(f'<polyline points="{pts}" fill="none" stroke="#e45756" stroke-width="1.5"/>')
    parts.append(f'<text x="{left - 4}" y="{pad + 8}" text-anchor="end">{int(vmax):,}</text>')
    parts.append(f'<text x="{left - 4}" y="{pad + ch}" text-anchor="end">0</text>')
    parts.append(
        f'<text x="{width - pad}" y="{height - 6}" text-anchor="end">region rank (red: cumulative share)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def trace_svg(x: np.ndarray, hidden: np.ndarray, *, width: int = 360, height: int = 170) -> str:
    """One input's sequence (grey bars) and every neuron's hidden state over the steps (lines)."""
    steps, hid = hidden.shape
    left, pad, bottom = 30, 8, 18
    vmax = float(max(np.abs(x).max(), hidden.max(), 1e-9))
    sx = (width - left - pad) / max(steps, 1)
    mid = pad + (height - pad - bottom) / 2
    scale = (height - pad - bottom) / 2 / vmax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="9">']
    parts.append(f'<line x1="{left}" y1="{mid}" x2="{width - pad}" y2="{mid}" stroke="#bbb"/>')
    for t in range(steps):
        v = float(x[t])
        y0, y1 = sorted((mid, mid - v * scale))
        parts.append(
            f'<rect x="{left + t * sx + sx * 0.3:.1f}" y="{y0:.1f}" width="{sx * 0.4:.1f}" height="{y1 - y0:.1f}" '
            f'fill="#ccc"><title>x[{t}] = {v:.3f}</title></rect>'
        )
        parts.append(
            f'<text x="{left + (t + 0.5) * sx:.1f}" y="{height - 5}" text-anchor="middle">{t}</text>'
        )
    for j in range(hid):
        pts = " ".join(f"{left + (t + 0.5) * sx:.1f},{mid - hidden[t, j] * scale:.1f}" for t in range(steps))
        col = _PALETTE[j % len(_PALETTE)]
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="1.4"><title>h{j}</title></polyline>'
        )
    parts.append(f'<text x="{left - 3}" y="{mid - vmax * scale + 8:.1f}" text-anchor="end">{vmax:.2g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def build_report(
    model: ReluRNN,
    *,
    n: int = 100_000,
    seed: int = 0,
    top: int = 8,
    samples: int = 4,
    task: str | None = None,
    region_map: RegionMap | None = None,
) -> str:
    """The HTML page as a string (regions from ``n`` seeded inputs unless ``region_map`` is given)."""
    seq_len = model.require_seq_len()
    x = sample_inputs(n, seq_len, seed=seed)
    rm = region_map if region_map is not None else classify_regions(model, x)
    card = model.card
    title = f"{model.name}: {model.task or 'unknown task'}, H={model.hidden_size}, T={seq_len}"
    out = [f"<header class='page'><h1>{escape(title)}</h1></header><main>"]
    facts = [f"{model.n_params} parameters", f"{model.output_size} output(s)"]
    if card.get("metric"):
        facts.append(
            f"held-out {card['metric']} {card[card['metric']]:.4f} on {card.get('test_samples', '?'):,} inputs"
        )
    if card.get("train_samples"):
        facts.append(f"trained on {card['train_samples']:,} sequences, seed {card.get('seed')}")
    out.append(f"<p>{escape(' · '.join(facts))}</p>")

    out.append("<h2>Linear regions</h2>")
    out.append(
        f"<p>{len(rm):,} distinct activation patterns among {rm.total_inputs:,} standard-normal inputs "
        f"(of 2<sup>{model.hidden_size * seq_len}</sup> possible). The top {min(top, len(rm))} hold "
        f"{rm.coverage(top):.1%} of the inputs.</p>"
    )
    out.append(histogram_svg(rm.counts, rm.total_inputs))
    out.append("<h2>Top regions and their exact linear maps</h2>")
    out.append(
        "<p class='muted'>In a region the network is <i>output = A x</i>; each heat map is A (rows: outputs, "
        "columns: input steps). Pattern: one group per step, 1 = neuron active.</p><div class='cards'>"
    )
    for r in rm.top(top):
        a = region_linear_map(model, r.pattern)
        out.append(
            f"<div class='card'><div><b>region {r.index}</b> · {r.count:,} inputs ({r.count / rm.total_inputs:.2%})</div>"
            f"<div class='pat'>{escape(r.pattern)}</div>{heatmap_svg(a)}</div>"
        )
    out.append("</div>")

    out.append(
        "<h2>Neuron traces</h2><p class='muted'>Grey bars: the input; lines: hidden state of each neuron "
    )
    out.append(
        " ".join(
            f"<span style='color:{_PALETTE[j % len(_PALETTE)]}'>h{j}</span>" for j in range(model.hidden_size)
        )
        + "</p><div class='cards'>"
    )
    xs = x[:samples]
    tr = trace(model, xs)
    truth = model.task_spec.target(xs) if model.task_spec else None
    for i in range(len(xs)):
        if model.output_size > 1:
            label = f"prediction {int(tr.output[i].argmax())}"
            label += f", answer {int(truth[i])}" if truth is not None else ""
        else:
            label = f"output {float(tr.output[i, 0]):.3f}"
            label += f", answer {float(truth[i]):.3f}" if truth is not None else ""
        seq = "[" + ", ".join(f"{v:.2f}" for v in xs[i]) + "]"
        out.append(
            f"<div class='card'><div class='muted'>input {i}: {escape(seq)} · {label}</div>"
            f"{trace_svg(xs[i], tr.hidden[i])}</div>"
        )
    out.append("</div>")

    out.append("<h2>Neuron probes</h2>")
    pr = probe(model, x[: min(n, 20_000)])
    out.append(
        "<table><tr><th>neuron</th><th>role</th><th>best feature</th><th class='n'>r</th>"
        "<th class='n'>active</th><th>runner-up</th></tr>"
    )
    for p in pr.neurons:
        ru = f"{p.runner_up[0]} ({p.runner_up[1]:+.2f})" if p.runner_up else ""
        out.append(
            f"<tr><td>{p.neuron}</td><td>{escape(p.role)}</td><td class='pat'>{escape(p.feature)}</td>"
            f"<td class='n'>{p.correlation:+.3f}</td><td class='n'>{p.active_fraction:.0%}</td><td>{escape(ru)}</td></tr>"
        )
    out.append("</table>")

    if task or model.task:
        ab = ablate(model, x[: min(n, 50_000)], task=task, pairs=model.hidden_size <= 16)
        out.append(
            f"<h2>Ablations</h2><p>baseline {ab.metric} {ab.baseline:.4f} on {ab.n_inputs:,} inputs</p>"
        )
        out.append(f"<table><tr><th>neurons</th><th class='n'>{ab.metric}</th><th class='n'>drop</th></tr>")
        for a in ab.singles:
            out.append(
                f"<tr><td>{a.neurons}</td><td class='n'>{a.score:.4f}</td><td class='n'>{a.drop:+.4f}</td></tr>"
            )
        out.append("</table>")
        if ab.pairs:
            out.append(
                f"<p>Most damaging pairs</p><table><tr><th>neurons</th><th class='n'>{ab.metric}</th>"
                "<th class='n'>drop</th><th class='n'>interaction</th></tr>"
            )
            for a in ab.pairs[:10]:
                out.append(
                    f"<tr><td>{a.neurons}</td><td class='n'>{a.score:.4f}</td><td class='n'>{a.drop:+.4f}</td>"
                    f"<td class='n'>{a.interaction:+.4f}</td></tr>"
                )
            out.append("</table>")
    out.append("</main>")
    return page(title, "".join(out), css=RNN_CSS)


def write_report(model: ReluRNN, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``path`` (parents created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, build_report(model, **kwargs))
    return p
