"""The run report: score, store summary, activation norms per layer, and per-task predictions vs truth.

One self-contained page built on the task viewer: the viewer's cards show each task's predictions next to
the truth, with the cells of a wrong answer that differ from the truth outlined (or the shape mismatch named);
a summary section above them holds the figures and an inline SVG plot (no script, no server).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from arcscope.report.html import escape

RUN_CSS = """
section.run{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:12px 16px;
margin-bottom:14px}
section.run h2{font-size:15px;margin:0 0 8px}
section.run table{border-collapse:collapse;font-size:13px}
section.run td,section.run th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
section.run th{color:var(--muted);font-weight:500}
.runcols{display:flex;flex-wrap:wrap;gap:14px}
.runcols>section{flex:1 1 380px}
svg.norms text{font-size:11px;fill:#444}
"""


def _layer_of(name: str) -> tuple[int, str]:
    m = re.search(r"(?:blocks|layers)\.(-?\d+)", name)
    return (int(m.group(1)) if m else 10**6, name)


def activation_norms(store, max_rows_per_hook: int = 200_000) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of the L2 norm of each hook's rows (reading at most ``max_rows_per_hook``)."""
    out: dict[str, dict[str, float]] = {}
    for hook in sorted(store.hooks, key=_layer_of):
        norms = []
        seen = 0
        for i in range(len(store.shards)):
            x = store.read(hook, shard=i)
            n = x.float().norm(dim=-1).numpy()
            norms.append(n)
            seen += len(n)
            if seen >= max_rows_per_hook:
                break
        allv = np.concatenate(norms) if norms else np.zeros(0)
        out[hook] = {
            "mean": float(allv.mean()) if allv.size else 0.0,
            "std": float(allv.std()) if allv.size else 0.0,
            "rows": int(allv.size),
        }
    return out


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def norms_svg(norms: dict[str, dict[str, float]], width: int = 520, height: int = 220) -> str:
    """An inline SVG plot of mean activation norm (with +-1 std band) per hook, in layer order."""
    if not norms:
        return "<p>No activations captured.</p>"
    names = list(norms)
    means = np.array([norms[n]["mean"] for n in names])
    stds = np.array([norms[n]["std"] for n in names])
    top = float((means + stds).max()) or 1.0
    pad_l, pad_r, pad_t, pad_b = 48, 12, 12, 58
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    xs = [pad_l + (w * (i + 0.5) / len(names)) for i in range(len(names))]

    def y(v: float) -> float:
        return pad_t + h * (1 - v / top)

    parts = [
        f'<svg class="norms" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="mean activation norm per layer">'
    ]
    for frac in (0, 0.5, 1.0):
        yy = y(top * frac)
        parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{yy + 4:.1f}" text-anchor="end">{_fmt(top * frac)}</text>')
    band = " ".join(f"{x:.1f},{y(m + s):.1f}" for x, m, s in zip(xs, means, stds, strict=True))
    band += " " + " ".join(
        f"{x:.1f},{y(max(m - s, 0)):.1f}" for x, m, s in reversed(list(zip(xs, means, stds, strict=True)))
    )
    parts.append(f'<polygon points="{band}" fill="#0074D9" fill-opacity="0.15"/>')
    line = " ".join(f"{x:.1f},{y(m):.1f}" for x, m in zip(xs, means, strict=True))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#0074D9" stroke-width="2"/>')
    for x, m, n in zip(xs, means, names, strict=True):
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y(m):.1f}" r="3" fill="#0074D9"><title>{escape(n)}: '
            f"{m:.3f}</title></circle>"
        )
        label = escape(n.replace("blocks.", "").replace(".hook_", " "))
        parts.append(
            f'<text x="{x:.1f}" y="{pad_t + h + 14}" text-anchor="end" '
            f'transform="rotate(-35 {x:.1f} {pad_t + h + 14})">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[tuple[str, Any]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def wrong_answer_rows(attempts: dict[str, list[list[np.ndarray]]], tasks) -> list[tuple[str, str]]:
    """Summary rows on the wrong attempts: how many have the truth's shape (and cells wrong), how many not."""
    from arcscope.report.viewer import grid_diff

    same = other = wrong_cells = cells = 0
    for task in tasks:
        for k, tries in enumerate(attempts.get(task.id, [])):
            truth = task.test[k].output if k < len(task.test) else None
            if truth is None:
                continue
            for grid in tries:
                if grid is None:
                    continue
                d = grid_diff(grid, truth)
                if "shape" in d:
                    other += 1
                elif d["wrong"]:
                    same += 1
                    wrong_cells += d["wrong"]
                    cells += d["cells"]
    if not same and not other:
        return []
    text = f"{same + other}: {same} with the truth's shape"
    if same:
        text += f" ({wrong_cells} of {cells} cells wrong)"
    text += f", {other} with another shape"
    return [("wrong attempts", text)]


def render_run_report(
    cfg,
    result,
    score,
    attempts: dict[str, list[list[np.ndarray]]],
    tasks,
    storage_options: dict | None = None,
) -> str:
    """The HTML report of one ``arcscope run``."""
    from arcscope.report.viewer import render_viewer
    from arcscope.store import open_store

    store = open_store(cfg.out, storage_options=storage_options)
    norms = activation_norms(store)
    plan = result.plan
    if score is not None:
        label = "teacher-forced argmax (prefill)" if cfg.mode == "prefill" else "generation"
        score_rows = [
            ("official ARC score", f"{score.score:.3f}  ({label}, {score.max_attempts} attempts)"),
            ("tasks solved (all test outputs)", f"{score.n_solved} / {score.n_tasks}"),
            ("test outputs correct", f"{score.n_correct} / {score.n_outputs}"),
        ] + [(f"pass@{k}", f"{v:.3f}") for k, v in sorted(score.pass_at.items())]
    else:
        score_rows = [("score", "not computed (no known test outputs)")]
    parsed = sum(1 for p in result.predictions.values() if p.get("grid") is not None)
    score_rows.append(("responses parsed as grids", f"{parsed} / {len(result.predictions)}"))
    score_rows += wrong_answer_rows(attempts, tasks)
    ident = store.manifest.get("model", {})
    store_rows = [
        ("store", cfg.out),
        (
            "model",
            f"{ident.get('name')} ({ident.get('architecture')}, {ident.get('n_layers')} layers, "
            f"d={ident.get('d_model')}, {ident.get('dtype')})",
        ),
        ("hooks", ", ".join(f"{h} [{d}]" for h, (d, _dt) in store.hooks.items())),
        ("positions", ", ".join(cfg.positions)),
        ("rows", f"{store.n_rows:,}"),
        ("shards", f"{len(store.shards)}"),
        ("bytes", f"{store.nbytes / 1e6:.1f} MB"),
        ("items / batches", f"{len(plan.items)} / {len(plan.batches)} (padding {plan.padding_fraction:.1%})"),
        ("skipped prompts", f"{len(result.skipped)}"),
    ]
    if result.seconds:
        store_rows.append(
            (
                "this run",
                f"{result.tokens:,} tokens in {result.seconds:.1f} s ({result.tokens_per_s:,.0f} tok/s)",
            )
        )
    pre = (
        '<div class="runcols">'
        f'<section class="run"><h2>Score</h2>{_table(score_rows)}</section>'
        f'<section class="run"><h2>Store</h2>{_table(store_rows)}</section>'
        f'<section class="run"><h2>Mean activation norm per hook</h2>{norms_svg(norms)}</section>'
        "</div>"
    )
    return render_viewer(
        tasks, attempts, title=f"arcscope run: {cfg.tasks} ({cfg.mode})", preamble_html=pre, css=RUN_CSS
    )
