"""Logit lens and tuned lens: at which layer is each answer cell decided.

The *logit lens* reads the residual stream of a layer (``blocks.L.hook_resid_post``, or ``resid_pre`` /
``resid_mid``) at the positions that predict the answer's cells (:attr:`AnswerCells.predict_pos`) and sends
it through the model's own final norm and unembedding, as if the network stopped there. For every answer cell
and layer :func:`logit_lens` reports the rank (1 = top) of the correct colour token among all tokens and among
the 10 colour tokens, its probability over the vocabulary and over the colours (a softmax over the 10 colour
tokens only), and the colour that layer would write. A cell is *decided* at the first layer from which the
correct colour stays top-1 among the colours through the last layer looked at (:data:`NEVER` if the last
layer gets it wrong). Only the answer's positions are projected, one layer and ``batch`` positions at a time,
so 30 layers x 900 cells never hold a [layers, cells, vocab] array. At the model's last layer the lens is
the model's own logits (the tests check it bit for bit).

The *tuned lens* (Belrose et al., 2023) puts one affine map per layer (``d x d`` plus bias, starting at the
identity, so at initialisation it is the logit lens) in front of the final norm, trained so that the lens of
that layer matches the model's final distribution: the loss is KL(final || lens) over the vocabulary.
:func:`train_tuned_lens` trains it from rows of an activation store (the layers' ``hook_resid_post`` rows and
the last layer's, or ``ln_final.hook_normalized``) or from Subjects by running the model; rows are split by
task into train and held-out, and :class:`LensFit` reports the held-out KL of the plain and the tuned lens per
layer. :meth:`TunedLens.save` writes it as one safetensors file whose header carries the rest as JSON.

Curves over several tasks: :func:`lens_curve` averages results (each task weighs the same, or each cell),
and :func:`logit_lens_tasks` runs the lens over a task source and returns that average with the per-task
results.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from arcscope.analysis.config import LensError, TunedLensConfig
from arcscope.analysis.subject import Subject, json_safe, model_name, natural_key
from arcscope.config import make_config
from arcscope.errors import ArcscopeError
from arcscope.progress import ProgressFn, emit

SITES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
"""Residual-stream sites the lens reads, in their order within a layer."""
NEVER = -1
"""``decided`` value of a cell the last layer looked at gets wrong."""
NO_TOKEN = -2
"""``decided_layer`` value of a grid cell that no token of its own encodes (not measured)."""
WEIGHTS = ("tasks", "cells")
"""How :func:`lens_curve` averages: each task the same weight, or each cell."""
CURVES = ("prob", "logprob", "rank", "median_rank", "colour_prob", "colour_rank", "accuracy", "decided")
"""Per-layer curves (:meth:`LensResult.curve`): mean probability and log-probability of the correct token,
mean and median rank among the vocabulary, mean probability and rank among colours, the share of cells whose
top colour is right, and the share of cells decided at or before that layer."""
FORMAT = "arcscope.tuned_lens"
FORMAT_VERSION = 1


# ---- where the lens reads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LensSite:
    """One residual-stream place the lens reads."""

    hook: str
    """TransformerLens-style name, e.g. ``blocks.3.hook_resid_post``."""
    layer: int
    site: str
    """One of :data:`SITES`."""


def _raw_model(model: Any) -> Any:
    if hasattr(model, "model") and hasattr(model, "tokenizer"):  # a LoadedModel
        return model.model
    return model


def _model_type(model: Any) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__)


def _layout(model: Any) -> Any:
    from arcscope.capture.spec import KNOWN_FAMILIES, find_layout

    layout = find_layout(model)
    if layout is None or model.get_output_embeddings() is None:
        raise LensError(
            f"the logit lens needs the Hugging Face Llama layout ({', '.join(KNOWN_FAMILIES)}): decoder "
            f"layers, a final norm and an unembedding (lm_head); this model ({_model_type(model)}) does not "
            "have it"
        )
    return layout


def _parse_sites(sites: str | Sequence[str]) -> list[str]:
    from arcscope.capture.spec import LAYER_ALIASES, split_names

    names = split_names(sites) if isinstance(sites, str) else [str(s).strip() for s in sites]
    if not names:
        raise LensError(f"no lens site given; use one or more of {', '.join(SITES)}")
    out = []
    for s in names:
        canon = LAYER_ALIASES.get(s.removeprefix("blocks.*."))
        if canon not in SITES:
            raise LensError(
                f"lens site {s!r}: the lens reads the residual stream; use one of {', '.join(SITES)} "
                "(or resid_pre, resid_mid, resid_post)"
            )
        out.append(canon)
    return out


def _parse_layers(layers: Any, n: int, what: str) -> list[int]:
    if layers is None:
        return list(range(n))
    items = [layers] if isinstance(layers, int | np.integer) else list(layers)
    if not items:
        raise LensError(f"no layer given; {what} has {n} layers (0..{n - 1})")
    out = set()
    for x in items:
        if isinstance(x, bool) or not isinstance(x, int | np.integer):
            raise LensError(f"layer {x!r} is not a layer number; {what} has {n} layers (0..{n - 1})")
        if not -n <= int(x) < n:
            raise LensError(
                f"layer {int(x)} is out of range: {what} has {n} layers (0..{n - 1}, or -{n}..-1 from the end)"
            )
        out.add(int(x) % n)
    return sorted(out)


def lens_sites(
    model: Any, layers: Any = None, sites: str | Sequence[str] = "hook_resid_post"
) -> list[LensSite]:
    """The residual-stream places a lens over ``layers`` (None: all; negative counts from the end) and
    ``sites`` reads, in the order the residual stream passes them."""
    model = _raw_model(model)
    layout = _layout(model)
    want = set(_parse_sites(sites))
    idx = _parse_layers(layers, layout.n_layers, f"the model ({_model_type(model)})")
    return [LensSite(f"blocks.{i}.{s}", i, s) for i in idx for s in SITES if s in want]


# ---- the projection ------------------------------------------------------------------------------------


def _softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    return logits if not cap else torch.tanh(logits / cap) * cap


class Unembed:
    """The model's final norm and unembedding, applied to residual-stream rows."""

    def __init__(self, model: Any):
        model = _raw_model(model)
        layout = _layout(model)
        self.model = model
        self.norm = model.get_submodule(layout.final_norm)
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.n_layers = layout.n_layers
        self.d_model = layout.d_model
        self.vocab = int(self.head.weight.shape[0])
        self.final_hook = f"blocks.{layout.n_layers - 1}.hook_resid_post"

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """float32 logits ``[n, V]`` of rows ``[n, d]``, computed in the model's dtype by its own modules (at the
        last layer: exactly the model's logits)."""
        with torch.no_grad():
            return _softcap(self.head(self.norm(h)), self.softcap).float()

    @property
    def device(self) -> torch.device:
        """Where the unembedding is."""
        return self.head.weight.device

    def float32(
        self, device: torch.device | None = None
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
        """Differentiable float32 (norm + unembed, unembed only) on frozen copies of the weights on ``device``
        (None: the model's), for training: gradients never reach the model."""
        dev = device or self.device
        norm = copy.deepcopy(self.norm).to(dev).float().requires_grad_(False)
        w = self.head.weight.detach().to(dev, torch.float32)
        b = (
            None
            if getattr(self.head, "bias", None) is None
            else self.head.bias.detach().to(dev, torch.float32)
        )

        def head(x: torch.Tensor) -> torch.Tensor:
            return _softcap(F.linear(x, w, b), self.softcap)

        return (lambda x: head(norm(x))), head


def lens_logits(
    model: Any, hidden: torch.Tensor, hook: str | None = None, *, tuned: TunedLens | None = None
) -> torch.Tensor:
    """float32 logits ``[..., V]`` the lens reads from residual rows ``[..., d]`` (``tuned``: through the
    tuned lens's map for ``hook`` first)."""
    un = Unembed(model)
    h = hidden.to(un.device)
    if tuned is not None:
        if hook is None:
            raise LensError("a tuned lens needs the hook the rows come from (hook=)")
        tuned.check(un.model, [hook])
        h = tuned.translate(hook, h)
    return un(h)


def _capture_rows(
    model: Any, input_ids: torch.Tensor, positions: np.ndarray, hooks: list[str]
) -> dict[str, torch.Tensor]:
    """Rows ``[len(positions), d]`` of each hook at ``positions`` of one sequence, in the order given."""
    from arcscope.capture import capture

    uniq = np.unique(positions)
    mask = torch.zeros(input_ids.shape, dtype=torch.bool)
    mask[0, torch.as_tensor(uniq)] = True
    with torch.no_grad(), capture(model, hooks, positions=mask, offload=False, record_coords=False) as cap:
        # Only the last position is unembedded by the model: the lens does its own projections.
        model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
        got = cap.tensors()
    order = torch.as_tensor(np.searchsorted(uniq, positions))
    return {h: got[h][order.to(got[h].device)] for h in hooks}


def _cell_stats(logits: torch.Tensor, target: torch.Tensor, ids: torch.Tensor, colour: torch.Tensor) -> dict:
    """Rank, log-probability, colour distribution and pick per row of float32 logits ``[c, V]``."""
    t = logits.gather(-1, target[:, None]).squeeze(-1)
    # log_softmax then gather: the same numbers as Metric("logprob") on the model's logits.
    logprob = torch.log_softmax(logits, -1).gather(-1, target[:, None]).squeeze(-1)
    # Rank 1 = top; ties count in the correct token's favour.
    rank = (logits > t[:, None]).sum(-1) + 1
    cl = logits.gather(-1, ids.clamp(min=0)).masked_fill(ids < 0, float("-inf"))
    tc = cl.gather(-1, colour[:, None]).squeeze(-1)
    return {
        "logprob": logprob,
        "rank": rank,
        "colour_probs": torch.softmax(cl, -1),
        "colour_rank": (cl > tc[:, None]).sum(-1) + 1,
        "pick": cl.argmax(-1),
    }


def decided_index(correct: np.ndarray) -> np.ndarray:
    """Per column of a bool ``[L, K]`` (top colour right at lens row l), the first row from which it stays
    right through the last row, or :data:`NEVER`."""
    correct = np.asarray(correct, dtype=bool)
    n = correct.shape[0]
    out = np.full(correct.shape[1], NEVER, dtype=np.int64)
    if n == 0:
        return out
    wrong = ~correct
    # The last wrong row, counted from the end; every row after it is right.
    last_wrong = np.where(wrong.any(0), n - 1 - np.argmax(wrong[::-1], axis=0), -1)
    ok = correct[-1]
    out[ok] = last_wrong[ok] + 1
    return out


# ---- results -------------------------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _nums(a: np.ndarray) -> list:
    """A float array as nested lists with NaN/inf as None (JSON)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return _num(a)  # type: ignore[return-value]
    return [_nums(x) if a.ndim > 1 else _num(x) for x in a]


@dataclass
class LensResult:
    """The lens on one subject: per lens row (layer x site) and answer cell, how the correct colour fares."""

    task_id: str
    model: str
    """The model's name."""
    lens: str
    """``logit`` or ``tuned``."""
    hooks: list[str]
    """``[L]`` the hook of each lens row (``blocks.3.hook_resid_post``)."""
    layers: np.ndarray
    """int64 ``[L]`` the layer of each lens row."""
    sites: list[str]
    """``[L]`` the site of each lens row (one of :data:`SITES`)."""
    row: np.ndarray
    """int64 ``[K]`` answer row of each measured cell."""
    col: np.ndarray
    """int64 ``[K]``."""
    colour: np.ndarray
    """int64 ``[K]`` the correct colour."""
    target: np.ndarray
    """int64 ``[K]`` the correct token."""
    predict_pos: np.ndarray
    """int64 ``[K]`` the token position read (the one predicting the cell's token)."""
    shape: tuple[int, int]
    """The answer grid's (rows, columns)."""
    rank: np.ndarray
    """int64 ``[L, K]`` rank of the correct token among all tokens (1 = top)."""
    colour_rank: np.ndarray
    """int64 ``[L, K]`` rank of the correct colour among the colour tokens (1..10)."""
    logprob: np.ndarray
    """float64 ``[L, K]`` log-probability of the correct token over the vocabulary."""
    colour_probs: np.ndarray
    """float64 ``[L, K, 10]`` softmax over the 10 colour tokens (0 for a colour with no token here)."""
    pick: np.ndarray
    """int64 ``[L, K]`` the colour the lens ranks first among colours."""
    decided: np.ndarray
    """int64 ``[K]`` first lens row from which the pick stays right to the last row, or :data:`NEVER`."""
    settings: dict[str, Any] = field(default_factory=dict)
    """How it was run: layers, sites, batch, tuned lens, test index, encoder, template."""

    # ---- derived values ------------------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        """Lens rows (layers x sites)."""
        return len(self.hooks)

    @property
    def n_cells(self) -> int:
        """Measured answer cells."""
        return len(self.row)

    @property
    def prob(self) -> np.ndarray:
        """float64 ``[L, K]`` probability of the correct token over the vocabulary."""
        return np.exp(self.logprob)

    @property
    def colour_prob(self) -> np.ndarray:
        """float64 ``[L, K]`` probability of the correct colour among the colours."""
        return np.take_along_axis(self.colour_probs, self.colour[None, :, None], -1)[..., 0]

    @property
    def correct(self) -> np.ndarray:
        """bool ``[L, K]`` whether the top colour is the right one."""
        return self.pick == self.colour[None]

    @property
    def decided_layer(self) -> np.ndarray:
        """int64 ``[h, w]``: the layer at which each answer cell is decided (:data:`NEVER`: not by the last
        layer looked at; :data:`NO_TOKEN`: no token of its own encodes the cell)."""
        out = np.full(self.shape, NO_TOKEN, dtype=np.int64)
        d = self.decided
        out[self.row, self.col] = np.where(d >= 0, self.layers[np.maximum(d, 0)], NEVER)
        return out

    @property
    def decided_hook(self) -> list[str | None]:
        """``[K]`` the hook at which each cell is decided (None: never)."""
        return [self.hooks[int(d)] if d >= 0 else None for d in self.decided]

    def grid(self, values: np.ndarray) -> np.ndarray:
        """Per-cell values ``[..., K]`` as ``[..., h, w]`` float64 on the answer grid (NaN: not measured)."""
        values = np.asarray(values, dtype=np.float64)
        out = np.full((*values.shape[:-1], *self.shape), np.nan)
        out[..., self.row, self.col] = values
        return out

    def layer_grids(self, what: str = "colour_prob") -> np.ndarray:
        """``[L, h, w]`` one answer-grid picture per lens row of ``what`` (rank, colour_rank, logprob, prob,
        colour_prob, pick, correct): the layer x cell picture."""
        names = ("rank", "colour_rank", "logprob", "prob", "colour_prob", "pick", "correct")
        if what not in names:
            raise LensError(f"lens picture {what!r} is not one of {', '.join(names)}")
        return self.grid(getattr(self, what))

    def curve(self) -> dict[str, np.ndarray]:
        """Per-lens-row curves averaged over the cells (:data:`CURVES`), each float64 ``[L]``."""
        rows = np.arange(self.n_rows)[:, None]
        return {
            "prob": self.prob.mean(1),
            "logprob": self.logprob.mean(1),
            "rank": self.rank.mean(1).astype(np.float64),
            "median_rank": np.median(self.rank, 1).astype(np.float64),
            "colour_prob": self.colour_prob.mean(1),
            "colour_rank": self.colour_rank.mean(1).astype(np.float64),
            "accuracy": self.correct.mean(1).astype(np.float64),
            "decided": ((self.decided[None] >= 0) & (self.decided[None] <= rows)).mean(1).astype(np.float64),
        }

    # ---- export --------------------------------------------------------------------------------------

    def to_table(self) -> pa.Table:
        """One row per (lens row, answer cell): task_id, lens, hook, layer, site, row, col, colour, pick,
        correct, rank, colour_rank, prob, logprob, colour_prob, decided (the cell is decided by this row)."""
        n_l, n_k = self.n_rows, self.n_cells
        li = np.repeat(np.arange(n_l), n_k)
        ki = np.tile(np.arange(n_k), n_l)
        return pa.table(
            {
                "task_id": pa.array([self.task_id] * (n_l * n_k), pa.string()),
                "lens": pa.array([self.lens] * (n_l * n_k), pa.string()),
                "hook": pa.array([self.hooks[i] for i in li], pa.string()),
                "layer": pa.array(self.layers[li], pa.int32()),
                "site": pa.array([self.sites[i] for i in li], pa.string()),
                "row": pa.array(self.row[ki], pa.int32()),
                "col": pa.array(self.col[ki], pa.int32()),
                "colour": pa.array(self.colour[ki], pa.int8()),
                "pick": pa.array(self.pick.reshape(-1), pa.int8()),
                "correct": pa.array(self.correct.reshape(-1), pa.bool_()),
                "rank": pa.array(self.rank.reshape(-1), pa.int64()),
                "colour_rank": pa.array(self.colour_rank.reshape(-1), pa.int8()),
                "prob": pa.array(self.prob.reshape(-1), pa.float64()),
                "logprob": pa.array(self.logprob.reshape(-1), pa.float64()),
                "colour_prob": pa.array(self.colour_prob.reshape(-1), pa.float64()),
                "decided": pa.array(
                    ((self.decided[ki] >= 0) & (self.decided[ki] <= li)).astype(bool), pa.bool_()
                ),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """Everything as plain JSON values: settings, cells, the ``[L, K]`` arrays, the decided grid, curves."""
        return {
            "kind": "logit_lens",
            "task_id": self.task_id,
            "model": self.model,
            "lens": self.lens,
            "hooks": list(self.hooks),
            "layers": self.layers.tolist(),
            "sites": list(self.sites),
            "shape": list(self.shape),
            "cells": {
                "row": self.row.tolist(),
                "col": self.col.tolist(),
                "colour": self.colour.tolist(),
                "target": self.target.tolist(),
                "predict_pos": self.predict_pos.tolist(),
            },
            "rank": self.rank.tolist(),
            "colour_rank": self.colour_rank.tolist(),
            "logprob": _nums(self.logprob),
            "prob": _nums(self.prob),
            "colour_prob": _nums(self.colour_prob),
            "colour_probs": _nums(self.colour_probs),
            "pick": self.pick.tolist(),
            "decided": self.decided.tolist(),
            "decided_layer": self.decided_layer.tolist(),
            "curve": {k: _nums(v) for k, v in self.curve().items()},
            "settings": json_safe(self.settings),
        }


def logit_lens(
    subject: Subject,
    *,
    layers: Any = None,
    sites: str | Sequence[str] = "hook_resid_post",
    tuned: TunedLens | None = None,
    batch: int = 256,
) -> LensResult:
    """The (tuned, when ``tuned`` is given) lens over ``layers`` (None: all) and ``sites`` at the answer's
    predicting positions, ``batch`` positions projected at a time."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise LensError(
            f"task {subject.task_id}: lens batch must be a positive number of positions, got {batch!r}"
        )
    model = subject.model
    un = Unembed(model)
    plan = lens_sites(model, layers, sites)
    hooks = [p.hook for p in plan]
    if tuned is not None:
        tuned.check(model, hooks)
    ans = subject.answer
    acts = _capture_rows(model, subject.input_ids, ans.predict_pos, hooks)
    dev = un.device
    target = torch.as_tensor(ans.target, device=dev)
    ids = torch.as_tensor(ans.colour_ids, device=dev)
    colour = torch.as_tensor(ans.colour, device=dev)
    n_k = len(ans)
    out = {
        "logprob": np.zeros((len(plan), n_k)),
        "rank": np.zeros((len(plan), n_k), dtype=np.int64),
        "colour_probs": np.zeros((len(plan), n_k, 10)),
        "colour_rank": np.zeros((len(plan), n_k), dtype=np.int64),
        "pick": np.zeros((len(plan), n_k), dtype=np.int64),
    }
    with torch.no_grad():
        for i, p in enumerate(plan):
            h = acts.pop(p.hook).to(dev)
            for a in range(0, n_k, batch):
                x = h[a : a + batch]
                if tuned is not None:
                    x = tuned.translate(p.hook, x)
                sl = slice(a, a + batch)
                st = _cell_stats(un(x), target[sl], ids[sl], colour[sl])
                for k, v in st.items():
                    out[k][i, sl] = v.double().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
    correct = out["pick"] == ans.colour[None]
    return LensResult(
        task_id=str(subject.task_id),
        model=model_name(model),
        lens="logit" if tuned is None else "tuned",
        hooks=hooks,
        layers=np.array([p.layer for p in plan], dtype=np.int64),
        sites=[p.site for p in plan],
        row=ans.row.copy(),
        col=ans.col.copy(),
        colour=ans.colour.copy(),
        target=ans.target.copy(),
        predict_pos=ans.predict_pos.copy(),
        shape=tuple(int(x) for x in ans.shape),
        rank=out["rank"],
        colour_rank=out["colour_rank"],
        logprob=out["logprob"],
        colour_probs=out["colour_probs"],
        pick=out["pick"],
        decided=decided_index(correct),
        settings={
            "layers": sorted({p.layer for p in plan}),
            "sites": sorted({p.site for p in plan}, key=SITES.index),
            "batch": batch,
            "tuned": None if tuned is None else tuned.describe(),
            "test_index": subject.test_index,
            "encoder": subject.encoder,
            "template": subject.template,
        },
    )


# ---- curves over tasks ---------------------------------------------------------------------------------


@dataclass
class LensCurve:
    """Lens curves averaged over cells and tasks, with the per-task curves they come from."""

    model: str
    lens: str
    hooks: list[str]
    """``[L]`` hook of each lens row."""
    layers: np.ndarray
    """int64 ``[L]``."""
    sites: list[str]
    task_ids: list[str]
    """``[T]`` the tasks averaged."""
    n_cells: np.ndarray
    """int64 ``[T]`` measured answer cells per task."""
    per_task: dict[str, np.ndarray]
    """curve name (:data:`CURVES`) -> float64 ``[T, L]``: each task's curve over its cells."""
    mean: dict[str, np.ndarray]
    """curve name -> float64 ``[L]``: the average (see ``weight``)."""
    weight: str = "tasks"
    """``tasks``: the mean of the per-task curves; ``cells``: every cell of every task weighs the same."""
    results: list[LensResult] = field(default_factory=list, repr=False)
    """The per-task results (when kept)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Task id -> why it was skipped (on_error='skip')."""

    def to_table(self) -> pa.Table:
        """One row per (scope, lens row): task_id (null for the average), hook, layer, site, n_cells and one
        column per curve."""
        scopes: list[tuple[str | None, int, dict[str, np.ndarray]]] = [
            (None, int(self.n_cells.sum()), self.mean)
        ]
        for t, tid in enumerate(self.task_ids):
            scopes.append((tid, int(self.n_cells[t]), {k: v[t] for k, v in self.per_task.items()}))
        n_l = len(self.hooks)
        cols: dict[str, Any] = {
            "task_id": pa.array([s[0] for s in scopes for _ in range(n_l)], pa.string()),
            "lens": pa.array([self.lens] * (n_l * len(scopes)), pa.string()),
            "hook": pa.array(self.hooks * len(scopes), pa.string()),
            "layer": pa.array(np.tile(self.layers, len(scopes)), pa.int32()),
            "site": pa.array(self.sites * len(scopes), pa.string()),
            "n_cells": pa.array([s[1] for s in scopes for _ in range(n_l)], pa.int64()),
        }
        for name in CURVES:
            cols[name] = pa.array(np.concatenate([s[2][name] for s in scopes]), pa.float64())
        return pa.table(cols)

    def to_json(self) -> dict[str, Any]:
        """The curves, tasks and settings as plain JSON values (per-task results not included)."""
        return {
            "kind": "logit_lens_curve",
            "model": self.model,
            "lens": self.lens,
            "weight": self.weight,
            "hooks": list(self.hooks),
            "layers": self.layers.tolist(),
            "sites": list(self.sites),
            "task_ids": list(self.task_ids),
            "n_cells": self.n_cells.tolist(),
            "mean": {k: _nums(v) for k, v in self.mean.items()},
            "per_task": {k: _nums(v) for k, v in self.per_task.items()},
            "skipped": dict(self.skipped),
        }


def lens_curve(results: Sequence[LensResult], *, weight: str = "tasks", keep: bool = True) -> LensCurve:
    """Average lens results of several subjects (the same lens rows each): ``weight`` tasks (each task's
    cell-mean weighs the same) or cells (every cell the same); ``keep`` keeps the results in the curve."""
    results = list(results)
    if weight not in WEIGHTS:
        raise LensError(f"lens curve weight {weight!r} is not one of {', '.join(WEIGHTS)}")
    if not results:
        raise LensError("a lens curve needs at least one lens result")
    first = results[0]
    for r in results[1:]:
        if r.hooks != first.hooks or r.lens != first.lens:
            raise LensError(
                f"task {r.task_id}: its lens ({r.lens}, {len(r.hooks)} rows) differs from task "
                f"{first.task_id}'s ({first.lens}, {len(first.hooks)} rows); average results of the same "
                "lens over the same layers and sites"
            )
    per_task = {name: np.stack([r.curve()[name] for r in results]) for name in CURVES}
    counts = np.array([r.n_cells for r in results], dtype=np.int64)
    if weight == "tasks":
        mean = {k: v.mean(0) for k, v in per_task.items()}
    else:
        mean = _pooled(results)
    return LensCurve(
        model=first.model,
        lens=first.lens,
        hooks=list(first.hooks),
        layers=first.layers.copy(),
        sites=list(first.sites),
        task_ids=[r.task_id for r in results],
        n_cells=counts,
        per_task=per_task,
        mean=mean,
        weight=weight,
        results=results if keep else [],
    )


def _pooled(results: list[LensResult]) -> dict[str, np.ndarray]:
    """Curves over all cells of all results together (a LensResult of the concatenated cells)."""
    cat = {
        k: np.concatenate([getattr(r, k) for r in results], axis=1)
        for k in ("rank", "colour_rank", "logprob", "colour_probs", "pick")
    }
    joined = replace(
        results[0],
        row=np.concatenate([r.row for r in results]),
        col=np.concatenate([r.col for r in results]),
        colour=np.concatenate([r.colour for r in results]),
        decided=np.concatenate([r.decided for r in results]),
        **cat,
    )
    return joined.curve()


def logit_lens_tasks(
    model: Any,
    tasks: Any,
    *,
    tokenizer: Any = None,
    test_index: int = 0,
    encoder: str = "minimal",
    template: str = "default",
    layers: Any = None,
    sites: str | Sequence[str] = "hook_resid_post",
    tuned: TunedLens | None = None,
    batch: int = 256,
    weight: str = "tasks",
    on_error: str = "raise",
    progress: ProgressFn | None = None,
) -> LensCurve:
    """The lens on every task of ``tasks`` (Tasks, a TaskSet or a source spec), averaged into a curve;
    ``on_error="skip"`` goes on past a task that cannot be analysed and names it in ``skipped``."""
    if on_error not in ("raise", "skip"):
        raise LensError(f"on_error {on_error!r} is not one of raise, skip")
    if weight not in WEIGHTS:
        raise LensError(f"lens curve weight {weight!r} is not one of {', '.join(WEIGHTS)}")
    if isinstance(tasks, str | os.PathLike):
        from arcscope.tasks import load

        tasks = load(tasks)
    tasks = list(tasks)
    name = model_name(model)
    results: list[LensResult] = []
    skipped: dict[str, str] = {}
    emit(progress, "lens tasks", 0, len(tasks))
    for i, task in enumerate(tasks):
        try:
            subject = Subject.from_task(
                model, task, tokenizer=tokenizer, test_index=test_index, encoder=encoder, template=template
            )
            r = logit_lens(subject, layers=layers, sites=sites, tuned=tuned, batch=batch)
            results.append(replace(r, model=name))
        except ArcscopeError as e:
            if on_error == "raise":
                raise
            skipped[str(getattr(task, "id", i))] = str(e)
        emit(progress, "lens tasks", i + 1, len(tasks), skipped=len(skipped))
    if not results:
        raise LensError(
            f"no task could be analysed ({len(skipped)} skipped"
            + (f"; first: {next(iter(skipped.values()))}" if skipped else "")
            + ")"
        )
    curve = lens_curve(results, weight=weight)
    curve.skipped = skipped
    return curve


# ---- the tuned lens ------------------------------------------------------------------------------------


def _model_identity(model: Any) -> dict[str, Any]:
    un = Unembed(model)
    return {
        "name": model_name(model),
        "model_type": _model_type(un.model),
        "n_layers": un.n_layers,
        "d_model": un.d_model,
        "vocab_size": un.vocab,
    }


_RESID = re.compile(r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post)")


@dataclass
class LensFit:
    """How well the lens matches the model's final distribution on held-out rows, per hook."""

    hooks: list[str]
    kl_logit: np.ndarray
    """float64 ``[L]`` mean KL(final || logit lens) in nats over the held-out rows."""
    kl_tuned: np.ndarray
    """float64 ``[L]`` mean KL(final || tuned lens) over the held-out rows."""
    kl_train: np.ndarray
    """float64 ``[L]`` mean KL(final || tuned lens) over the training rows used."""
    n_train: int
    n_test: int
    n_train_tasks: int
    n_test_tasks: int
    split: str
    """``tasks`` or ``rows``."""
    source: str
    """Where the rows came from (a store URL, or ``subjects``)."""
    note: str = ""

    def to_table(self) -> pa.Table:
        """One row per hook: hook, layer, site, kl_logit, kl_tuned, kl_train, n_train, n_test."""
        n = len(self.hooks)
        parsed = [_RESID.fullmatch(h) for h in self.hooks]
        return pa.table(
            {
                "hook": pa.array(self.hooks, pa.string()),
                "layer": pa.array([int(m.group(1)) if m else None for m in parsed], pa.int32()),
                "site": pa.array([m.group(2) if m else None for m in parsed], pa.string()),
                "kl_logit": pa.array(self.kl_logit, pa.float64()),
                "kl_tuned": pa.array(self.kl_tuned, pa.float64()),
                "kl_train": pa.array(self.kl_train, pa.float64()),
                "n_train": pa.array([self.n_train] * n, pa.int64()),
                "n_test": pa.array([self.n_test] * n, pa.int64()),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "hooks": list(self.hooks),
            "kl_logit": _nums(self.kl_logit),
            "kl_tuned": _nums(self.kl_tuned),
            "kl_train": _nums(self.kl_train),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_train_tasks": self.n_train_tasks,
            "n_test_tasks": self.n_test_tasks,
            "split": self.split,
            "source": self.source,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LensFit:
        """Read back :meth:`to_json`."""

        def arr(k: str) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in d.get(k, [])], dtype=np.float64)

        return cls(
            hooks=list(d["hooks"]),
            kl_logit=arr("kl_logit"),
            kl_tuned=arr("kl_tuned"),
            kl_train=arr("kl_train"),
            n_train=int(d.get("n_train", 0)),
            n_test=int(d.get("n_test", 0)),
            n_train_tasks=int(d.get("n_train_tasks", 0)),
            n_test_tasks=int(d.get("n_test_tasks", 0)),
            split=str(d.get("split", "")),
            source=str(d.get("source", "")),
            note=str(d.get("note", "")),
        )


@dataclass
class TunedLens:
    """One affine map per hook, ``h -> h @ weight.T + bias``, applied before the final norm and unembedding."""

    weight: dict[str, torch.Tensor]
    """hook -> float32 ``[d, d]``."""
    bias: dict[str, torch.Tensor]
    """hook -> float32 ``[d]``."""
    model: dict[str, Any]
    """The model it was trained for: name, model_type, n_layers, d_model, vocab_size."""
    config: dict[str, Any] = field(default_factory=dict)
    """The training settings (TunedLensConfig), empty for an untrained lens."""
    fit: LensFit | None = None
    """Held-out fit per hook, when trained."""
    path: str | None = None
    """The file it was loaded from or saved to."""

    @property
    def hooks(self) -> list[str]:
        """The hooks it has a map for."""
        return list(self.weight)

    @classmethod
    def identity(
        cls, model: Any, layers: Any = None, sites: str | Sequence[str] = "hook_resid_post"
    ) -> TunedLens:
        """A lens whose maps are all the identity (it reads exactly as the logit lens)."""
        model = _raw_model(model)
        ident = _model_identity(model)
        d = ident["d_model"]
        plan = lens_sites(model, layers, sites)
        return cls({p.hook: torch.eye(d) for p in plan}, {p.hook: torch.zeros(d) for p in plan}, ident)

    def _key(self, hook: str) -> str | None:
        if hook in self.weight:
            return hook
        m = _RESID.fullmatch(hook)
        if m is None:
            return None
        i, site = int(m.group(1)), m.group(2)
        # resid_pre of layer i+1 is resid_post of layer i: one map serves both names.
        alias = (
            f"blocks.{i - 1}.hook_resid_post"
            if site == "hook_resid_pre" and i > 0
            else f"blocks.{i + 1}.hook_resid_pre"
            if site == "hook_resid_post"
            else None
        )
        return alias if alias in self.weight else None

    def check(self, model: Any, hooks: Iterable[str] = ()) -> None:
        """LensError unless this lens fits ``model`` (layers, width, vocabulary) and has a map for each hook."""
        ident = _model_identity(model)
        for k in ("n_layers", "d_model", "vocab_size"):
            if self.model.get(k) is not None and int(self.model[k]) != int(ident[k]):
                raise LensError(
                    f"tuned lens{f' {self.path}' if self.path else ''} was trained for {self.model.get('name')} "
                    f"({k}={self.model[k]}); this model ({ident['name']}) has {k}={ident[k]}"
                )
        missing = [h for h in hooks if self._key(h) is None]
        if missing:
            raise self._no_map(missing[0])

    def _no_map(self, hook: str) -> LensError:
        return LensError(
            f"tuned lens{f' {self.path}' if self.path else ''} has no map for {hook}; it has maps for "
            f"{', '.join(self.hooks) or 'no hook'}. Train it on those layers, or choose layers it has"
        )

    def translate(self, hook: str, h: torch.Tensor) -> torch.Tensor:
        """Rows ``[..., d]`` of ``hook`` through its map (in float32), back in their dtype."""
        key = self._key(hook)
        if key is None:
            raise self._no_map(hook)
        w = self.weight[key].to(h.device)
        b = self.bias[key].to(h.device)
        return F.linear(h.float(), w, b).to(h.dtype)

    def describe(self) -> dict[str, Any]:
        """A short JSON description for result settings."""
        return {"path": self.path, "hooks": len(self.weight), "model": self.model.get("name")}

    # ---- files ---------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> str:
        """Write the lens as one safetensors file (``<hook>.weight``, ``<hook>.bias``; model, config and fit as
        JSON in the header's metadata), atomically; return the path."""
        from arcscope.files import save_tensor_file

        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hooks": self.hooks,
            "model": json_safe(self.model),
            "config": json_safe(self.config),
            "fit": None if self.fit is None else self.fit.to_json(),
        }
        tensors: dict[str, torch.Tensor] = {}
        for h in self.hooks:
            tensors[f"{h}.weight"] = self.weight[h].detach().to("cpu", torch.float32).contiguous()
            tensors[f"{h}.bias"] = self.bias[h].detach().to("cpu", torch.float32).contiguous()
        self.path = save_tensor_file(path, tensors, FORMAT, info, what="tuned lens", error=LensError)
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TunedLens:
        """Read a lens written by :meth:`save`."""
        from arcscope.files import load_tensor_file

        where = os.fspath(path)
        info, tensors = load_tensor_file(where, FORMAT, FORMAT_VERSION, what="tuned lens", error=LensError)
        weight, bias = {}, {}
        try:
            for h in info["hooks"]:
                if f"{h}.weight" not in tensors or f"{h}.bias" not in tensors:
                    raise LensError(f"{where}: the tuned lens lists {h} but holds no map for it")
                weight[h], bias[h] = tensors[f"{h}.weight"], tensors[f"{h}.bias"]
        except (KeyError, TypeError) as e:
            raise LensError(f"{where}: the tuned lens's metadata is malformed ({e})") from e
        fit = info.get("fit")
        return cls(
            weight,
            bias,
            dict(info.get("model") or {}),
            dict(info.get("config") or {}),
            None if fit is None else LensFit.from_json(fit),
            where,
        )


@dataclass
class _Rows:
    """Training rows: a reader per hook (float32 ``[N, d]``), the final rows, their kind, and task groups."""

    read: Callable[[str], torch.Tensor]
    hooks: list[str]
    final: torch.Tensor
    final_normalized: bool
    """True: ``final`` rows are ln_final outputs (unembed only); False: last-layer resid_post rows."""
    groups: np.ndarray
    source: str


def _store_rows(store: Any, un: Unembed, hooks: Any, where: dict | None, cfg: TunedLensConfig) -> _Rows:
    from arcscope.analysis.probes import as_store, match_hooks, read_rows

    try:
        store = as_store(store)
    except ArcscopeError as e:
        raise LensError(f"tuned lens: cannot open the store: {e}") from e
    meta_model = store.meta.get("model") or {}
    for k, mine in (("n_layers", un.n_layers), ("d_model", un.d_model)):
        theirs = meta_model.get(k) if isinstance(meta_model, dict) else None
        if theirs is not None and int(theirs) != mine:
            raise LensError(
                f"{store.url}: the store was captured from a model with {k}={theirs} "
                f"({meta_model.get('name')}); this model has {k}={mine}"
            )
    if un.final_hook in store.hooks:
        final_hook, normalized = un.final_hook, False
    elif "ln_final.hook_normalized" in store.hooks:
        final_hook, normalized = "ln_final.hook_normalized", True
    else:
        raise LensError(
            f"{store.url}: a tuned lens learns to match the final layer, and the store has neither "
            f"{un.final_hook} nor ln_final.hook_normalized; capture one of them with the layers"
        )
    if hooks is None:
        names = sorted((h for h in store.hooks if _RESID.fullmatch(h)), key=natural_key)
    else:
        try:
            names = match_hooks(store, hooks)
        except ArcscopeError as e:
            raise LensError(str(e)) from e
    for h in names:
        m = _RESID.fullmatch(h)
        if m is None:
            raise LensError(
                f"{store.url}: hook {h!r} is not a residual-stream hook; the lens reads {', '.join(SITES)}"
            )
        if int(m.group(1)) >= un.n_layers:
            raise LensError(f"{store.url}: hook {h!r} is out of range: the model has {un.n_layers} layers")
        if store.hooks[h][0] != un.d_model:
            raise LensError(
                f"{store.url}: hook {h!r} rows are {store.hooks[h][0]} wide; the model's d is {un.d_model}"
            )
    if not names:
        raise LensError(
            f"{store.url}: no residual-stream hook to train a tuned lens on; it has {sorted(store.hooks)}"
        )
    try:
        index = store.index(filter=where) if where else store.index()
    except ArcscopeError as e:
        raise LensError(f"{store.url}: bad row conditions {where!r}: {e}") from e
    n = index.num_rows
    if n < 2:
        raise LensError(f"{store.url}: {n} rows match {where!r}; a tuned lens needs at least two")
    keep = np.arange(n)
    if cfg.max_rows is not None and n > cfg.max_rows:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(n, size=cfg.max_rows, replace=False))
    sub = index.take(pa.array(keep))
    groups = np.array(["" if g is None else str(g) for g in sub["task_id"].to_pylist()], dtype=object)
    return _Rows(
        read=lambda h: read_rows(store, h, sub),
        hooks=names,
        final=read_rows(store, final_hook, sub),
        final_normalized=normalized,
        groups=groups,
        source=store.url,
    )


def _hook_names(model: Any, hooks: Any) -> list[str]:
    """Lens hooks named by ``hooks``: None (every layer's resid_post), ``blocks.L.<site>`` names, or bare sites
    (every layer), comma-separated or a list."""
    from arcscope.capture.spec import expand_braces, split_names

    if hooks is None:
        return [p.hook for p in lens_sites(model)]
    items = split_names(hooks) if isinstance(hooks, str) else [str(h) for h in hooks]
    out: list[str] = []
    for h in (e for item in items for e in expand_braces(item.strip())):
        m = re.fullmatch(r"blocks\.(-?\d+)\.(.+)", h)
        plan = lens_sites(model, int(m.group(1)), m.group(2)) if m else lens_sites(model, None, h)
        out += [p.hook for p in plan]
    return list(dict.fromkeys(out))


def _subject_rows(subjects: list[Subject], model: Any, hooks: Any, cfg: TunedLensConfig) -> _Rows:
    un = Unembed(model)
    names = _hook_names(model, hooks)
    capture_hooks = list(dict.fromkeys([*names, un.final_hook]))
    budget = None if cfg.max_rows is None else max(1, cfg.max_rows // len(subjects))
    rng = np.random.default_rng(cfg.seed)
    parts: dict[str, list[torch.Tensor]] = {h: [] for h in capture_hooks}
    groups: list[str] = []
    for s in subjects:
        if s.model is not model:
            raise LensError(
                f"task {s.task_id}: its subject runs another model; train from subjects of one model"
            )
        pos = np.arange(len(s)) if cfg.positions == "all" else s.answer.predict_pos
        if budget is not None and len(pos) > budget:
            pos = np.sort(rng.choice(pos, size=budget, replace=False))
        rows = _capture_rows(model, s.input_ids, pos, capture_hooks)
        for h in capture_hooks:
            parts[h].append(rows[h].float().cpu())
        groups += [str(s.task_id)] * len(pos)
    acts = {h: torch.cat(v) for h, v in parts.items()}
    return _Rows(
        read=lambda h: acts[h],
        hooks=names,
        final=acts[un.final_hook],
        final_normalized=False,
        groups=np.array(groups, dtype=object),
        source="subjects",
    )


def train_tuned_lens(
    model: Any,
    source: Any,
    *,
    hooks: Any = None,
    where: dict[str, Any] | None = None,
    config: TunedLensConfig | dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> TunedLens:
    """Train one affine map per hook so the lens matches ``model``'s final distribution, from ``source``: an
    activation store (Store, path or URL; rows matching ``where``) or a list of Subjects (``model`` may then be
    None). ``hooks``: residual-stream hooks (None: all the store has, or every layer's resid_post);
    ``options`` are :class:`TunedLensConfig` fields. The held-out fit is in ``lens.fit``."""
    from arcscope.analysis.probes import group_split, row_split
    from arcscope.models import resolve_device
    from arcscope.store import mix_seed

    cfg = make_config(TunedLensConfig, config, options)
    if isinstance(source, Subject):
        source = [source]
    from_subjects = isinstance(source, list | tuple) and all(isinstance(s, Subject) for s in source)
    if from_subjects:
        if not source:
            raise LensError("tuned lens: no subjects to train on")
        model = _raw_model(model) if model is not None else source[0].model
    elif model is None:
        raise LensError("tuned lens: training from a store needs the model (its final norm and unembedding)")
    model = _raw_model(model)
    un = Unembed(model)
    data = (
        _subject_rows(list(source), model, hooks, cfg)
        if from_subjects
        else _store_rows(source, un, hooks, where, cfg)
    )
    dev = resolve_device(cfg.device) if cfg.device else un.device
    n = len(data.groups)
    notes = []
    split = cfg.split
    if split == "tasks" and len(np.unique(data.groups)) < 2:
        split = "rows"
        notes.append("the rows come from one task, so the held-out split is by row, not by task")
    test = (
        group_split(data.groups, cfg.test_fraction, cfg.seed)
        if split == "tasks"
        else row_split(n, cfg.test_fraction, cfg.seed)
    )
    train_idx = torch.as_tensor(np.flatnonzero(~test))
    test_idx = torch.as_tensor(np.flatnonzero(test))
    norm_head, head = un.float32(dev)
    final = data.final.to(dev, torch.float32)
    target_fn = head if data.final_normalized else norm_head

    def target_logp(idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(target_fn(final[idx.to(dev)]), -1)

    def kl(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None) -> float:
        total = 0.0
        with torch.no_grad():
            for a in range(0, len(idx), cfg.batch_size):
                sel = idx[a : a + cfg.batch_size]
                h = x[sel.to(dev)]
                if w is not None:
                    h = F.linear(h, w, b)
                lp = torch.log_softmax(norm_head(h), -1)
                total += float(F.kl_div(lp, target_logp(sel), log_target=True, reduction="sum"))
        return total / max(1, len(idx))

    d = un.d_model
    weight: dict[str, torch.Tensor] = {}
    bias: dict[str, torch.Tensor] = {}
    kl_logit, kl_tuned, kl_train = [], [], []
    emit(progress, "tuned lens", 0, len(data.hooks))
    for i, hook in enumerate(data.hooks):
        w = torch.eye(d, device=dev)
        b = torch.zeros(d, device=dev)
        if hook == un.final_hook and not data.final_normalized:
            # The last layer's lens is the model's output: the identity is exact, nothing to learn.
            weight[hook], bias[hook] = w.cpu(), b.cpu()
            kl_logit.append(0.0)
            kl_tuned.append(0.0)
            kl_train.append(0.0)
            emit(progress, "tuned lens", i + 1, len(data.hooks), kl=0.0)
            continue
        x = data.read(hook).to(dev, torch.float32)
        if cfg.steps and len(train_idx):
            # Train the deviation from the identity, so weight decay pulls toward the logit lens.
            dw = torch.zeros(d, d, device=dev, requires_grad=True)
            db = torch.zeros(d, device=dev, requires_grad=True)
            opt = torch.optim.AdamW([dw, db], lr=cfg.lr, weight_decay=cfg.weight_decay)
            g = torch.Generator().manual_seed(mix_seed(cfg.seed, i))
            for _ in range(cfg.steps):
                sel = train_idx[torch.randint(len(train_idx), (cfg.batch_size,), generator=g)]
                h = x[sel.to(dev)]
                lp = torch.log_softmax(norm_head(h + F.linear(h, dw, db)), -1)
                loss = F.kl_div(lp, target_logp(sel), log_target=True, reduction="batchmean")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            w = (w + dw.detach()).contiguous()
            b = db.detach().clone()
        kl_logit.append(kl(x, test_idx, None, None))
        kl_tuned.append(kl(x, test_idx, w, b))
        kl_train.append(kl(x, train_idx, w, b))
        weight[hook], bias[hook] = w.cpu(), b.cpu()
        del x
        emit(progress, "tuned lens", i + 1, len(data.hooks), kl=round(kl_tuned[-1], 5))
    fit = LensFit(
        hooks=list(data.hooks),
        kl_logit=np.array(kl_logit, dtype=np.float64),
        kl_tuned=np.array(kl_tuned, dtype=np.float64),
        kl_train=np.array(kl_train, dtype=np.float64),
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
        n_train_tasks=len(np.unique(data.groups[~test])),
        n_test_tasks=len(np.unique(data.groups[test])),
        split=split,
        source=data.source,
        note="; ".join(notes),
    )
    return TunedLens(weight, bias, _model_identity(model), cfg.to_dict(), fit)


__all__ = [
    "CURVES",
    "NEVER",
    "NO_TOKEN",
    "SITES",
    "LensCurve",
    "LensError",
    "LensFit",
    "LensResult",
    "LensSite",
    "TunedLens",
    "TunedLensConfig",
    "Unembed",
    "decided_index",
    "lens_curve",
    "lens_logits",
    "lens_sites",
    "logit_lens",
    "logit_lens_tasks",
    "train_tuned_lens",
]
