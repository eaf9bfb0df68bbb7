"""Attention on grids and attention knockout: which input cells the model reads for an answer cell, and what
happens to the answer when it may no longer read them.

:func:`attention_to_grids` runs the subject once with the attention pattern captured at the chosen layers
(eager attention there, SDPA elsewhere: :func:`arcscope.capture.attention.attention_control`) and keeps, for
each chosen answer cell, the row of the query that predicts it (``query="predict"``, the position before the
cell's token) or of the cell's own token (``query="token"``). Each row's weights are gathered onto the cells
of the prompt's grids (train inputs and outputs, the test input; by grid, row and column), and what is left
is split into named masses so that, per layer, head and answer cell, the cell weights plus the other masses
sum to 1:

* ``format``: tokens before the answer that encode no single cell (text, row breaks, merged tokens);
* ``answer``: the answer written so far (tokens at or after the answer's start that are not key cells);
* ``other_cells``: single-cell tokens before the answer of roles that were not chosen as keys.

:func:`knockout` blocks attention from one set of positions to another in chosen layers and heads (``-inf``
before the softmax at those (head, query, key) entries; the other keys renormalise) and reports the metric
before and after, per answer cell, and the teacher-forced argmax answer grid before and after.
:func:`knockout_sweep` does the same for one knockout per layer, per (layer, head) or per input cell, many
knockouts to a forward pass (each batch row carries its own query and key masks).

Positions are token columns of the subject's prompt; :func:`parse_positions` reads them from short specs
(:data:`POSITION_FORMS`). The default ``from_="answer"`` is every position at or after the last prompt
token: each answer token and each position that predicts one. Blocking only the predicting positions would
leave a path open: a later answer token can read the test input and pass it on to the positions after it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from arcscope.analysis.subject import (
    AnalysisError,
    CellTable,
    Metric,
    Subject,
    as_metric,
    model_name,
    to_grids,
)
from arcscope.errors import CaptureError
from arcscope.progress import ProgressFn, emit

QUERIES = ("predict", "token")
"""Which query row stands for an answer cell: the position that predicts it, or its own token."""
AGGREGATES = ("mean", "max", "sum", "rollout")
"""How :meth:`AttentionResult.aggregate` combines layers and heads."""
KEY_ROLES = ("train_input", "train_output", "test_input")
"""The grids whose cells are the keys of :func:`attention_to_grids` by default."""
OTHER_MASSES = ("format", "answer", "other_cells")
"""Attention outside the key cells, by kind (see the module docstring)."""
SWEEPS = ("layers", "heads", "cells")
"""What :func:`knockout_sweep` varies: one knockout per layer, per (layer, head), or per cell of ``to``."""

POSITION_FORMS = (
    "all: every position",
    "answer: the last prompt token and every answer token (each position that predicts or is an answer token)",
    "answer_predict: the positions whose logits predict an answer cell",
    "answer_cells: the answer's single-cell tokens",
    "format: tokens before the answer outside every grid",
    "test_input: the test input grid (every token of its text, row breaks included)",
    "train: every train grid; train:N: train pair N, input and output",
    "train_input, train_output: every train input / output grid; train_input:N, train_output:N: pair N's",
    "cell:test_input:R,C or cell:answer:R,C, and cell:train_input:N:R,C or cell:train_output:N:R,C: one cell",
    "N: one position; A-B: positions A to B, both included",
    "FORM+FORM: the union of several forms",
)
"""The position specs :func:`parse_positions` accepts."""


# ---- positions -----------------------------------------------------------------------------------------


def _forms() -> str:
    return "accepted forms: " + "; ".join(POSITION_FORMS)


def _segments(subject: Subject, role: str, pair: int | None, spec: str) -> list[int]:
    segs = [
        k
        for k, s in enumerate(subject.prompt.segments)
        if s.role.value == role and (pair is None or int(s.pair) == pair)
    ]
    if not segs:
        pairs = sorted({int(s.pair) for s in subject.prompt.segments if s.role.value == role})
        have = f"its {role} pairs are {pairs}" if pairs else f"it has no {role} grid"
        raise AnalysisError(f"task {subject.task_id}: position spec {spec!r} names no grid; {have}")
    return segs


def _int(text: str, spec: str, subject: Subject) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise AnalysisError(
            f"task {subject.task_id}: position spec {spec!r}: {text!r} is not a whole number; {_forms()}"
        )
    return int(text)


def _cell_mask(subject: Subject, body: str, spec: str) -> np.ndarray:
    cmap = subject.cell_map
    parts = body.split(":")
    role = parts[0].strip().lower().replace("-", "_")
    if role not in ("train_input", "train_output", "test_input", "answer") or len(parts) not in (2, 3):
        raise AnalysisError(f"task {subject.task_id}: cannot read position spec {spec!r}; {_forms()}")
    pair = None
    if len(parts) == 3:
        pair = _int(parts[1], spec, subject)
    elif role.startswith("train"):
        raise AnalysisError(
            f"task {subject.task_id}: position spec {spec!r} needs the train pair: cell:{role}:N:R,C"
        )
    rc = parts[-1].split(",")
    if len(rc) != 2:
        raise AnalysisError(f"task {subject.task_id}: position spec {spec!r}: the cell is R,C; {_forms()}")
    r, c = _int(rc[0], spec, subject), _int(rc[1], spec, subject)
    segs = _segments(subject, role, pair, spec)
    h, w = subject.prompt.segments[segs[0]].shape
    if not (r < h and c < w):
        raise AnalysisError(
            f"task {subject.task_id}: position spec {spec!r}: cell ({r}, {c}) is outside the {h}x{w} grid"
        )
    m = np.isin(cmap.segment, segs) & (cmap.row == r) & (cmap.col == c)
    if not m.any():
        raise AnalysisError(
            f"task {subject.task_id}: position spec {spec!r}: cell ({r}, {c}) is not encoded by a token of "
            "its own (the tokenizer merged it with a neighbour)"
        )
    return m


def _one_mask(subject: Subject, part: str, spec: str) -> np.ndarray:
    cmap = subject.cell_map
    T = len(subject)
    pos = np.arange(T)
    text = part.strip()
    if re.fullmatch(r"\d+", text):
        a = int(text)
        if a >= T:
            raise AnalysisError(
                f"task {subject.task_id}: position {a} in spec {spec!r} is past the prompt's {T} tokens"
            )
        return pos == a
    m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if a > b or b >= T:
            raise AnalysisError(
                f"task {subject.task_id}: position range {a}-{b} in spec {spec!r} must run forward and stay "
                f"within the prompt's {T} tokens (0..{T - 1})"
            )
        return (pos >= a) & (pos <= b)
    key = text.lower().replace("-", "_")
    if key == "all":
        return np.ones(T, dtype=bool)
    if key == "answer":
        return pos >= subject.n_prompt - 1
    if key == "answer_predict":
        return np.isin(pos, subject.answer.predict_pos)
    if key == "answer_cells":
        return np.isin(pos, subject.answer.token_pos)
    if key == "format":
        return (cmap.segment < 0) & (pos < subject.n_prompt)
    if key.startswith("cell:"):
        return _cell_mask(subject, text[5:], spec)
    name, _, pair_text = key.partition(":")
    pair = _int(pair_text, spec, subject) if pair_text else None
    if name == "train":
        segs = _segments(subject, "train_input", pair, spec) + _segments(subject, "train_output", pair, spec)
    elif name in ("train_input", "train_output", "test_input"):
        segs = _segments(subject, name, pair, spec)
    else:
        raise AnalysisError(f"task {subject.task_id}: cannot read position spec {spec!r}; {_forms()}")
    return np.isin(cmap.segment, segs)


def _mask(subject: Subject, spec: Any, what: str = "positions") -> np.ndarray:
    """A bool mask [T] from a spec string, a CellTable, positions or a bool mask; AnalysisError otherwise."""
    T = len(subject)
    if isinstance(spec, str):
        if not spec.strip():
            raise AnalysisError(f"task {subject.task_id}: empty position spec for {what}; {_forms()}")
        out = np.zeros(T, dtype=bool)
        for part in spec.split("+"):
            out |= _one_mask(subject, part, spec)
        if not out.any():
            raise AnalysisError(f"task {subject.task_id}: position spec {spec!r} selects no position")
        return out
    if isinstance(spec, CellTable):
        spec = spec.position
    if isinstance(spec, torch.Tensor):
        spec = spec.detach().cpu().numpy()
    arr = np.asarray(spec)
    if arr.dtype == bool:
        if arr.shape != (T,):
            raise AnalysisError(
                f"task {subject.task_id}: a {what} mask must be bool [{T}] (one per token), got {list(arr.shape)}"
            )
        return arr.copy()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise AnalysisError(
            f"task {subject.task_id}: {what} must be a spec string, a CellTable, token positions or a bool "
            f"mask; got {arr.dtype} values"
        )
    arr = arr.astype(np.int64).reshape(-1)
    bad = arr[(arr < 0) | (arr >= T)]
    if len(bad):
        raise AnalysisError(
            f"task {subject.task_id}: {what}: position {int(bad[0])} is outside the prompt's {T} tokens"
        )
    out = np.zeros(T, dtype=bool)
    out[arr] = True
    return out


def parse_positions(subject: Subject, spec: Any) -> np.ndarray:
    """Sorted token positions (int64) named by ``spec``: a string of :data:`POSITION_FORMS`, a CellTable,
    positions, or a bool mask [T]; AnalysisError listing the accepted forms when it cannot be read."""
    return np.flatnonzero(_mask(subject, spec)).astype(np.int64)


def _label(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    n = len(spec) if isinstance(spec, CellTable) else int(np.asarray(spec).astype(bool).sum())
    return f"{n} given positions"


# ---- layers and heads ----------------------------------------------------------------------------------


def _shape(subject: Subject) -> tuple[int, int]:
    from arcscope.capture.attention import attention_modules, n_heads

    try:
        return len(attention_modules(subject.model)), n_heads(subject.model)[0]
    except CaptureError as e:
        raise AnalysisError(f"task {subject.task_id}: {e}") from None


def _pick(subject: Subject, given: Any, n: int, what: str) -> list[int]:
    if given is None:
        return list(range(n))
    items = [given] if isinstance(given, int | np.integer) else list(given)
    out: list[int] = []
    for x in items:
        i = int(x)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            per = " per layer" if what == "head" else ""
            raise AnalysisError(
                f"task {subject.task_id}: {what} {i} is out of range; the model has {n} {what}s{per} (0..{n - 1})"
            )
        if j not in out:
            out.append(j)
    return sorted(out)


def _cells_json(cells: Any) -> Any:
    return None if cells is None else np.asarray(cells, dtype=np.int64).tolist()


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


# ---- attention on grids --------------------------------------------------------------------------------


@dataclass
class AttentionResult:
    """Attention from answer cells' query rows to the prompt's grid cells, per layer and head."""

    task_id: str
    model: str
    query: str
    """predict (the row of the position predicting the cell) or token (the cell's own token)."""
    layers: list[int]
    """Layer of each entry of the first axis of ``weights``."""
    heads: list[int]
    """Head of each entry of the second axis."""
    answer_row: np.ndarray
    """int64 ``[A]``: row of each chosen answer cell."""
    answer_col: np.ndarray
    """int64 ``[A]``."""
    answer_colour: np.ndarray
    """int64 ``[A]``: its gold colour."""
    query_pos: np.ndarray
    """int64 ``[A]``: the query position whose attention row is kept."""
    keys: CellTable
    """The key cells (``C`` of them): the tokens of the chosen grids that each encode one cell."""
    weights: np.ndarray
    """float32 ``[L, H, A, C]``: attention weight from each answer cell's query to each key cell."""
    other_mass: dict[str, np.ndarray]
    """float32 ``[L, H, A]`` per kind of :data:`OTHER_MASSES`: weight on everything but the key cells."""
    grids_info: list[dict[str, Any]]
    """Every grid of the prompt (segment, role, pair, shape, grid), the keys' ``segment`` indexes it."""
    answer_shape: tuple[int, int]
    rollout: np.ndarray | None = None
    """float32 ``[A, C]``: attention rollout through layers 0..max(layers) (mean of the chosen heads, with
    the residual as half of each layer's map), or None when not asked for."""
    rollout_other: dict[str, np.ndarray] | None = None
    """float32 ``[A]`` per kind: the rollout's mass outside the key cells."""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_shapes(self) -> list[tuple[int, int]]:
        """(rows, columns) of every prompt grid, by segment."""
        return [tuple(g["shape"]) for g in self.grids_info]

    def answer_index(self, cell: Any) -> int:
        """The entry of answer cell ``(row, col)`` (or an entry number) among the result's answer cells."""
        if isinstance(cell, int | np.integer):
            if not 0 <= int(cell) < len(self.answer_row):
                raise AnalysisError(
                    f"task {self.task_id}: answer entry {cell} out of range ({len(self.answer_row)} cells)"
                )
            return int(cell)
        r, c = (int(x) for x in cell)
        hit = np.flatnonzero((self.answer_row == r) & (self.answer_col == c))
        if not len(hit):
            raise AnalysisError(
                f"task {self.task_id}: answer cell ({r}, {c}) is not among the analysed cells "
                f"{list(zip(self.answer_row.tolist(), self.answer_col.tolist(), strict=True))[:12]}"
            )
        return int(hit[0])

    def _axes(self, layers: Any, heads: Any) -> tuple[np.ndarray, np.ndarray]:
        def pick(given, have, what):
            if given is None:
                return np.arange(len(have))
            items = [given] if isinstance(given, int | np.integer) else list(given)
            out = []
            for x in items:
                if int(x) not in have:
                    raise AnalysisError(f"task {self.task_id}: {what} {x} was not analysed; analysed: {have}")
                out.append(have.index(int(x)))
            return np.array(out, dtype=np.int64)

        return pick(layers, self.layers, "layer"), pick(heads, self.heads, "head")

    def _reduce(self, x: np.ndarray, how: str, layers: Any, heads: Any) -> np.ndarray:
        if how not in AGGREGATES:
            raise AnalysisError(f"aggregate {how!r} is not one of {', '.join(AGGREGATES)}")
        li, hi = self._axes(layers, heads)
        sub = x[li][:, hi].astype(np.float64)
        if how == "mean":
            return sub.mean((0, 1))
        if how == "max":
            return sub.max((0, 1))
        return sub.sum((0, 1))

    def aggregate(self, how: str = "mean", layers: Any = None, heads: Any = None) -> np.ndarray:
        """``[A, C]``: the weights combined over the chosen layers and heads (layer and head numbers, None:
        all analysed) by mean, max or sum; ``rollout`` gives the rollout (computed over its own layers)."""
        if how == "rollout":
            return self._rollout()[0]
        return self._reduce(self.weights, how, layers, heads)

    def _rollout(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if self.rollout is None or self.rollout_other is None:
            raise AnalysisError(
                f"task {self.task_id}: no rollout was computed; pass rollout=True to attention_to_grids"
            )
        return self.rollout.astype(np.float64), {
            k: v.astype(np.float64) for k, v in self.rollout_other.items()
        }

    def other(self, how: str = "mean", layers: Any = None, heads: Any = None) -> dict[str, np.ndarray]:
        """``[A]`` per kind: the mass outside the key cells, combined as :meth:`aggregate` does."""
        if how == "rollout":
            return self._rollout()[1]
        return {k: self._reduce(v[..., None], how, layers, heads)[..., 0] for k, v in self.other_mass.items()}

    def mass(self, roles: Sequence[str] | str | None = None) -> np.ndarray:
        """float64 ``[L, H, A]``: total weight on the key cells of ``roles`` (None: all key cells)."""
        keep = np.ones(len(self.keys), dtype=bool)
        if roles is not None:
            names = [roles] if isinstance(roles, str) else list(roles)
            keep = np.isin(self.keys.role, [r.replace("-", "_") for r in names])
        return self.weights[..., keep].astype(np.float64).sum(-1)

    def grids(
        self, answer_cell: Any = None, how: str = "mean", layers: Any = None, heads: Any = None
    ) -> dict[int, np.ndarray]:
        """Heat maps ``{segment: [h, w]}`` on the key grids for one answer cell ((row, col) or an entry
        number; None: the mean over the analysed cells), combined over layers and heads by ``how``."""
        agg = self.aggregate(how, layers, heads)
        values = agg.mean(0) if answer_cell is None else agg[self.answer_index(answer_cell)]
        return to_grids(values, self.keys, self.grid_shapes)

    def to_table(self) -> pa.Table:
        """Long format, one row per (layer, head, answer cell, key): the key cells (kind ``cell``) and then
        one row per other mass (kind ``format``, ``answer``, ``other_cells``; key columns -1, role null),
        so the values of each (layer, head, answer cell) sum to 1."""
        L, H, A, C = self.weights.shape
        n_other = len(self.other_mass)
        K = C + n_other
        vals = np.concatenate(
            [self.weights, np.stack([self.other_mass[k] for k in self.other_mass], -1)], -1
        ).reshape(-1)
        li, hi, ai, ki = (a.reshape(-1) for a in np.meshgrid(*map(np.arange, (L, H, A, K)), indexing="ij"))
        kinds = np.array(["cell"] * C + list(self.other_mass), dtype=object)
        role = np.concatenate([self.keys.role, np.full(n_other, None, dtype=object)])

        def key_col(a):
            return np.concatenate([a, np.full(n_other, -1, dtype=np.int64)])[ki]

        return pa.table(
            {
                "task_id": pa.array([self.task_id] * len(vals), pa.string()),
                "layer": pa.array(np.asarray(self.layers, dtype=np.int64)[li], pa.int32()),
                "head": pa.array(np.asarray(self.heads, dtype=np.int64)[hi], pa.int32()),
                "answer_row": pa.array(self.answer_row[ai], pa.int32()),
                "answer_col": pa.array(self.answer_col[ai], pa.int32()),
                "query_pos": pa.array(self.query_pos[ai], pa.int64()),
                "kind": pa.array(kinds[ki], pa.string()),
                "position": pa.array(key_col(self.keys.position), pa.int64()),
                "segment": pa.array(key_col(self.keys.segment), pa.int32()),
                "role": pa.array(role[ki], pa.string()),
                "pair": pa.array(key_col(self.keys.pair), pa.int32()),
                "row": pa.array(key_col(self.keys.row), pa.int32()),
                "col": pa.array(key_col(self.keys.col), pa.int32()),
                "value": pa.array(vals, pa.float32()),
            }
        )

    def to_json(self, weights: bool = False) -> dict[str, Any]:
        """JSON-safe summary: settings, answer cells, keys, grids, the mean and max over layers and heads
        (and the rollout) per answer cell with the other masses; the full weights only with ``weights``."""

        def lists(a: np.ndarray) -> list:
            return np.round(np.asarray(a, dtype=np.float64), 7).tolist()

        aggregates = {
            how: {
                "cells": lists(self.aggregate(how)),
                "other": {k: lists(v) for k, v in self.other(how).items()},
            }
            for how in ("mean", "max")
        }
        if self.rollout is not None:
            aggregates["rollout"] = {
                "cells": lists(self.rollout),
                "other": {k: lists(v) for k, v in (self.rollout_other or {}).items()},
            }
        out: dict[str, Any] = {
            "kind": "attention",
            "task_id": self.task_id,
            "model": self.model,
            "query": self.query,
            "layers": list(self.layers),
            "heads": list(self.heads),
            "settings": dict(self.settings),
            "answer_shape": list(self.answer_shape),
            "answer": {
                "row": self.answer_row.tolist(),
                "col": self.answer_col.tolist(),
                "colour": self.answer_colour.tolist(),
                "query_pos": self.query_pos.tolist(),
            },
            "keys": self.keys.to_dict(),
            "grids": [
                {
                    "segment": int(g["segment"]),
                    "role": g["role"],
                    "pair": int(g["pair"]),
                    "shape": list(g["shape"]),
                    "grid": np.asarray(g["grid"]).tolist(),
                }
                for g in self.grids_info
            ],
            "aggregates": aggregates,
        }
        if weights:
            out["weights"] = lists(self.weights)
            out["other_mass"] = {k: lists(v) for k, v in self.other_mass.items()}
        return out


def _key_kinds(subject: Subject, keys: CellTable) -> dict[str, np.ndarray]:
    """A mask [T] per other mass: the positions that are not key cells, by kind."""
    T = len(subject)
    free = np.ones(T, dtype=bool)
    free[keys.position] = False
    cell = subject.cell_map.row >= 0
    before = np.arange(T) < subject.n_prompt
    return {
        "format": free & before & ~cell,
        "answer": free & ~before,
        "other_cells": free & before & cell,
    }


def _split(rows: torch.Tensor, keys: CellTable, kinds: dict[str, np.ndarray]):
    """Weights ``[..., C]`` on the keys and ``{kind: [...]}`` masses from attention rows ``[..., T]``."""
    rows = rows.double()
    w = rows[..., torch.as_tensor(keys.position, dtype=torch.long)]
    other = {k: rows[..., torch.as_tensor(m)].sum(-1) for k, m in kinds.items()}
    return w.float().numpy(), {k: v.float().numpy() for k, v in other.items()}


def attention_to_grids(
    subject: Subject,
    *,
    cells: Any = None,
    layers: Any = None,
    heads: Any = None,
    query: str = "predict",
    roles: Sequence[str] | str = KEY_ROLES,
    rollout: bool = False,
    max_bytes: int = 1 << 30,
) -> AttentionResult:
    """Attention from each chosen answer cell (None: all; (row, col); or a list) to the cells of the grids of
    ``roles``, per layer and head (None: all; numbers or lists), from one forward pass; see the module
    docstring for ``query`` and the masses outside the cells. ``rollout`` also computes attention rollout
    (it keeps one [T, T] head-mean map per layer up to the deepest chosen). ``max_bytes`` bounds the
    pattern rows one forward pass captures; more answer cells than fit take more passes."""
    from arcscope.capture import capture
    from arcscope.capture.attention import attention_control, attention_modules

    if query not in QUERIES:
        raise AnalysisError(f"task {subject.task_id}: query {query!r} is not one of {', '.join(QUERIES)}")
    n_layers, n_head = _shape(subject)
    ls = _pick(subject, layers, n_layers, "layer")
    hs = _pick(subject, heads, n_head, "head")
    if not ls or not hs:
        raise AnalysisError(f"task {subject.task_id}: attention needs at least one layer and one head")
    sel = subject.answer.select(cells)
    ans = subject.answer
    qpos = (ans.predict_pos if query == "predict" else ans.token_pos)[sel].astype(np.int64)
    keys = subject.cells(roles)
    if not len(keys):
        raise AnalysisError(f"task {subject.task_id}: no single-cell token in the grids of roles {roles}")
    kinds = _key_kinds(subject, keys)

    T = len(subject)
    sites = [f"blocks.{i}.attn.hook_pattern" for i in ls]
    head_idx = torch.as_tensor(hs, dtype=torch.long)
    # Rollout needs every query row of every layer below: reduced to the head mean as each layer runs, so
    # memory stays at one [T, T] map per layer instead of heads x T x T.
    maps: dict[int, torch.Tensor] = {}
    roll_layers = list(range(max(ls) + 1)) if rollout else []

    def keep_map(i):
        def hook(module, args, out):
            maps[i] = out[1][0].detach()[head_idx.to(out[1].device)].float().mean(0).cpu()

        return hook

    # Captured rows are heads x T per query and layer; answer cells go through in groups whose rows stay
    # under max_bytes, so most tasks take one forward pass and a 30x30 answer on a long prompt a few.
    group = max(1, int(max_bytes) // (len(ls) * n_head * T * 4))
    weights = np.zeros((len(ls), len(hs), len(qpos), len(keys)), dtype=np.float32)
    other = {k: np.zeros((len(ls), len(hs), len(qpos)), dtype=np.float32) for k in kinds}
    mods = dict(attention_modules(subject.model))
    for start in range(0, len(qpos), group):
        part = qpos[start : start + group]
        span = slice(start, start + len(part))
        keep = torch.zeros(1, T, dtype=torch.bool)
        keep[0, torch.as_tensor(part)] = True
        first = roll_layers if start == 0 else []
        handles = []
        try:
            with torch.no_grad(), attention_control(subject.model, patterns=first):
                handles = [mods[i].register_forward_hook(keep_map(i)) for i in first]
                with capture(subject.model, sites, positions=keep) as cap:
                    subject.logits()
        finally:
            for h in handles:
                h.remove()
        # Rows come sorted by position; put them in the order of the chosen answer cells.
        order = torch.as_tensor(np.searchsorted(cap.column.numpy(), part), dtype=torch.long)
        for li, site in enumerate(sites):
            rows = cap[site][order].view(len(part), n_head, T)[:, head_idx].transpose(0, 1)  # [H, g, T]
            w, o = _split(rows, keys, kinds)
            weights[li, :, span] = w
            for k, v in o.items():
                other[k][li, :, span] = v

    roll = roll_other = None
    if rollout:
        eye = torch.eye(T)
        v = None
        for i in reversed(roll_layers):
            a = 0.5 * maps[i] + 0.5 * eye
            v = a[torch.as_tensor(qpos)] if v is None else v @ a
        roll, roll_other = _split(v, keys, kinds)

    return AttentionResult(
        task_id=subject.task_id,
        model=model_name(subject.model),
        query=query,
        layers=ls,
        heads=hs,
        answer_row=ans.row[sel].copy(),
        answer_col=ans.col[sel].copy(),
        answer_colour=ans.colour[sel].copy(),
        query_pos=qpos,
        keys=keys,
        weights=weights,
        other_mass=other,
        grids_info=[{k: g[k] for k in ("segment", "role", "pair", "shape", "grid")} for g in subject.grids()],
        answer_shape=tuple(ans.shape),
        rollout=roll,
        rollout_other=roll_other,
        settings={
            "query": query,
            "roles": [roles] if isinstance(roles, str) else list(roles),
            "cells": _cells_json(cells),
            "rollout": bool(rollout),
            "test_index": subject.test_index,
            "encoder": subject.encoder,
            "template": subject.template,
        },
    )


# ---- knockout ------------------------------------------------------------------------------------------


def _check_open(subject: Subject, queries: np.ndarray, keys: np.ndarray, what: str) -> None:
    # A query whose every visible key is blocked would softmax over equal minima, i.e. attend uniformly to
    # every position, future ones included: not a knockout any more, so it is refused.
    open_keys = np.cumsum(~keys)
    shut = np.flatnonzero(queries & (open_keys == 0))
    if len(shut):
        raise AnalysisError(
            f"task {subject.task_id}: knockout {what}: query position {int(shut[0])} would have no key left to "
            f"attend to (every position 0..{int(shut[0])} is blocked); leave at least one open, e.g. the query "
            "itself or the first token"
        )


def _forward(subject: Subject, knockouts: list, batch: int) -> torch.Tensor:
    from arcscope.capture.attention import attention_control

    with torch.no_grad(), attention_control(subject.model, knockouts=knockouts):
        return subject.logits(subject.batch(batch))


def _baseline(subject: Subject) -> torch.Tensor:
    from arcscope.capture.attention import Knockout

    # "Before" runs the same attention function as the knockouts (the float mask into SDPA), through a
    # knockout that blocks nothing, so before and after differ by the knockout alone: knocking out nothing
    # gives after == before exactly (up to float rounding, "before" equals Subject.score()).
    T = len(subject)
    none = torch.zeros(T, dtype=torch.bool)
    return _forward(subject, [Knockout(none, none, layers=[])], 1)


def _grid(subject: Subject, logits: torch.Tensor) -> np.ndarray:
    return subject.predicted_grid(logits[None])


@dataclass
class KnockoutResult:
    """The answer before and after one attention knockout."""

    task_id: str
    model: str
    metric: str
    """The metric's label."""
    metric_kind: str
    from_: str
    """The query positions' spec (or how many were given)."""
    to: str
    """The key positions' spec."""
    queries: np.ndarray
    """int64 token positions whose attention is cut."""
    keys: np.ndarray
    """int64 token positions they may no longer read."""
    layers: list[int]
    heads: list[int]
    before: float
    """The metric without the knockout."""
    after: float
    answer_row: np.ndarray
    """int64 ``[K]``: every answer cell's row."""
    answer_col: np.ndarray
    answer_colour: np.ndarray
    cell_before: np.ndarray
    """float64 ``[K]``: the metric's kind per answer cell, without the knockout."""
    cell_after: np.ndarray
    grid_before: np.ndarray
    """int64 ``[h, w]``: the teacher-forced argmax colour per answer cell (-1: no token of its own)."""
    grid_after: np.ndarray
    target: np.ndarray
    """int64 ``[h, w]``: the gold answer."""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> float:
        """after - before."""
        return self.after - self.before

    @property
    def cell_delta(self) -> np.ndarray:
        """``[K]``: per answer cell, after - before."""
        return self.cell_after - self.cell_before

    @property
    def changed(self) -> list[tuple[int, int]]:
        """Answer cells whose predicted colour the knockout changes."""
        return [
            (int(r), int(c)) for r, c in zip(*np.nonzero(self.grid_before != self.grid_after), strict=True)
        ]

    @property
    def grid_changed(self) -> bool:
        """Whether the predicted answer grid changes."""
        return bool(self.changed)

    def to_table(self) -> pa.Table:
        """One row per answer cell: row, col, gold colour, metric before/after/delta, prediction before/after."""
        r, c = self.answer_row, self.answer_col
        n = len(r)
        return pa.table(
            {
                "task_id": pa.array([self.task_id] * n, pa.string()),
                "row": pa.array(r, pa.int32()),
                "col": pa.array(c, pa.int32()),
                "colour": pa.array(self.answer_colour, pa.int32()),
                "metric": pa.array([self.metric_kind] * n, pa.string()),
                "before": pa.array(self.cell_before, pa.float64()),
                "after": pa.array(self.cell_after, pa.float64()),
                "delta": pa.array(self.cell_delta, pa.float64()),
                "pred_before": pa.array(self.grid_before[r, c], pa.int32()),
                "pred_after": pa.array(self.grid_after[r, c], pa.int32()),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-safe: settings, metric before/after, per-cell values and the grids."""
        return {
            "kind": "knockout",
            "task_id": self.task_id,
            "model": self.model,
            "metric": self.metric,
            "metric_kind": self.metric_kind,
            "from": self.from_,
            "to": self.to,
            "queries": self.queries.tolist(),
            "keys": self.keys.tolist(),
            "layers": list(self.layers),
            "heads": list(self.heads),
            "before": _num(self.before),
            "after": _num(self.after),
            "delta": _num(self.delta),
            "cells": {
                "row": self.answer_row.tolist(),
                "col": self.answer_col.tolist(),
                "colour": self.answer_colour.tolist(),
                "before": [_num(v) for v in self.cell_before],
                "after": [_num(v) for v in self.cell_after],
            },
            "grid_before": self.grid_before.tolist(),
            "grid_after": self.grid_after.tolist(),
            "target": self.target.tolist(),
            "changed": [list(rc) for rc in self.changed],
            "settings": dict(self.settings),
        }


def _target(subject: Subject) -> np.ndarray:
    return np.asarray(subject.task.test[subject.test_index].output, dtype=np.int64)


def knockout(
    subject: Subject,
    *,
    from_: Any = "answer",
    to: Any = "test_input",
    layers: Any = None,
    heads: Any = None,
    metric: Metric | str | None = None,
) -> KnockoutResult:
    """Block attention from the positions ``from_`` to the positions ``to`` (specs of
    :func:`parse_positions`, a CellTable, positions or a mask) in ``layers`` x ``heads`` (None: all) and
    report the answer's ``metric`` (default logprob) and argmax grid before and after."""
    from arcscope.capture.attention import Knockout

    metric = as_metric(metric)
    n_layers, n_head = _shape(subject)
    ls = _pick(subject, layers, n_layers, "layer")
    hs = _pick(subject, heads, n_head, "head")
    q = _mask(subject, from_, "from")
    k = _mask(subject, to, "to")
    _check_open(subject, q, k, f"from {_label(from_)!r} to {_label(to)!r}")
    before = _baseline(subject)[0]
    ko = Knockout(torch.as_tensor(q), torch.as_tensor(k), layers=ls, heads=hs)
    after = _forward(subject, [ko], 1)[0]
    per = as_metric(metric.kind)
    both = torch.stack([before, after])
    m = metric(both, subject.answer).double().cpu().numpy()
    cells = per.per_cell(both, subject.answer).double().cpu().numpy()
    ans = subject.answer
    return KnockoutResult(
        task_id=subject.task_id,
        model=model_name(subject.model),
        metric=metric.label,
        metric_kind=metric.kind,
        from_=_label(from_),
        to=_label(to),
        queries=np.flatnonzero(q).astype(np.int64),
        keys=np.flatnonzero(k).astype(np.int64),
        layers=ls,
        heads=hs,
        before=float(m[0]),
        after=float(m[1]),
        answer_row=ans.row.copy(),
        answer_col=ans.col.copy(),
        answer_colour=ans.colour.copy(),
        cell_before=cells[0],
        cell_after=cells[1],
        grid_before=_grid(subject, before),
        grid_after=_grid(subject, after),
        target=_target(subject),
        settings={
            "metric_cells": _cells_json(metric.cells),
            "test_index": subject.test_index,
            "encoder": subject.encoder,
        },
    )


# ---- knockout sweeps -----------------------------------------------------------------------------------


@dataclass
class KnockoutSweep:
    """The answer after each of many knockouts: one per layer, per (layer, head), or per key cell."""

    task_id: str
    model: str
    metric: str
    metric_kind: str
    over: str
    """layers, heads or cells (see :data:`SWEEPS`)."""
    from_: str
    to: str
    layers: list[int]
    """The layers the sweep ran over (over=layers, heads) or knocked out in (over=cells)."""
    heads: list[int]
    """The heads knocked out in each knockout (over=layers, cells) or swept over (over=heads)."""
    layer: np.ndarray
    """int64 ``[N]``: the layer of each knockout (-1: all of ``layers``)."""
    head: np.ndarray
    """int64 ``[N]``: its head (-1: all of ``heads``)."""
    cells: CellTable | None
    """over=cells: the key cell of each knockout (N rows); else None."""
    before: float
    after: np.ndarray
    """float64 ``[N]``: the metric after each knockout."""
    answer_row: np.ndarray
    answer_col: np.ndarray
    answer_colour: np.ndarray
    cell_before: np.ndarray
    """float64 ``[K]``."""
    cell_after: np.ndarray
    """float64 ``[N, K]``."""
    grid_before: np.ndarray
    grids_after: np.ndarray
    """int64 ``[N, h, w]``: the predicted answer grid after each knockout."""
    target: np.ndarray
    grids_info: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.after)

    @property
    def delta(self) -> np.ndarray:
        """``[N]``: after - before per knockout."""
        return self.after - self.before

    @property
    def n_changed(self) -> np.ndarray:
        """``[N]``: answer cells whose predicted colour each knockout changes."""
        return (self.grids_after != self.grid_before[None]).reshape(len(self), -1).sum(-1)

    def matrix(self, values: np.ndarray | None = None) -> np.ndarray:
        """over=heads: ``[layers, heads]`` of ``values`` (default: delta) in the order of ``layers``/``heads``."""
        if self.over != "heads":
            raise AnalysisError(f"task {self.task_id}: matrix() is for a sweep over heads, not {self.over}")
        v = self.delta if values is None else np.asarray(values)
        out = np.full((len(self.layers), len(self.heads)), np.nan)
        li = np.searchsorted(np.asarray(self.layers), self.layer)
        hi = np.array([self.heads.index(int(h)) for h in self.head])
        out[li, hi] = v
        return out

    def grids(self, values: np.ndarray | None = None) -> dict[int, np.ndarray]:
        """over=cells: heat maps ``{segment: [h, w]}`` of ``values`` (default: delta) on the key grids."""
        if self.cells is None:
            raise AnalysisError(f"task {self.task_id}: grids() is for a sweep over cells, not {self.over}")
        v = self.delta if values is None else np.asarray(values)
        return to_grids(v, self.cells, [tuple(g["shape"]) for g in self.grids_info])

    def _key_columns(self) -> dict[str, pa.Array]:
        n = len(self)
        if self.cells is None:
            none = np.full(n, -1, dtype=np.int64)
            return {
                "position": pa.array(none, pa.int64()),
                "segment": pa.array(none, pa.int32()),
                "role": pa.array([None] * n, pa.string()),
                "pair": pa.array(none, pa.int32()),
                "row": pa.array(none, pa.int32()),
                "col": pa.array(none, pa.int32()),
            }
        c = self.cells
        return {
            "position": pa.array(c.position, pa.int64()),
            "segment": pa.array(c.segment, pa.int32()),
            "role": pa.array(c.role.tolist(), pa.string()),
            "pair": pa.array(c.pair, pa.int32()),
            "row": pa.array(c.row, pa.int32()),
            "col": pa.array(c.col, pa.int32()),
        }

    def to_table(self) -> pa.Table:
        """One row per knockout: layer, head, key cell (over=cells), metric before/after/delta, changed cells."""
        n = len(self)
        return pa.table(
            {
                "task_id": pa.array([self.task_id] * n, pa.string()),
                "layer": pa.array(self.layer, pa.int32()),
                "head": pa.array(self.head, pa.int32()),
                **self._key_columns(),
                "metric": pa.array([self.metric_kind] * n, pa.string()),
                "before": pa.array([self.before] * n, pa.float64()),
                "after": pa.array(self.after, pa.float64()),
                "value": pa.array(self.delta, pa.float64()),
                "n_changed": pa.array(self.n_changed, pa.int32()),
            }
        )

    def cell_table(self) -> pa.Table:
        """One row per (knockout, answer cell): the per-cell metric after the knockout and its change."""
        n, k = self.cell_after.shape
        ki = np.tile(np.arange(k), n)
        ni = np.repeat(np.arange(n), k)
        r, c = self.answer_row[ki], self.answer_col[ki]
        return pa.table(
            {
                "layer": pa.array(self.layer[ni], pa.int32()),
                "head": pa.array(self.head[ni], pa.int32()),
                "key_position": pa.array(
                    (self.cells.position[ni] if self.cells is not None else np.full(n * k, -1)), pa.int64()
                ),
                "answer_row": pa.array(r, pa.int32()),
                "answer_col": pa.array(c, pa.int32()),
                "before": pa.array(self.cell_before[ki], pa.float64()),
                "after": pa.array(self.cell_after.reshape(-1), pa.float64()),
                "delta": pa.array((self.cell_after - self.cell_before[None]).reshape(-1), pa.float64()),
                "pred_before": pa.array(self.grid_before[r, c], pa.int32()),
                "pred_after": pa.array(self.grids_after[ni, r, c], pa.int32()),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-safe: settings, the metric after each knockout, its change and changed cells."""
        return {
            "kind": "knockout_sweep",
            "task_id": self.task_id,
            "model": self.model,
            "metric": self.metric,
            "metric_kind": self.metric_kind,
            "over": self.over,
            "from": self.from_,
            "to": self.to,
            "layers": list(self.layers),
            "heads": list(self.heads),
            "layer": self.layer.tolist(),
            "head": self.head.tolist(),
            "cells": None if self.cells is None else self.cells.to_dict(),
            "before": _num(self.before),
            "after": [_num(v) for v in self.after],
            "delta": [_num(v) for v in self.delta],
            "n_changed": self.n_changed.tolist(),
            "answer": {
                "row": self.answer_row.tolist(),
                "col": self.answer_col.tolist(),
                "colour": self.answer_colour.tolist(),
            },
            "grid_before": self.grid_before.tolist(),
            "target": self.target.tolist(),
            "grids": [
                {
                    "segment": int(g["segment"]),
                    "role": g["role"],
                    "pair": int(g["pair"]),
                    "shape": list(g["shape"]),
                }
                for g in self.grids_info
            ],
            "settings": dict(self.settings),
        }


def knockout_sweep(
    subject: Subject,
    *,
    from_: Any = "answer",
    to: Any = "test_input",
    over: str = "layers",
    layers: Any = None,
    heads: Any = None,
    metric: Metric | str | None = None,
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
) -> KnockoutSweep:
    """Knock out attention from ``from_`` to ``to`` once per layer (all ``heads``), per (layer, head), or
    (over=cells) once per single-cell token of ``to`` in all ``layers`` x ``heads``; ``batch_size``
    knockouts share one forward pass (None: as many as keep each knockout's [B, heads, T, T] bias near
    1 GiB, at most 16). Each entry equals :func:`knockout` with the same settings up to float rounding."""
    from arcscope.capture.attention import Knockout

    if over not in SWEEPS:
        raise AnalysisError(f"task {subject.task_id}: sweep over {over!r}: use one of {', '.join(SWEEPS)}")
    if batch_size is not None and batch_size < 1:
        raise AnalysisError(f"knockout sweep: batch_size must be at least 1, got {batch_size}")
    metric = as_metric(metric)
    n_layers, n_head = _shape(subject)
    if batch_size is None:
        # Each knockout adds a float bias of [B, heads, T, T] in the layers it touches.
        batch_size = int(min(16, max(1, (1 << 30) // (n_head * len(subject) ** 2 * 4))))
    ls = _pick(subject, layers, n_layers, "layer")
    hs = _pick(subject, heads, n_head, "head")
    q = _mask(subject, from_, "from")
    k = _mask(subject, to, "to")
    T = len(subject)

    # Entries: (layers, heads, key mask) per knockout, with their labels.
    cells = None
    if over == "layers":
        entries = [((i,), tuple(hs), k) for i in ls]
        lab_l, lab_h = np.array(ls, dtype=np.int64), np.full(len(ls), -1, dtype=np.int64)
        _check_open(subject, q, k, f"from {_label(from_)!r} to {_label(to)!r}")
    elif over == "heads":
        # Head-major order: the rows of one batch then sit in different layers, so each layer adds the
        # bias of few knockouts, not one per head.
        entries = [((i,), (h,), k) for h in hs for i in ls]
        lab_l = np.array([i for _h in hs for i in ls], dtype=np.int64)
        lab_h = np.array([h for h in hs for _i in ls], dtype=np.int64)
        _check_open(subject, q, k, f"from {_label(from_)!r} to {_label(to)!r}")
    else:
        cmap_cells = subject.cells()
        cells = cmap_cells.take(k[cmap_cells.position])
        if not len(cells):
            raise AnalysisError(
                f"task {subject.task_id}: knockout sweep over cells: {_label(to)!r} has no cell"
            )
        entries = []
        for p in cells.position:
            one = np.zeros(T, dtype=bool)
            one[p] = True
            _check_open(subject, q, one, f"from {_label(from_)!r} to position {int(p)}")
            entries.append((tuple(ls), tuple(hs), one))
        lab_l = np.full(len(entries), -1, dtype=np.int64)
        lab_h = np.full(len(entries), -1, dtype=np.int64)

    base = _baseline(subject)
    per_kind = as_metric(metric.kind)
    after = np.zeros(len(entries))
    cell_after = np.zeros((len(entries), len(subject.answer)))
    grids_after = np.zeros((len(entries), *subject.answer.shape), dtype=np.int64)
    qt = torch.as_tensor(q)
    for start in range(0, len(entries), batch_size):
        chunk = entries[start : start + batch_size]
        B = len(chunk)
        groups: dict[tuple, list[int]] = {}
        for b, (el, eh, _) in enumerate(chunk):
            groups.setdefault((el, eh), []).append(b)
        keys = torch.as_tensor(np.stack([e[2] for e in chunk]))
        knockouts = []
        for (el, eh), rows in groups.items():
            qb = torch.zeros(B, T, dtype=torch.bool)
            qb[rows] = qt
            knockouts.append(Knockout(qb, keys, layers=list(el), heads=list(eh)))
        logits = _forward(subject, knockouts, B)
        after[start : start + B] = metric(logits, subject.answer).double().cpu().numpy()
        cell_after[start : start + B] = per_kind.per_cell(logits, subject.answer).double().cpu().numpy()
        for b in range(B):
            grids_after[start + b] = _grid(subject, logits[b])
        emit(progress, "knockout sweep", start + B, len(entries))

    if over == "heads":  # back to layer-major order
        order = np.lexsort((lab_h, lab_l))
        lab_l, lab_h, after, cell_after, grids_after = (
            a[order] for a in (lab_l, lab_h, after, cell_after, grids_after)
        )
    ans = subject.answer
    return KnockoutSweep(
        task_id=subject.task_id,
        model=model_name(subject.model),
        metric=metric.label,
        metric_kind=metric.kind,
        over=over,
        from_=_label(from_),
        to=_label(to),
        layers=ls,
        heads=hs,
        layer=lab_l,
        head=lab_h,
        cells=cells,
        before=float(metric(base, ans).double()[0]),
        after=after,
        answer_row=ans.row.copy(),
        answer_col=ans.col.copy(),
        answer_colour=ans.colour.copy(),
        cell_before=per_kind.per_cell(base, ans).double().cpu().numpy()[0],
        cell_after=cell_after,
        grid_before=_grid(subject, base[0]),
        grids_after=grids_after,
        target=_target(subject),
        grids_info=[{k: g[k] for k in ("segment", "role", "pair", "shape")} for g in subject.grids()],
        settings={
            "metric_cells": _cells_json(metric.cells),
            "batch_size": batch_size,
            "test_index": subject.test_index,
            "encoder": subject.encoder,
        },
    )
