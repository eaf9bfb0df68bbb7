"""Report blocks for analyses: grids with heat maps, layer pictures, plots, tables, and the report folder.

Every block is a function returning trusted HTML (its inputs escaped), so a report is a list of blocks
wrapped in :func:`section` cards and handed to :func:`write_report`:

    heat_grids(prompt_grids, values)          the prompt's grids, laid out like the task, a heat map per cell
                                              (one per layer, with a layer slider, for [L, h, w] values)
    layer_cell_picture(values, layer_labels)  one small heat grid of the answer per layer
    answer_compare(truth, predicted)          truth next to the prediction, wrong cells outlined
    decided_grid(layers)                      the answer grid with the layer each cell is decided at (SVG)
    line_plot(x, series)   heatmap(matrix)    inline SVG
    table(rows)   section(title, *blocks)     an HTML table; a card holding blocks
    write_report(folder, title, sections, data, tables, task_id=, model=, metric=, settings=)
                                              report.html + result.json + one <name>.parquet per table

The canvas blocks (the first three) carry their data in a ``<script type="application/json">`` element of
their own (escaped by :func:`~arcscope.report.html.script_json`) and are drawn by :data:`REPORT_JS` on top of
the viewer's ``drawGrid``; what was drawn is written back as ``data-*`` attributes (``data-rendered``,
``data-cells-shaded``...) so a DOM test can check it without reading pixels. The page records script errors
on ``<body data-errors>`` and sets ``data-ready="1"`` once every block is drawn. The SVG and table blocks
need no script (their values are in ``<title>`` tooltips).

Colour scales: ``diverging`` (blue - white - red, centred on 0, for signed values such as patching effects)
and ``sequential`` (viridis, from 0 or the minimum, for weights and probabilities); ``auto`` picks diverging
when some value is negative. NaN means "no value": the cell is left unshaded.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.analysis.subject import AnalysisError, json_safe
from arcscope.files import atomic_path, atomic_write_text
from arcscope.report.html import (
    ARC_PALETTE,
    COLOUR_NAMES,
    GRID_JS,
    encode_grid,
    escape,
    page,
    palette_legend,
    script_json,
)

SCALES = ("auto", "diverging", "sequential")
"""Colour scale choices of the heat blocks (see the module docstring)."""

COLOUR_MAPS: dict[str, tuple[str, ...]] = {
    # ColorBrewer RdBu, reversed: negative blue, zero white, positive red.
    "diverging": (
        "#2166ac",
        "#4393c3",
        "#92c5de",
        "#d1e5f0",
        "#f7f7f7",
        "#fddbc7",
        "#f4a582",
        "#d6604d",
        "#b2182b",
    ),
    # viridis: perceptually uniform and readable by colour-blind readers.
    "sequential": (
        "#440154",
        "#482878",
        "#3e4989",
        "#31688e",
        "#26828e",
        "#1f9e89",
        "#35b779",
        "#6ece58",
        "#b5de2b",
        "#fde725",
    ),
}
"""Evenly spaced colour stops of each scale; the page scripts and the SVG blocks interpolate the same stops."""

SERIES_COLOURS: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
"""Line colours of :func:`line_plot`, in series order (repeating after ten)."""

_ROLE_LABELS = {
    "train_input": "input",
    "train_output": "output",
    "test_input": "test input",
    "answer": "answer",
}

NEVER = -1
"""A :func:`decided_grid` cell the model never decides (values below it: cells not measured)."""

RESERVED_NAMES = ("report", "json")
"""Table names :func:`write_report` refuses: they are the keys of the page and the JSON in :class:`ReportFiles`."""

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


# ---- numbers and colours -----------------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    """A finite float rounded to 6 significant digits (page data stays small), or None."""
    f = float(v)
    return float(f"{f:.6g}") if math.isfinite(f) else None


def fmt(v: Any) -> str:
    """A number as reports print it: 4 significant digits, integers as they are, NaN as an empty string."""
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    f = float(v)
    if not math.isfinite(f):
        return "" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    return f"{f:.4g}"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def colour_at(cmap: str, t: float) -> str:
    """The colour of scale ``cmap`` at ``t`` in [0, 1] (clamped), as ``#rrggbb``; the page scripts agree."""
    stops = [_rgb(c) for c in COLOUR_MAPS[cmap]]
    x = min(1.0, max(0.0, float(t))) * (len(stops) - 1)
    i = min(len(stops) - 2, int(math.floor(x)))
    f = x - i
    a, b = stops[i], stops[i + 1]
    # int(x + 0.5), not round(): JS Math.round rounds halves up, Python's round() to even.
    return "#" + "".join(f"{int(p + (q - p) * f + 0.5):02x}" for p, q in zip(a, b, strict=True))


@dataclass(frozen=True)
class HeatScale:
    """How values map to colours: ``cmap`` from ``lo`` to ``hi`` (diverging: ``lo == -hi``), and the data's
    own range (None when no value is finite)."""

    cmap: str
    lo: float
    hi: float
    data_min: float | None
    data_max: float | None
    finite: int
    """How many values were finite (the cells that get shaded)."""

    def t(self, v: float) -> float:
        """Where ``v`` falls on the scale, 0..1 (not clamped)."""
        if not self.hi > self.lo:
            return 0.5 if self.cmap == "diverging" else 0.0
        return (float(v) - self.lo) / (self.hi - self.lo)

    def colour(self, v: float) -> str:
        """The colour of value ``v``."""
        return colour_at(self.cmap, self.t(v))

    def to_json(self) -> dict[str, Any]:
        """What the page scripts need."""
        return {"cmap": self.cmap, "lo": _num(self.lo), "hi": _num(self.hi)}


def heat_scale(
    values: Any, scale: str = "auto", vmin: float | None = None, vmax: float | None = None
) -> HeatScale:
    """The colour scale for ``values`` (any arrays, NaN ignored): see the module docstring for ``scale``.

    Diverging scales are symmetric around 0 (at +-max |value|, or +-max(|vmin|, |vmax|) when given);
    sequential ones run from ``vmin`` (default 0 for non-negative data, else the minimum) to ``vmax``
    (default the maximum).
    """
    if scale not in SCALES:
        raise AnalysisError(f"colour scale {scale!r} is not one of {', '.join(SCALES)}")
    arrays = values if isinstance(values, list | tuple) else [values]
    flat = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    allv = np.concatenate(flat) if flat else np.zeros(0)
    fin = allv[np.isfinite(allv)]
    dmin = float(fin.min()) if fin.size else None
    dmax = float(fin.max()) if fin.size else None
    if scale == "auto":
        scale = (
            "diverging"
            if (dmin is not None and dmin < 0) or (vmin is not None and vmin < 0)
            else "sequential"
        )
    if scale == "diverging":
        given = [abs(float(v)) for v in (vmin, vmax) if v is not None]
        m = max(given) if given else max(abs(dmin or 0.0), abs(dmax or 0.0))
        lo, hi = -m, m
    else:
        lo = float(vmin) if vmin is not None else (0.0 if dmin is None or dmin >= 0 else dmin)
        hi = float(vmax) if vmax is not None else (1.0 if dmax is None else dmax)
    return HeatScale(scale, lo, hi, dmin, dmax, int(fin.size))


def colour_bar(sc: HeatScale, label: str = "", note: str | None = None) -> str:
    """A horizontal colour bar of a scale, with its ends (and 0 for a diverging one) and the data's range
    (or ``note`` in its place)."""
    stops = ",".join(COLOUR_MAPS[sc.cmap])
    mid = '<span class="cb-mid">0</span>' if sc.cmap == "diverging" else ""
    if note is not None:
        rng = note
    elif sc.data_min is not None:
        rng = f"data {fmt(sc.data_min)} \u2026 {fmt(sc.data_max)}"
    else:
        rng = "no finite values"
    return (
        f'<div class="cbar" data-cmap="{sc.cmap}" data-lo="{fmt(sc.lo)}" data-hi="{fmt(sc.hi)}">'
        + (f'<span class="cb-label">{escape(label)}</span>' if label else "")
        + f'<span class="cb-lo">{fmt(sc.lo)}</span>'
        f'<span class="cb-bar"><i style="background:linear-gradient(to right,{stops})"></i>{mid}</span>'
        f'<span class="cb-hi">{fmt(sc.hi)}</span><span class="cb-range">{escape(rng)}</span></div>'
    )


def _heat_attrs(sc: HeatScale) -> dict[str, str]:
    return {
        "scale": sc.cmap,
        "heat-min": fmt(sc.data_min),
        "heat-max": fmt(sc.data_max),
        "cells-finite": str(sc.finite),
    }


def _block(kind: str, data: Mapping[str, Any], inner: str, attrs: Mapping[str, str]) -> str:
    """A block the page script draws: a div with its kind, attributes, inner HTML and its JSON data."""
    extra = "".join(f' data-{k}="{escape(v)}"' for k, v in attrs.items())
    return (
        f'<div class="ablock {kind}" data-kind="{kind}" data-rendered="0"{extra}>{inner}'
        f'<script type="application/json" class="ablock-data">{script_json(data)}</script></div>'
    )


def _title(title: str) -> str:
    return f"<h3>{escape(title)}</h3>" if title else ""


def _flat(arr: np.ndarray) -> list[float | None]:
    return [_num(v) for v in np.asarray(arr, dtype=np.float64).ravel()]


def _grid_array(grid: Any, what: str) -> np.ndarray:
    g = np.asarray(grid)
    if g.ndim != 2 or g.size == 0 or not np.issubdtype(g.dtype, np.integer) or g.min() < 0 or g.max() > 9:
        raise AnalysisError(f"{what}: expected a non-empty 2-d grid of colours 0..9, got shape {g.shape}")
    return g


# ---- heat maps on the prompt's grids -----------------------------------------------------------------------


def grid_label(role: str, pair: int) -> str:
    """How a prompt grid is captioned: ``train 0 input``, ``test input``, ``answer``."""
    if role in ("train_input", "train_output"):
        return f"train {pair} {_ROLE_LABELS[role]}"
    return _ROLE_LABELS.get(role, role)


def task_rows(prompt_grids: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Segments laid out like a task: one row per train pair (input -> output), then the test row (test input
    -> answer), then any other grids; ``[{"label": ..., "items": [segment, ...]}]``."""
    train: dict[int, list[tuple[int, int]]] = {}
    test: list[tuple[int, int]] = []
    other: list[int] = []
    order = {"train_input": 0, "train_output": 1, "test_input": 0, "answer": 1, "generated": 2}
    for g in prompt_grids:
        role, seg = str(g["role"]), int(g["segment"])
        if role in ("train_input", "train_output"):
            train.setdefault(int(g["pair"]), []).append((order[role], seg))
        elif role in ("test_input", "answer", "generated"):
            test.append((order[role], seg))
        else:
            other.append(seg)
    rows = [{"label": f"train {p}", "items": [s for _, s in sorted(v)]} for p, v in sorted(train.items())]
    if test:
        rows.append({"label": "test", "items": [s for _, s in sorted(test)]})
    if other:
        rows.append({"label": "other", "items": other})
    return rows


def heat_grids(
    prompt_grids: Sequence[Mapping[str, Any]],
    values: Mapping[Any, Any],
    *,
    title: str = "",
    value_label: str = "value",
    scale: str = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    marks: Mapping[Any, Sequence[tuple[int, int]]] | None = None,
    layer_labels: Sequence[Any] | None = None,
    layer: int | None = None,
    target: int = 200,
) -> str:
    """The prompt's grids in ARC colours, laid out like the task, each with a heat map of ``values`` over its
    cells, a colour bar, and each cell's value on hover.

    ``prompt_grids`` are ``Subject.grids()`` (or a PatchResult's ``grids``: ``clean`` cells in place of
    ``grid``; cells where ``corrupt`` differs are outlined dashed). ``values`` are ``{segment: [h, w]}``
    floats (NaN = no value), as :func:`~arcscope.analysis.subject.to_grids` gives, or ``{segment: [L, h, w]}``
    with one map per layer and a layer slider (``layer_labels``; the map shown first is ``layer``, default the
    one holding the largest |value|; one colour scale for all). ``marks`` ({segment: [(row, col)]}) outlines
    cells, e.g. the answer cell the map is about."""
    by_seg: dict[int, Mapping[str, Any]] = {int(g["segment"]): g for g in prompt_grids}
    cells: dict[int, np.ndarray] = {}
    for seg, g in by_seg.items():
        cells[seg] = _grid_array(g["grid"] if "grid" in g else g["clean"], f"grid {seg}")
    heat: dict[int, np.ndarray] = {}
    n_layers: int | None = None
    for key, arr in values.items():
        seg = int(key)
        if seg not in by_seg:
            raise AnalysisError(
                f"heat values for grid segment {seg}: the prompt has segments {sorted(by_seg)} only"
            )
        a = np.asarray(arr, dtype=np.float64)
        shape = cells[seg].shape
        name = f"grid {seg} ({grid_label(str(by_seg[seg]['role']), int(by_seg[seg]['pair']))})"
        if a.shape[-2:] != shape or a.ndim not in (2, 3):
            raise AnalysisError(
                f"heat values for {name} have shape {a.shape}; the grid is {shape[0]}x{shape[1]} "
                "(give [h, w], or [layers, h, w])"
            )
        lead = a.shape[0] if a.ndim == 3 else None
        if heat and lead != n_layers:
            raise AnalysisError(
                f"heat values for {name}: {lead or 'no'} layers where other grids have {n_layers}"
            )
        n_layers = lead
        heat[seg] = a if a.ndim == 3 else a[None]
    L = n_layers or 1
    labels: list[str] | None = None
    if n_layers is not None or layer_labels is not None:
        labels = [str(i) for i in range(L)] if layer_labels is None else [str(x) for x in layer_labels]
        if len(labels) != L:
            raise AnalysisError(f"{len(labels)} layer labels for {L} layers of heat values")
    if layer is None:
        peak = [
            max((float(np.nanmax(np.abs(h[i]), initial=-1.0)) for h in heat.values()), default=-1.0)
            for i in range(L)
        ]
        layer = int(np.argmax(peak)) if heat else 0
    if not 0 <= int(layer) < L:
        raise AnalysisError(f"layer {layer} is out of range: the heat values have {L} layer(s)")
    layer = int(layer)
    sc = heat_scale(list(heat.values()), scale, vmin, vmax)
    mark_map = {int(k): [[int(r), int(c)] for r, c in v] for k, v in (marks or {}).items()}
    grids: list[dict[str, Any]] = []
    shown = 0
    for seg, g in sorted(by_seg.items()):
        arr = cells[seg]
        h, w = (int(x) for x in arr.shape)
        rec: dict[str, Any] = {
            "seg": seg,
            "role": str(g["role"]),
            "pair": int(g["pair"]),
            "label": grid_label(str(g["role"]), int(g["pair"])),
            "g": encode_grid(arr),
            "h": h,
            "w": w,
            "v": [_flat(m) for m in heat[seg]] if seg in heat else None,
            "n": [int(np.isfinite(m).sum()) for m in heat[seg]] if seg in heat else [0] * L,
        }
        shown += rec["n"][layer]
        for r, c in mark_map.get(seg, []):
            if not (0 <= r < h and 0 <= c < w):
                raise AnalysisError(f"marked cell ({r}, {c}) is outside grid {seg} ({h}x{w})")
        if seg in mark_map:
            rec["marks"] = mark_map[seg]
        corrupt = g.get("corrupt")
        if corrupt is not None:
            bad = _grid_array(corrupt, f"corrupted grid {seg}")
            if bad.shape == arr.shape:
                rec["changed"] = [[int(r), int(c)] for r, c in zip(*np.nonzero(bad != arr), strict=True)]
                rec["cg"] = encode_grid(bad)
            else:
                rec["changed_shape"] = [int(x) for x in bad.shape]
        grids.append(rec)
    data = {
        "grids": grids,
        "rows": task_rows(list(by_seg.values())),
        "scale": sc.to_json(),
        "label": value_label,
        "target": int(target),
        "layers": labels,
        "layer": layer,
    }
    pick = ""
    if labels is not None and L > 1:
        pick = (
            f'<label class="layer-pick">layer <input type="range" min="0" max="{L - 1}" value="{layer}" '
            f'step="1" aria-label="layer"> <b class="layer-name">{escape(labels[layer])}</b></label>'
        )
    inner = (
        _title(title)
        + '<div class="ab-controls">'
        + colour_bar(sc, value_label)
        + pick
        + '<label class="opacity">heat <input type="range" min="0" max="100" value="80" '
        'aria-label="heat map opacity"></label></div>'
        '<div class="ab-body"></div><div class="ab-readout" aria-live="polite"></div>'
    )
    attrs = {**_heat_attrs(sc), "grids": str(len(grids)), "layers": str(L), "cells-shown": str(shown)}
    return _block("heat-grids", data, inner, attrs)


def layer_cell_picture(
    values: Any,
    layer_labels: Sequence[Any] | None = None,
    title: str = "",
    *,
    truth: Any = None,
    value_label: str = "value",
    scale: str = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    target: int = 96,
) -> str:
    """A strip of small heat grids, one per layer, of ``values`` ``[L, h, w]`` over the answer grid (e.g. the
    logit lens's probability of the correct colour per cell), after the ``truth`` grid when given."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 3 or 0 in v.shape:
        raise AnalysisError(f"layer x cell values must be [layers, h, w], got shape {v.shape}")
    n_layers, h, w = v.shape
    labels = [str(i) for i in range(n_layers)] if layer_labels is None else [str(x) for x in layer_labels]
    if len(labels) != n_layers:
        raise AnalysisError(f"{len(labels)} layer labels for {n_layers} layers of values")
    sc = heat_scale(v, scale, vmin, vmax)
    data: dict[str, Any] = {
        "h": h,
        "w": w,
        "labels": labels,
        "values": [_flat(v[i]) for i in range(n_layers)],
        "scale": sc.to_json(),
        "label": value_label,
        "target": int(target),
        "truth": None,
    }
    if truth is not None:
        t = _grid_array(truth, "truth grid")
        if t.shape != (h, w):
            raise AnalysisError(f"truth grid is {t.shape[0]}x{t.shape[1]}, the values are {h}x{w} per layer")
        data["truth"] = encode_grid(t)
    inner = (
        _title(title)
        + f'<div class="ab-controls">{colour_bar(sc, value_label)}</div>'
        + '<div class="ab-body strip"></div><div class="ab-readout" aria-live="polite"></div>'
    )
    return _block("layer-cells", data, inner, {**_heat_attrs(sc), "layers": str(n_layers)})


def decided_grid(
    layers: Any,
    title: str = "",
    *,
    n_layers: int | None = None,
    truth: Any = None,
    layer_labels: Sequence[Any] | None = None,
) -> str:
    """The answer grid with, in each cell, the layer at which it is decided (``layers`` int ``[h, w]``; -1:
    never decided, below -1: not measured, as the logit lens writes them), shaded from early to late;
    ``truth`` adds each cell's colour as a corner swatch. Inline SVG."""
    a = np.asarray(layers)
    if a.ndim != 2 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise AnalysisError(f"decided layers must be a non-empty 2-d int array, got {a.dtype} {a.shape}")
    h, w = a.shape
    top = int(n_layers - 1) if n_layers else max(int(a.max()), 0)
    if n_layers is not None and int(a.max()) > top:
        raise AnalysisError(f"a cell is decided at layer {int(a.max())} but the model has {n_layers} layers")
    t_grid = None
    if truth is not None:
        t_grid = _grid_array(truth, "truth grid")
        if t_grid.shape != a.shape:
            raise AnalysisError(f"truth grid is {t_grid.shape}, the decided layers are {a.shape}")
    labels = None if layer_labels is None else [str(x) for x in layer_labels]
    sc = HeatScale("sequential", 0.0, float(top), None, None, 0)
    cs = max(14, min(32, 420 // max(h, w)))
    W, H = w * cs, h * cs
    parts = [
        f'<svg class="decided" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="layer at which each answer cell is decided" data-h="{h}" data-w="{w}" '
        f'data-decided="{int((a >= 0).sum())}" data-undecided="{int((a == NEVER).sum())}" '
        f'data-unmeasured="{int((a < NEVER).sum())}">'
    ]
    font = max(7, int(cs * 0.45))
    for r in range(h):
        for c in range(w):
            v = int(a[r, c])
            x, y = c * cs, r * cs
            if v >= 0:
                t = sc.t(v)
                fill, ink, text = colour_at("sequential", t), "#fff" if t < 0.6 else "#000", str(v)
                name = labels[v] if labels is not None and v < len(labels) else str(v)
                tip = f"row {r}, col {c}: decided at layer {name}"
            elif v == NEVER:
                fill, ink, text, tip = "#e4e4e0", "#777", "\u00b7", f"row {r}, col {c}: never decided"
            else:
                fill, ink, text = "#ffffff", "#999", ""
                tip = f"row {r}, col {c}: not measured (no token of its own)"
            if t_grid is not None:
                tip += f"; colour {int(t_grid[r, c])} ({COLOUR_NAMES[int(t_grid[r, c])]})"
            parts.append(
                f'<g class="cell" data-r="{r}" data-c="{c}" data-layer="{v}"><title>{escape(tip)}</title>'
                f'<rect x="{x}" y="{y}" width="{cs}" height="{cs}" fill="{fill}" stroke="#fff"/>'
            )
            if t_grid is not None:
                q = max(3, cs // 4)
                parts.append(
                    f'<rect x="{x + 1}" y="{y + 1}" width="{q}" height="{q}" '
                    f'fill="{ARC_PALETTE[int(t_grid[r, c])]}" stroke="#444" stroke-width="0.5"/>'
                )
            parts.append(
                f'<text x="{x + cs / 2:.1f}" y="{y + cs / 2 + font * 0.35:.1f}" font-size="{font}" '
                f'text-anchor="middle" fill="{ink}">{text}</text></g>'
            )
    parts.append("</svg>")
    bar = colour_bar(sc, "layer", note="\u00b7 never decided")
    return (
        f'<div class="ablock decided-block">{_title(title)}<div class="ab-controls">{bar}</div>'
        f"{''.join(parts)}</div>"
    )


def answer_compare(
    truth: Any,
    predicted: Any,
    *,
    title: str = "",
    label: str = "predicted (teacher-forced)",
    target: int = 200,
) -> str:
    """The true answer next to the predicted one (-1: a cell the model has no single token for), with the cells
    that differ outlined and counted, or the shape mismatch named."""
    t = _grid_array(truth, "true answer")
    p = np.asarray(predicted)
    if p.ndim != 2 or p.size == 0 or not np.issubdtype(p.dtype, np.integer) or p.max() > 9:
        raise AnalysisError(f"predicted answer: expected a 2-d grid of colours (-1: unknown), got {p.shape}")
    unknown = p < 0
    shown = np.where(unknown, 0, p)
    data: dict[str, Any] = {"truth": encode_grid(t), "pred": encode_grid(shown), "label": label}
    attrs = {"cells": str(t.size)}
    if p.shape != t.shape:
        data["shape"] = [int(x) for x in p.shape]
        note = f"shape {p.shape[0]}x{p.shape[1]}, expected {t.shape[0]}x{t.shape[1]}"
        attrs.update({"shape-mismatch": "1", "wrong-cells": ""})
    else:
        wrong = (p != t) & ~unknown
        data["wrong"] = [[int(r), int(c)] for r, c in zip(*np.nonzero(wrong), strict=True)]
        data["unknown"] = [[int(r), int(c)] for r, c in zip(*np.nonzero(unknown), strict=True)]
        note = f"{int(wrong.sum())} of {t.size} cells wrong"
        if unknown.any():
            note += f", {int(unknown.sum())} without a token of their own"
        attrs.update({"wrong-cells": str(int(wrong.sum())), "unknown-cells": str(int(unknown.sum()))})
    data["note"] = note
    data["target"] = int(target)
    inner = _title(title) + f'<div class="ab-body"></div><p class="diffnote">{escape(note)}</p>'
    return _block("answer-compare", data, inner, attrs)


# ---- plots -------------------------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (about ``n`` of them, steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    k = 0
    while start + k * step <= hi + step * 1e-9 or not ticks or ticks[-1] < hi:
        ticks.append(round(start + k * step, 12))
        k += 1
    return ticks


def _axis_values(x: Sequence[Any]) -> tuple[np.ndarray, list[str] | None]:
    """Positions of the x values and, for text values, their labels (one position each)."""
    xs = list(x)
    if any(isinstance(v, str) for v in xs):
        return np.arange(len(xs), dtype=np.float64), [str(v) for v in xs]
    return np.asarray(xs, dtype=np.float64), None


def _segments(px: np.ndarray, py: np.ndarray) -> list[list[tuple[float, float]]]:
    """Runs of finite points (a NaN breaks the line)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for a, b in zip(px, py, strict=True):
        if math.isfinite(a) and math.isfinite(b):
            runs[-1].append((float(a), float(b)))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def line_plot(
    x: Sequence[Any],
    series: Mapping[str, Sequence[float]],
    x_label: str = "",
    y_label: str = "",
    *,
    title: str = "",
    y_range: tuple[float, float] | None = None,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    hlines: Mapping[str, float] | None = None,
    width: int = 560,
    height: int = 280,
    max_markers: int = 120,
) -> str:
    """An inline SVG line plot of several series over ``x`` (numbers, or text labels placed evenly), with
    ticked axes, a legend, a point marker with its value per point (up to ``max_markers`` points a series),
    optional shaded ``bands`` ({series: (low, high)}) and dashed reference ``hlines`` ({label: y}); NaN breaks
    a line."""
    px, text_x = _axis_values(x)
    n = len(px)
    if n == 0:
        raise AnalysisError("line plot: no x values")
    ys: dict[str, np.ndarray] = {}
    for name, y in series.items():
        arr = np.asarray(y, dtype=np.float64).ravel()
        if len(arr) != n:
            raise AnalysisError(f"line plot: series {name!r} has {len(arr)} values for {n} x values")
        ys[str(name)] = arr
    band_arr: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (lo_y, hi_y) in (bands or {}).items():
        if str(name) not in ys:
            raise AnalysisError(f"line plot: band for {name!r}, which is not a series ({', '.join(ys)})")
        lo_a, hi_a = (np.asarray(b, dtype=np.float64).ravel() for b in (lo_y, hi_y))
        if len(lo_a) != n or len(hi_a) != n:
            raise AnalysisError(f"line plot: band of {name!r} needs {n} low and high values")
        band_arr[str(name)] = (lo_a, hi_a)
    refs = {str(k): float(v) for k, v in (hlines or {}).items()}
    pool = [a for a in ys.values()] + [b for pair in band_arr.values() for b in pair]
    pool.append(np.asarray(list(refs.values()), dtype=np.float64))
    finite = np.concatenate([a[np.isfinite(a)] for a in pool]) if pool else np.zeros(0)
    if y_range is not None:
        y_lo, y_hi = float(y_range[0]), float(y_range[1])
        yt = [t for t in nice_ticks(y_lo, y_hi) if y_lo - 1e-12 <= t <= y_hi + 1e-12]
    else:
        yt = nice_ticks(float(finite.min()), float(finite.max())) if finite.size else [0.0, 1.0]
        y_lo, y_hi = yt[0], yt[-1]
    if y_hi <= y_lo:
        y_hi = y_lo + 1.0
    fin_x = px[np.isfinite(px)]
    x_lo, x_hi = (float(fin_x.min()), float(fin_x.max())) if fin_x.size else (0.0, 1.0)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    pad_l, pad_r, pad_t = 58, 14, 10
    pad_b = 44 if text_x is None else 30 + min(90, 6 * max(len(s) for s in text_x))
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(v: float) -> float:
        return pad_l + pw * (v - x_lo) / (x_hi - x_lo)

    def sy(v: float) -> float:
        return pad_t + ph * (1 - (v - y_lo) / (y_hi - y_lo))

    def clip(v: np.ndarray) -> np.ndarray:
        return np.clip(v, y_lo, y_hi) if y_range is not None else v

    out = [
        f'<svg class="lineplot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title or y_label or "line plot")}" data-series="{len(ys)}" '
        f'data-x="{n}">'
    ]
    for t in yt:
        yy = sy(t)
        out.append(
            f'<line class="grid" x1="{pad_l}" x2="{pad_l + pw}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
            f'<text class="ytick" x="{pad_l - 5}" y="{yy + 4:.1f}" text-anchor="end">{fmt(t)}</text>'
        )
    if text_x is None:
        xt = [t for t in nice_ticks(x_lo, x_hi, 6) if x_lo - 1e-9 <= t <= x_hi + 1e-9]
        if fin_x.size and np.all(fin_x == np.round(fin_x)):
            # integer x (layers, steps): no tick at 1.5
            xt = [t for t in xt if float(t).is_integer()]
        for t in xt:
            xx = sx(t)
            out.append(
                f'<line class="tick" x1="{xx:.1f}" x2="{xx:.1f}" y1="{pad_t + ph}" y2="{pad_t + ph + 4}"/>'
                f'<text class="xtick" x="{xx:.1f}" y="{pad_t + ph + 16}" text-anchor="middle">{fmt(t)}</text>'
            )
    else:
        every = max(1, math.ceil(n / max(1, pw // 14)))
        for i in range(0, n, every):
            xx = sx(float(i))
            yb = pad_t + ph + 10
            out.append(
                f'<line class="tick" x1="{xx:.1f}" x2="{xx:.1f}" y1="{pad_t + ph}" y2="{pad_t + ph + 4}"/>'
                f'<text class="xtick" x="{xx:.1f}" y="{yb}" text-anchor="end" '
                f'transform="rotate(-40 {xx:.1f} {yb})">{escape(text_x[i])}</text>'
            )
    out.append(
        f'<line class="axis" x1="{pad_l}" x2="{pad_l}" y1="{pad_t}" y2="{pad_t + ph}"/>'
        f'<line class="axis" x1="{pad_l}" x2="{pad_l + pw}" y1="{pad_t + ph}" y2="{pad_t + ph}"/>'
    )
    if x_label:
        out.append(
            f'<text class="xlabel" x="{pad_l + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">'
            f"{escape(x_label)}</text>"
        )
    if y_label:
        cy = pad_t + ph / 2
        out.append(
            f'<text class="ylabel" x="12" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 12 {cy:.1f})">'
            f"{escape(y_label)}</text>"
        )
    for name, (lo_a, hi_a) in band_arr.items():
        colour = SERIES_COLOURS[list(ys).index(name) % len(SERIES_COLOURS)]
        for run_lo, run_hi in zip(_segments(px, clip(lo_a)), _segments(px, clip(hi_a)), strict=False):
            pts = [f"{sx(a):.1f},{sy(b):.1f}" for a, b in run_hi] + [
                f"{sx(a):.1f},{sy(b):.1f}" for a, b in reversed(run_lo)
            ]
            out.append(
                f'<polygon class="band" data-series="{escape(name)}" points="{" ".join(pts)}" fill="{colour}" '
                f'fill-opacity="0.15"/>'
            )
    for label, v in refs.items():
        if not (y_lo <= v <= y_hi):
            continue
        yy = sy(v)
        out.append(
            f'<g class="ref"><title>{escape(label)}: {fmt(v)}</title><line x1="{pad_l}" x2="{pad_l + pw}" '
            f'y1="{yy:.1f}" y2="{yy:.1f}" stroke="#555" stroke-dasharray="4 3"/>'
            f'<text x="{pad_l + pw - 3}" y="{yy - 3:.1f}" text-anchor="end">{escape(label)}</text></g>'
        )
    legend = []
    for k, (name, y) in enumerate(ys.items()):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        ok = np.isfinite(px) & np.isfinite(y)
        cy = clip(y)
        out.append(f'<g class="series" data-name="{escape(name)}" data-points="{int(ok.sum())}">')
        for run in _segments(px, cy):
            pts = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in run)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if ok.sum() <= max_markers:
            for i in np.flatnonzero(ok):
                xv = text_x[i] if text_x is not None else fmt(px[i])
                out.append(
                    f'<circle cx="{sx(px[i]):.1f}" cy="{sy(cy[i]):.1f}" r="3" fill="{colour}">'
                    f"<title>{escape(name)}: {escape(x_label or 'x')} {escape(xv)}, {fmt(y[i])}</title></circle>"
                )
        out.append("</g>")
        legend.append(f'<span class="ls"><i style="background:{colour}"></i>{escape(name)}</span>')
    out.append("</svg>")
    return (
        f'<figure class="ablock plot">{_title(title)}{"".join(out)}'
        f'<figcaption class="series-legend">{"".join(legend)}</figcaption></figure>'
    )


def heatmap(
    matrix: Any,
    row_labels: Sequence[Any] | None = None,
    col_labels: Sequence[Any] | None = None,
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    value_label: str = "value",
    scale: str = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
) -> str:
    """An inline SVG heat map of ``matrix`` ``[R, C]`` (layers x heads, layers x positions), labelled rows and
    columns (thinned where crowded), each cell's value on hover, a colour bar; NaN cells are left grey."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or 0 in m.shape:
        raise AnalysisError(f"heat map needs a non-empty [rows, columns] matrix, got shape {m.shape}")
    R, C = m.shape
    rows = [str(i) for i in range(R)] if row_labels is None else [str(x) for x in row_labels]
    cols = [str(i) for i in range(C)] if col_labels is None else [str(x) for x in col_labels]
    if len(rows) != R or len(cols) != C:
        raise AnalysisError(f"heat map is {R}x{C} but has {len(rows)} row and {len(cols)} column labels")
    sc = heat_scale(m, scale, vmin, vmax)
    cs = max(3, min(26, 720 // C, 520 // R))
    pad_l = 14 + min(140, 7 * max(len(s) for s in rows)) + (16 if y_label else 0)
    pad_t = 6
    col_space = min(110, 7 * max(len(s) for s in cols)) + 12
    W, H = pad_l + C * cs + 8, pad_t + R * cs + col_space + (18 if x_label else 0)
    out = [
        f'<svg class="heatmap" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(title or "heat map")}" data-rows="{R}" data-cols="{C}" '
        f'data-cells-shaded="{sc.finite}" data-scale="{sc.cmap}">',
        f'<rect class="nan" x="{pad_l}" y="{pad_t}" width="{C * cs}" height="{R * cs}" fill="#ecece8"/>',
    ]
    for r in range(R):
        y = pad_t + r * cs
        for c in range(C):
            v = m[r, c]
            if not math.isfinite(v):
                continue
            out.append(
                f'<rect x="{pad_l + c * cs}" y="{y}" width="{cs}" height="{cs}" fill="{sc.colour(v)}">'
                f"<title>{escape(rows[r])} \u00b7 {escape(cols[c])}: {fmt(v)}</title></rect>"
            )
    every_r = max(1, math.ceil(11 / cs))
    for r in range(0, R, every_r):
        y = pad_t + r * cs + cs / 2 + 4
        out.append(
            f'<text class="rlab" x="{pad_l - 4}" y="{y:.1f}" text-anchor="end">{escape(rows[r])}</text>'
        )
    every_c = max(1, math.ceil(11 / cs))
    yb = pad_t + R * cs + 8
    for c in range(0, C, every_c):
        x = pad_l + c * cs + cs / 2 + 3
        out.append(
            f'<text class="clab" x="{x:.1f}" y="{yb}" text-anchor="end" transform="rotate(-50 {x:.1f} {yb})">'
            f"{escape(cols[c])}</text>"
        )
    if x_label:
        out.append(
            f'<text class="xlabel" x="{pad_l + C * cs / 2:.1f}" y="{H - 4}" text-anchor="middle">'
            f"{escape(x_label)}</text>"
        )
    if y_label:
        cy = pad_t + R * cs / 2
        out.append(
            f'<text class="ylabel" x="12" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 12 {cy:.1f})">'
            f"{escape(y_label)}</text>"
        )
    out.append("</svg>")
    return (
        f'<figure class="ablock heatmap-block">{_title(title)}{colour_bar(sc, value_label)}'
        f'<div class="scroll">{"".join(out)}</div></figure>'
    )


# ---- tables and the page -----------------------------------------------------------------------------------


def _cell_text(v: Any) -> tuple[str, bool]:
    """(text, numeric) of a table value."""
    if v is None:
        return "", False
    if isinstance(v, bool | np.bool_):
        return str(bool(v)), False
    if isinstance(v, int | float | np.integer | np.floating):
        return fmt(v), True
    if isinstance(v, list | tuple | dict | np.ndarray):
        return json.dumps(json_safe(v)), False
    return str(v), False


def table(
    rows: Any,
    *,
    columns: Sequence[str] | None = None,
    title: str = "",
    max_rows: int | None = None,
) -> str:
    """An HTML table of ``rows`` (dicts, or a pyarrow Table); columns in first-seen order unless given, numbers
    to 4 significant digits and right-aligned, at most ``max_rows`` rows shown (the count of the rest said)."""
    if hasattr(rows, "to_pylist"):
        rows = rows.to_pylist()
    rows = list(rows)
    if columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            for k in r:
                seen.setdefault(str(k), None)
        columns = list(seen)
    shown = rows if max_rows is None else rows[: max(0, int(max_rows))]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for r in shown:
        cells = []
        for c in columns:
            text, num = _cell_text(r.get(c))
            cells.append(f'<td class="num">{escape(text)}</td>' if num else f"<td>{escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = len(rows) - len(shown)
    note = f'<p class="more">{more} more rows not shown</p>' if more > 0 else ""
    return (
        f'<div class="ablock table-block">{_title(title)}<div class="scroll">'
        f'<table class="data" data-rows="{len(rows)}" data-shown="{len(shown)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{note}</div>"
    )


def section(title: str, *parts: str, note: str = "") -> str:
    """A report section: a card with a heading, an optional note (plain text) and the given blocks."""
    note_html = f'<p class="note">{escape(note)}</p>' if note else ""
    return f'<section class="card"><h2>{escape(title)}</h2>{note_html}{"".join(parts)}</section>'


REPORT_CSS = """
header.page{position:static}
main{max-width:1400px}
header.page .meta{display:flex;flex-wrap:wrap;gap:4px 16px;color:var(--muted);font-size:13px}
header.page .meta b{color:var(--fg);font-weight:500;overflow-wrap:anywhere}
table.settings{border-collapse:collapse;font-size:12px}
table.settings th,table.settings td{padding:1px 10px 1px 0;text-align:left;vertical-align:top}
table.settings th{color:var(--muted);font-weight:500}
section.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 14px;
margin:0 0 14px}
section.card h2{font-size:15px;margin:0 0 8px}
section.card .note{color:var(--muted);margin:0 0 8px}
.ablock{margin:6px 0 10px}
.ablock h3{font-size:13px;margin:4px 0;font-weight:600}
.ab-controls{display:flex;flex-wrap:wrap;gap:6px 18px;align-items:center;font-size:12px;color:var(--muted)}
.cbar{display:inline-flex;align-items:center;gap:6px;font-size:12px;color:var(--muted)}
.cb-bar{position:relative;display:inline-block;width:160px;height:10px}
.cb-bar i{position:absolute;inset:0;border:1px solid #999}
.cb-mid{position:absolute;left:50%;top:10px;transform:translateX(-50%);font-size:10px}
.cb-label{color:var(--fg)}
.hrow{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center;margin-top:8px}
.hrow h3{font-size:12px;color:var(--muted);margin:0;width:4em;font-weight:500}
.arrow{color:var(--muted)}
.ablock figure{margin:0;display:flex;flex-direction:column;align-items:center;gap:2px}
.ablock figcaption{font-size:11px;color:var(--muted)}
.hwrap{position:relative;display:inline-block}
.hwrap canvas.heat{position:absolute;left:0;top:0}
.cell-mark,.cell-diff,.cell-unknown,.cell-changed{position:absolute;box-sizing:border-box;pointer-events:none}
.cell-changed{border:2px dashed #fff;outline:1px dashed #000}
.cell-mark{border:2px solid #fff;outline:2px solid #000}
.cell-diff{border:2px solid #fff;outline:1px solid #000}
.cell-unknown{background:repeating-linear-gradient(45deg,#fff8,#fff8 2px,#0000 2px,#0000 4px)}
.strip{display:flex;flex-wrap:wrap;gap:8px 10px;align-items:flex-end;margin-top:6px}
.layer-pick input{vertical-align:middle}
.ab-readout{min-height:1.4em;font-size:12px;color:var(--muted);font-variant-numeric:tabular-nums}
.diffnote{font-size:12px;color:var(--bad);margin:4px 0}
.compare{display:flex;gap:16px;align-items:flex-start}
figure.plot,figure.heatmap-block{margin:6px 0 10px}
svg.lineplot text,svg.heatmap text{font-size:11px;fill:#444}
svg.lineplot .grid{stroke:#e3e3e0} svg.lineplot .axis,svg.lineplot .tick{stroke:#888}
svg.lineplot .ref text{fill:#555}
.series-legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px}
.ls{display:inline-flex;align-items:center;gap:4px}
.ls i{display:inline-block;width:14px;height:3px}
.scroll{overflow:auto;max-width:100%}
table.data{border-collapse:collapse;font-size:12px}
table.data th,table.data td{padding:2px 10px 2px 0;text-align:left;border-bottom:1px solid var(--line)}
table.data th{color:var(--muted);font-weight:500}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums}
.more{color:var(--muted);font-size:12px}
footer.files{color:var(--muted);font-size:12px;padding:0 16px 16px}
"""
"""Styles of analysis reports (on top of the shared page styles)."""

REPORT_JS = (
    GRID_JS
    + "const COLOUR_MAPS = "
    + script_json({k: [list(_rgb(c)) for c in v] for k, v in COLOUR_MAPS.items()})
    + ";\nconst COLOUR_NAMES = "
    + script_json(list(COLOUR_NAMES))
    + ";\n"
    + """
(function () {
  "use strict";
  const body = document.body;
  const errors = [];
  // Any script error ends up on <body data-errors>, so a headless test sees it without a console.
  function fail(msg) {
    errors.push(String(msg));
    body.dataset.errors = String(errors.length);
    body.dataset.errorText = errors.join(" | ").slice(0, 2000);
  }
  body.dataset.errors = "0";
  window.addEventListener("error", function (e) { fail(e.message || "script error"); });

  // Untrusted text (task ids, labels) only ever goes in through textContent.
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function colourAt(name, t) {
    const s = COLOUR_MAPS[name];
    const x = Math.min(1, Math.max(0, t)) * (s.length - 1);
    const i = Math.min(s.length - 2, Math.floor(x));
    const f = x - i, a = s[i], b = s[i + 1];
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * f); }).join(",") + ")";
  }
  function tOf(v, sc) {
    if (!(sc.hi > sc.lo)) return sc.cmap === "diverging" ? 0.5 : 0;
    return (v - sc.lo) / (sc.hi - sc.lo);
  }
  function fmt(v) { return v === null || v === undefined ? "no value" : String(Number(v.toPrecision(4))); }
  // Heat cells of an h x w grid (row-major values, null = none) on a canvas of drawGrid's geometry, so it
  // can lie exactly over the grid; cells without a value stay transparent.
  function drawHeat(vals, h, w, target, sc) {
    const {cv, ctx, cs, gap} = gridCanvas(h, w, target, "grid heat");
    let n = 0;
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const v = vals[r * w + c];
        if (v === null || v === undefined) continue;
        n++;
        if (ctx) {
          ctx.fillStyle = colourAt(sc.cmap, tOf(v, sc));
          ctx.fillRect(c * cs + gap, r * cs + gap, cs - gap, cs - gap);
        }
      }
    }
    cv.dataset.rendered = "1";
    cv.dataset.h = String(h);
    cv.dataset.w = String(w);
    cv.dataset.cellsShaded = String(n);
    cv.setAttribute("role", "img");
    cv.setAttribute("aria-label", h + " by " + w + " heat map, " + n + " cells with a value");
    return cv;
  }
  // The cell under the pointer, or null.
  function cellAt(ev, cv, h, w) {
    const rect = cv.getBoundingClientRect();
    const c = Math.floor((ev.clientX - rect.left) / rect.width * w);
    const r = Math.floor((ev.clientY - rect.top) / rect.height * h);
    return r >= 0 && r < h && c >= 0 && c < w ? [r, c] : null;
  }
  function hover(cv, h, w, readout, describe) {
    cv.addEventListener("mousemove", function (ev) {
      const rc = cellAt(ev, cv, h, w);
      const text = rc ? describe(rc[0], rc[1]) : "";
      cv.title = text;
      readout.textContent = text;
    });
    cv.addEventListener("mouseleave", function () { readout.textContent = ""; });
  }
  // Outline cells (elements over the canvas, one per cell, as the viewer marks wrong cells).
  function outline(wrap, cells, h, w, target, cls, tip) {
    const {cs, gap} = gridGeometry(h, w, target);
    cells.forEach(function (rc) {
      const m = el("i", cls);
      m.style.left = rc[1] * cs + "px";
      m.style.top = rc[0] * cs + "px";
      m.style.width = m.style.height = cs + gap + "px";
      m.dataset.r = String(rc[0]);
      m.dataset.c = String(rc[1]);
      if (tip) m.title = tip(rc[0], rc[1]);
      wrap.append(m);
    });
  }
  function colourText(grid, r, c) {
    const k = grid.split("|")[r].charCodeAt(c) - 48;
    return "colour " + k + " (" + COLOUR_NAMES[k] + ")";
  }

  const RENDER = {};
  RENDER["heat-grids"] = function (root, d) {
    const out = root.querySelector(".ab-body");
    const readout = root.querySelector(".ab-readout");
    const opacityInput = root.querySelector(".opacity input");
    const layerInput = root.querySelector(".layer-pick input");
    const layerName = root.querySelector(".layer-pick .layer-name");
    const bySeg = {};
    d.grids.forEach(function (g) { bySeg[g.seg] = g; });
    const drawn = [];  // {g, fig, wrap, heat} per figure
    let cur = d.layer;
    function describe(g) {
      return function (r, c) {
        const v = g.v ? g.v[cur][r * g.w + c] : null;
        let text = g.label + ", row " + r + ", col " + c + ": " + colourText(g.g, r, c);
        if (g.cg && g.cg.split("|")[r].charAt(c) !== g.g.split("|")[r].charAt(c)) {
          text += " (corrupted: " + colourText(g.cg, r, c) + ")";
        }
        if (d.layers) text += " \u00b7 layer " + d.layers[cur];
        return text + " \u00b7 " + d.label + " " + fmt(v);
      };
    }
    // (Re)draw the heat canvases of the current layer over the grids, and count what they shade.
    function show() {
      let total = 0;
      drawn.forEach(function (x) {
        let shaded = 0;
        if (x.g.v) {
          const cv = drawHeat(x.g.v[cur], x.g.h, x.g.w, d.target, d.scale);
          cv.style.opacity = String(opacityInput.value / 100);
          if (x.heat) x.heat.replaceWith(cv); else x.base.after(cv);
          x.heat = cv;
          shaded = Number(cv.dataset.cellsShaded);
          hover(cv, x.g.h, x.g.w, readout, describe(x.g));
        }
        x.fig.dataset.cellsShaded = String(shaded);
        x.fig.dataset.cellsFinite = String(x.g.n[cur]);
        total += shaded;
      });
      root.dataset.cellsShaded = String(total);
      root.dataset.layer = String(cur);
      if (layerName) layerName.textContent = d.layers[cur];
    }
    d.rows.forEach(function (row) {
      const line = el("div", "hrow");
      line.append(el("h3", null, row.label));
      row.items.forEach(function (seg, k) {
        const g = bySeg[seg];
        if (k) line.append(el("span", "arrow", "\u2192"));
        const f = el("figure", "hgrid");
        f.dataset.segment = String(seg);
        f.dataset.role = g.role;
        f.dataset.pair = String(g.pair);
        const wrap = el("div", "hwrap");
        const base = drawGrid(g.g, d.target);
        wrap.append(base);
        if (!g.v) hover(base, g.h, g.w, readout, describe(g));
        if (g.marks) outline(wrap, g.marks, g.h, g.w, d.target, "cell-mark");
        let caption = g.label;
        if (g.changed) {
          outline(wrap, g.changed, g.h, g.w, d.target, "cell-changed");
          f.dataset.changedCells = String(g.changed.length);
          if (g.changed.length) caption += " \u00b7 " + g.changed.length + " corrupted";
        } else if (g.changed_shape) {
          caption += " \u00b7 corrupted: " + g.changed_shape[0] + "x" + g.changed_shape[1];
        }
        f.append(wrap, el("figcaption", null, caption));
        line.append(f);
        drawn.push({g: g, fig: f, wrap: wrap, base: base, heat: null});
      });
      out.append(line);
    });
    show();
    opacityInput.addEventListener("input", function () {
      drawn.forEach(function (x) { if (x.heat) x.heat.style.opacity = String(opacityInput.value / 100); });
    });
    if (layerInput) layerInput.addEventListener("input", function () { cur = Number(layerInput.value); show(); });
  };
  RENDER["layer-cells"] = function (root, d) {
    const out = root.querySelector(".ab-body");
    const readout = root.querySelector(".ab-readout");
    if (d.truth) {
      const f = el("figure", "truth");
      const cv = drawGrid(d.truth, d.target);
      hover(cv, d.h, d.w, readout, function (r, c) {
        return "answer, row " + r + ", col " + c + ": " + colourText(d.truth, r, c);
      });
      f.append(cv, el("figcaption", null, "answer"));
      out.append(f);
    }
    let total = 0;
    d.values.forEach(function (vals, i) {
      const f = el("figure", "layer");
      f.dataset.layer = d.labels[i];
      const cv = drawHeat(vals, d.h, d.w, d.target, d.scale);
      hover(cv, d.h, d.w, readout, function (r, c) {
        return "layer " + d.labels[i] + ", row " + r + ", col " + c + ": " + d.label + " " + fmt(vals[r * d.w + c]);
      });
      total += Number(cv.dataset.cellsShaded);
      f.append(cv, el("figcaption", null, d.labels[i]));
      out.append(f);
    });
    root.dataset.cellsShaded = String(total);
  };
  RENDER["answer-compare"] = function (root, d) {
    const out = root.querySelector(".ab-body");
    out.className = "ab-body compare";
    const truth = el("figure", "truth");
    truth.append(drawGrid(d.truth, d.target), el("figcaption", null, "truth"));
    const pred = el("figure", "predicted");
    const wrap = el("div", "hwrap");
    wrap.append(drawGrid(d.pred, d.target));
    if (!d.shape) {
      const rows = d.truth.split("|"), h = rows.length, w = rows[0].length;
      const got = d.pred.split("|");
      outline(wrap, d.wrong, h, w, d.target, "cell-diff", function (r, c) {
        return "row " + r + ", col " + c + ": " + got[r].charAt(c) + ", expected " + rows[r].charAt(c);
      });
      outline(wrap, d.unknown, h, w, d.target, "cell-unknown", function (r, c) {
        return "row " + r + ", col " + c + ": no token of its own";
      });
      pred.dataset.diffCells = d.wrong.map(function (rc) { return rc[0] + "," + rc[1]; }).join(" ");
    }
    pred.append(wrap, el("figcaption", null, d.label));
    out.append(truth, pred);
  };

  document.querySelectorAll(".ablock[data-kind]").forEach(function (root) {
    const kind = root.dataset.kind;
    try {
      const holder = root.querySelector("script.ablock-data");
      const draw = RENDER[kind];
      if (!draw) throw new Error("no renderer for block kind " + kind);
      draw(root, JSON.parse(holder.textContent));
      root.dataset.rendered = "1";
    } catch (e) {
      root.dataset.rendered = "error";
      fail(kind + ": " + (e && e.message ? e.message : e));
    }
  });
  body.dataset.ready = "1";
})();
"""
)
"""The page script of analysis reports: ``drawGrid`` plus the renderers of the grid blocks."""


def _settings_table(settings: Mapping[str, Any]) -> str:
    rows = []
    for k, v in settings.items():
        text = v if isinstance(v, str) else json.dumps(json_safe(v))
        rows.append(f"<tr><th>{escape(k)}</th><td>{escape(text)}</td></tr>")
    return f'<table class="settings">{"".join(rows)}</table>'


def render_report(
    title: str,
    sections: Sequence[str],
    *,
    task_id: str | None = None,
    model: str | None = None,
    metric: str | None = None,
    settings: Mapping[str, Any] | None = None,
    files: Sequence[str] = (),
) -> str:
    """The report page as HTML text: a header (title, task id, model, metric, settings) and the sections
    (trusted HTML from the blocks of this module); ``files`` names the data files written next to it."""
    meta = []
    for key, value in (("task", task_id), ("model", model), ("metric", metric)):
        if value is not None and value != "":
            meta.append(f'<span data-meta="{key}">{key} <b>{escape(value)}</b></span>')
    head = (
        f'<header class="page"><h1>{escape(title)}</h1><div class="meta">{"".join(meta)}</div>'
        + (_settings_table(settings) if settings else "")
        + palette_legend()
        + "</header>"
    )
    foot = ""
    if files:
        foot = f'<footer class="files">data for notebooks: {escape(", ".join(files))}</footer>'
    body = (
        head
        + "<main>"
        + "".join(sections)
        + "<noscript><p>This page draws its grids with JavaScript; please enable it.</p></noscript></main>"
        + foot
    )
    full_title = f"{title} \u00b7 {task_id}" if task_id else title
    return page(full_title, body, css=REPORT_CSS, js=REPORT_JS)


@dataclass(frozen=True)
class ReportFiles(Mapping[str, Path]):
    """What :func:`write_report` wrote; also a mapping ``report`` / ``json`` / table name -> path."""

    folder: Path
    html: Path
    """folder/report.html"""
    json: Path
    """folder/result.json"""
    tables: dict[str, Path] = field(default_factory=dict)
    """table name -> folder/<name>.parquet"""

    @property
    def paths(self) -> list[Path]:
        """Every file written, the page last."""
        return [self.json, *self.tables.values(), self.html]

    def __getitem__(self, key: str) -> Path:
        if key == "report":
            return self.html
        if key == "json":
            return self.json
        return self.tables[key]

    def __iter__(self):
        return iter(["report", "json", *self.tables])

    def __len__(self) -> int:
        return 2 + len(self.tables)


def write_report(
    folder: str | os.PathLike[str],
    title: str,
    sections: Sequence[str],
    data: Mapping[str, Any] | None = None,
    tables: Mapping[str, Any] | None = None,
    *,
    task_id: str | None = None,
    model: str | None = None,
    metric: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> ReportFiles:
    """Write ``folder/report.html`` (self-contained), ``folder/result.json`` (``data`` as plain JSON, NaN as
    null) and one ``folder/<name>.parquet`` per pyarrow table, each atomically (the page last, so a page on
    disk always has its data beside it); returns the paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = dict(tables or {})
    for name, tab in tables.items():
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name.endswith("."):
            raise AnalysisError(
                f"report table name {name!r}: use letters, digits, '_', '-' and '.' (it becomes <name>.parquet)"
            )
        if name in RESERVED_NAMES:
            raise AnalysisError(
                f"report table name {name!r} is taken: {', '.join(RESERVED_NAMES)} name the page"
            )
        if not isinstance(tab, pa.Table):
            raise AnalysisError(f"report table {name!r} is a {type(tab).__name__}, not a pyarrow.Table")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "result.json"
    text = json.dumps(json_safe(dict(data or {})), allow_nan=False, indent=1)
    atomic_write_text(json_path, text + "\n")
    written: dict[str, Path] = {}
    for name, tab in tables.items():
        path = out / f"{name}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(tab, tmp)
        written[name] = path
    html_path = out / "report.html"
    files = ["result.json", *(p.name for p in written.values())]
    page_text = render_report(
        title, sections, task_id=task_id, model=model, metric=metric, settings=settings, files=files
    )
    # errors="replace": a label with a lone surrogate (an undecodable file name) must not abort the report.
    atomic_write_text(html_path, page_text, errors="replace")
    return ReportFiles(out, html_path, json_path, written)


__all__ = [
    "COLOUR_MAPS",
    "NEVER",
    "REPORT_CSS",
    "RESERVED_NAMES",
    "REPORT_JS",
    "SCALES",
    "SERIES_COLOURS",
    "HeatScale",
    "ReportFiles",
    "answer_compare",
    "colour_at",
    "colour_bar",
    "decided_grid",
    "fmt",
    "grid_label",
    "heat_grids",
    "heat_scale",
    "heatmap",
    "json_safe",
    "layer_cell_picture",
    "line_plot",
    "nice_ticks",
    "render_report",
    "section",
    "table",
    "task_rows",
    "write_report",
]
