"""Activation patching, attribution patching, SAE latent patching and path patching on ARC prompts.

Two :class:`~arcscope.analysis.subject.Subject` s, a clean prompt and a corrupted one
(:mod:`arcscope.analysis.corrupt`), line up token by token and end in the same (clean) answer. Activation
patching runs one prompt (the *base*) with activations of the other (the *source*) put in at chosen sites x
positions and measures a :class:`~arcscope.analysis.subject.Metric` of the answer:

* ``direction="denoise"`` (default): base = corrupted, source = clean. ``effect = (patched - corrupt) /
  (clean - corrupt)``: 1 means this site alone restores the clean answer, 0 that it does nothing.
* ``direction="noise"``: base = clean, source = corrupted. ``effect = (clean - patched) / (clean -
  corrupt)``: 1 means this site alone destroys the answer as the whole corruption does.

``raw`` is always ``patched - base`` in the metric's units.

Sweeps: :func:`patch_sweep` (layers x positions at one residual hook, positions grouped by grid cell so the
result is a heat map over the input grids), :func:`head_sweep` (layers x heads: one head's slice of
``attn.hook_z``), :func:`attribution_patching` (the gradient approximation of either, from one forward and
backward pass), :func:`compare_on_sample` (how well the approximation agrees with exact patching),
:func:`sae_patch` (ablate or patch SAE latents spliced in at their hook) and :func:`path_patch` (one head's
output into the inputs of later layers only).

Batched and cheap where it can be exact:

* one forward pass patches a different (site, position) in every batch row (``batch_size`` rows);
* an entry whose source activation equals the base activation bit for bit (every position before the first
  corrupted token, for instance) changes nothing and is not run;
* for Llama-layout models (``fast=True``) a batch whose patches all sit at layer >= l0 and position >= p0
  starts at decoder layer l0 from the base run's cached residual stream and reuses the base run's keys and
  values for the positions before p0, since a patch changes nothing upstream of itself. Results equal the
  full forward pass up to float rounding (tests check both).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from arcscope.analysis.corrupt import aligned, describe
from arcscope.analysis.subject import (
    AnalysisError,
    CellTable,
    Metric,
    as_metric,
    json_safe,
    model_name,
    to_grids,
)
from arcscope.capture.interventions import Intervention, intervene
from arcscope.capture.session import capture
from arcscope.capture.spec import PATTERN, HookSite, find_layout, resolve_hooks
from arcscope.progress import ProgressFn, emit

DEFAULT_SITES = "blocks.*.hook_resid_pre"
"""The hook a sweep patches by default: the residual stream entering each layer."""
DIRECTIONS = ("denoise", "noise")
"""denoise: clean activations into the corrupted run; noise: corrupted activations into the clean run."""
INPUT_ROLES = ("train_input", "train_output", "test_input")
"""The prompt grids a ``positions="cells"`` sweep covers."""
SAE_MODES = ("ablate", "patch")
"""ablate: zero latents in the clean run; patch: put the source run's latent values into the base run."""
RECEIVERS = ("attn", "mlp", "both")
"""What a path patch feeds the sender head's output into: later layers' attention input, MLP input, or both."""


# ============================================================================================ results


def _json_array(a: np.ndarray) -> list:
    """Nested lists with NaN/inf as None (strict JSON)."""
    arr = np.asarray(a, dtype=np.float64)
    obj = arr.astype(object)
    obj[~np.isfinite(arr)] = None
    return obj.tolist()


@dataclass
class PatchResult:
    """One patching sweep: an effect per row (a layer's site) and column (a position group, a head or a
    receiver), with the tables a report needs to draw it on the grids."""

    effect: np.ndarray
    """float64 ``[rows, columns]``: the normalised effect (module docstring); NaN when clean == corrupt."""
    raw: np.ndarray
    """float64 ``[rows, columns]``: patched metric minus the base run's metric."""
    clean_metric: float
    """The metric of the unpatched clean run."""
    corrupt_metric: float
    """The metric of the unpatched corrupted run."""
    sites: list[str]
    """Hook name of each row (``blocks.3.hook_resid_pre``)."""
    layers: list[int]
    """Decoder layer of each row (-1 for a site outside the layers)."""
    columns: str
    """What a column is: positions, heads or receivers."""
    labels: list[str]
    """One label per column: the (clean) token text, ``H3``, or ``attn``/``mlp``."""
    method: str
    """exact or attribution."""
    direction: str
    """denoise or noise."""
    metric: str
    """The metric's label (what was measured, on which answer cells)."""
    metric_kind: str
    """logprob, prob or logit_diff."""
    task_id: str
    corruption: str | None
    """The resolved corruption spec of the corrupted task (arcscope.analysis.corrupt)."""
    model: str | None
    cells: CellTable | None = None
    """Positions sweeps: per column, the (first) token position patched and its grid cell (row/col -1 for a
    token that is no cell)."""
    groups: list[list[int]] = field(default_factory=list)
    """Positions sweeps: the token positions patched together in each column."""
    heads: list[int] | None = None
    """Heads sweeps: the head of each column."""
    head_positions: list[int] | None = None
    """Heads sweeps: the positions a head was patched at (None: all)."""
    grids: list[dict[str, Any]] = field(default_factory=list)
    """The prompt's grids: segment, role, pair, shape, clean and corrupt cells (lists), for drawing."""
    changed: list[int] = field(default_factory=list)
    """Token positions where the corrupted prompt differs from the clean one."""
    settings: dict[str, Any] = field(default_factory=dict)
    """How it was computed (batch size, forward passes, entries skipped as exactly zero, seconds...)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Analysis-specific figures (path patching: the direct path to the logits and the whole head)."""

    @property
    def gap(self) -> float:
        """clean - corrupt: the metric difference the effect is normalised by."""
        return self.clean_metric - self.corrupt_metric

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return tuple(self.effect.shape)  # type: ignore[return-value]

    def grid_maps(self, values: str | np.ndarray = "effect") -> dict[int, np.ndarray]:
        """Positions sweeps: ``[rows, h, w]`` per grid segment (NaN where no value) of ``effect``, ``raw`` or
        a given ``[rows, columns]`` array, for heat maps over the prompt's grids."""
        if self.cells is None:
            raise AnalysisError(f"task {self.task_id}: a {self.columns} sweep has no grid cells to draw")
        arr = getattr(self, values) if isinstance(values, str) else np.asarray(values)
        keep = (self.cells.row >= 0) & (self.cells.segment >= 0)
        shapes = [tuple(g["shape"]) for g in self.grids]
        return to_grids(arr[:, keep], self.cells.take(keep), shapes)

    def top(self, k: int = 10, values: str = "effect") -> list[dict[str, Any]]:
        """The ``k`` entries of largest |value|, as dicts: entry (row, column), layer, site, label, effect, raw,
        and the column's position and grid cell (positions sweeps) or head."""
        arr = getattr(self, values)
        flat = np.where(np.isfinite(arr), np.abs(arr), -1.0).ravel()
        order = np.argsort(-flat, kind="stable")[: max(0, k)]
        out = []
        for f in order:
            i, j = divmod(int(f), arr.shape[1])
            d: dict[str, Any] = {
                "entry": (i, j),
                "layer": self.layers[i],
                "site": self.sites[i],
                "label": self.labels[j],
                "effect": float(self.effect[i, j]),
                "raw": float(self.raw[i, j]),
            }
            if self.cells is not None:  # the column's token and grid cell
                for name in ("position", "segment", "pair", "row", "col"):
                    d[name] = int(getattr(self.cells, name)[j])
                d["role"] = str(self.cells.role[j])
            if self.heads is not None:
                d["head"] = self.heads[j]
            out.append(d)
        return out

    def to_table(self) -> pa.Table:
        """Long format, one row per (row, column): layer, site, the column's description, effect, raw."""
        n_r, n_c = self.effect.shape
        ri = np.repeat(np.arange(n_r), n_c)
        ci = np.tile(np.arange(n_c), n_r)
        cols: dict[str, Any] = {
            "layer": pa.array(np.asarray(self.layers, dtype=np.int64)[ri]),
            "site": pa.array([self.sites[i] for i in ri]),
        }
        if self.columns == "positions" and self.cells is not None:
            cols["column"] = pa.array(ci.astype(np.int64))
            for name in ("position", "segment", "pair", "row", "col"):
                cols[name] = pa.array(np.asarray(getattr(self.cells, name), dtype=np.int64)[ci])
            cols["role"] = pa.array([str(self.cells.role[j]) for j in ci])
            cols["n_positions"] = pa.array(np.asarray([len(g) for g in self.groups], dtype=np.int64)[ci])
            cols["token"] = pa.array([self.labels[j] for j in ci])
        elif self.columns == "heads" and self.heads is not None:
            cols["head"] = pa.array(np.asarray(self.heads, dtype=np.int64)[ci])
        else:
            cols[self.columns.rstrip("s")] = pa.array([self.labels[j] for j in ci])
        cols["effect"] = pa.array(self.effect.ravel().astype(np.float64))
        cols["raw"] = pa.array(self.raw.ravel().astype(np.float64))
        cols["method"] = pa.array([self.method] * len(ri))
        cols["direction"] = pa.array([self.direction] * len(ri))
        return pa.table(cols)

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-safe values (NaN as null)."""
        return json_safe(
            {
                "analysis": "patching",
                "method": self.method,
                "direction": self.direction,
                "columns": self.columns,
                "task_id": self.task_id,
                "model": self.model,
                "corruption": self.corruption,
                "metric": self.metric,
                "metric_kind": self.metric_kind,
                "clean_metric": self.clean_metric,
                "corrupt_metric": self.corrupt_metric,
                "sites": list(self.sites),
                "layers": list(self.layers),
                "labels": list(self.labels),
                "effect": _json_array(self.effect),
                "raw": _json_array(self.raw),
                "cells": None if self.cells is None else self.cells.to_dict(),
                "groups": [list(map(int, g)) for g in self.groups],
                "heads": self.heads,
                "head_positions": self.head_positions,
                "grids": self.grids,
                "changed": list(map(int, self.changed)),
                "settings": self.settings,
                "extra": self.extra,
            }
        )


# ============================================================================================ engine


@dataclass
class _Edit:
    """Rows to write at one site in one batch row: ``op`` (replace or add) at sorted token positions."""

    site: HookSite
    positions: np.ndarray
    rows: torch.Tensor
    op: str = "replace"


@dataclass
class _Entry:
    """One patched run of a sweep: the edits are made only when its batch runs (memory stays small)."""

    layer: int
    """The first decoder layer the edits touch (a batch may start there)."""
    start: int
    """The first token position the edits touch."""
    make: Callable[[], list[_Edit]]


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, tuple | list) else out


def _with_first(out: Any, new: Any) -> Any:
    if isinstance(out, tuple):
        return (new,) + tuple(out[1:])
    if isinstance(out, list):
        return [new] + list(out[1:])
    return new


def _output_cache(out: Any) -> Any:
    for name in ("cache", "past_key_values"):
        if name in out.keys():
            return out[name]
    raise AnalysisError("the model returned no key/value cache for use_cache=True")


class _Patcher:
    """The clean and corrupted runs, their cached activations, and batched patched forward passes."""

    def __init__(
        self,
        clean: Any,
        corrupt: Any,
        metric: Metric | str | None,
        *,
        direction: str = "denoise",
        batch_size: int = 16,
        fast: bool = True,
        progress: ProgressFn | None = None,
        sites: Sequence[HookSite] = (),
    ):
        if direction not in DIRECTIONS:
            raise AnalysisError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        if int(batch_size) < 1:
            raise AnalysisError(f"batch_size must be >= 1, got {batch_size}")
        if corrupt is not None and corrupt.model is not clean.model:
            raise AnalysisError(
                f"task {clean.task_id}: the clean and corrupted subjects must use the same model object"
            )
        self.changed = aligned(clean, corrupt) if corrupt is not None else np.zeros(0, dtype=np.int64)
        self.clean, self.corrupt = clean, corrupt
        if corrupt is None:
            self.base = self.source = clean
        else:
            self.base, self.source = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
        self.direction = direction
        self.model = clean.model
        self.metric = as_metric(metric)
        self.answer = clean.answer
        self.T = len(clean)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.device = clean.device
        self.ids = self.base.input_ids
        self.keep = torch.as_tensor(self.answer.predict_pos, device=self.device)
        self.layout = find_layout(self.model)
        self.fast = bool(fast) and self._fast_possible()
        self.n_forward = 0
        self.n_skipped = 0
        self._acts: dict[tuple[str, str], torch.Tensor] = {}
        self._metrics: dict[str, float] = {}
        self._full_cache: Any = None
        self._cache_kw = "past_key_values"
        with contextlib.suppress(TypeError, ValueError):
            if "cache" in inspect.signature(self.model.forward).parameters:
                self._cache_kw = "cache"
        self._prepare(sites, resid_layers={_start_layer(s) for s in sites})
        self.clean_metric = self._metrics[self._key(clean)]
        self.corrupt_metric = self._metrics[self._key(corrupt)] if corrupt is not None else math.nan
        self.base_metric = self._metrics["base"]

    def _key(self, subject: Any) -> str:
        return "base" if subject is self.base else "source"

    def _prepare(self, sites: Sequence[HookSite], resid_layers: set[int] = frozenset()) -> None:
        """One forward pass per run (base, source) for everything not yet cached: the answer metric, the
        activations at ``sites``, and, for the fast path, the base run's residual stream entering
        ``resid_layers`` and its keys and values."""
        runs = [("base", self.base)] + ([] if self.source is self.base else [("source", self.source)])
        for key, subject in runs:
            want = {s.name: s for s in sites if (key, s.name) not in self._acts}
            cache = key == "base" and self.fast and self._full_cache is None
            if key == "base" and self.fast and self.layout is not None:
                for layer in sorted(resid_layers - {0}):
                    name = f"blocks.{layer}.hook_resid_pre"
                    if ("base", name) not in self._acts:
                        want.setdefault(name, resolve_hooks(self.model, name)[0])
            if not want and not cache and key in self._metrics:
                continue
            with (
                torch.no_grad(),
                capture(self.model, list(want.values()), offload=False, record_coords=False) as cap,
            ):
                out = self.model(input_ids=subject.input_ids, use_cache=cache, logits_to_keep=self.keep)
            self._metrics[key] = float(self.metric(out.logits.float(), self.answer)[0])
            for name in want:
                self._acts[(key, name)] = cap[name]
            if cache:
                self._full_cache = _output_cache(out)

    # ------------------------------------------------------------------------------------ settings

    def _fast_possible(self) -> bool:
        if self.layout is None:
            return False
        cfg = getattr(self.model, "config", None)
        types = getattr(cfg, "layer_types", None)
        # Qwen2/3 look up each layer's attention type by its place in the loop: a shortened list misreads them.
        if types is not None and len(set(types)) > 1:
            return False
        window = getattr(cfg, "sliding_window", None)
        return not (window and getattr(cfg, "use_sliding_window", True) and self.T > int(window))

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """The normalised effect of ``patched - base`` values (module docstring)."""
        gap = self.clean_metric - self.corrupt_metric
        if not math.isfinite(gap) or abs(gap) < 1e-12:
            return np.full_like(raw, np.nan, dtype=np.float64)
        return raw / gap if self.base is self.corrupt else -raw / gap

    # -------------------------------------------------------------------------------- activations

    def acts(self, which: str, sites: Sequence[HookSite]) -> dict[str, torch.Tensor]:
        """``[T, d]`` activations of the base or source run at ``sites`` (cached; the model's dtype)."""
        key = self._key(self.base if which == "base" else self.source)
        if any((key, s.name) not in self._acts for s in sites):
            self._prepare(sites)
        return {s.name: self._acts[(key, s.name)] for s in sites}

    def _resid(self, layer: int) -> torch.Tensor:
        """The base run's residual stream entering ``layer`` ``[T, d]``."""
        name = f"blocks.{layer}.hook_resid_pre"
        if ("base", name) not in self._acts:  # a layer no site named (path patching): take them all at once
            self._prepare([], resid_layers=set(range(self.layout.n_layers)))
        return self._acts[("base", name)]

    def _prefix_cache(self, p0: int, batch: int) -> Any:
        """The base run's keys and values for positions < p0, repeated for ``batch`` rows."""
        if self._full_cache is None:
            self._prepare([])
        cache = copy.deepcopy(self._full_cache)
        cache.crop(p0 - self.T)  # a negative crop removes that many tokens, in every transformers version
        if cache.get_seq_length() != p0:
            raise ValueError(
                f"the cropped key/value cache holds {cache.get_seq_length()} positions, not {p0}"
            )
        cache.batch_repeat_interleave(batch)
        return cache

    @contextlib.contextmanager
    def _layers_from(self, l0: int) -> Iterator[None]:
        """Run only decoder layers l0.. (the hooks live on the layer modules, so they still fire)."""
        if l0 <= 0:
            yield
            return
        parent_path, _, attr = self.layout.layers.rpartition(".")
        parent = self.model.get_submodule(parent_path) if parent_path else self.model
        full = getattr(parent, attr)
        setattr(parent, attr, nn.ModuleList(list(full)[l0:]))
        try:
            yield
        finally:
            setattr(parent, attr, full)

    # ------------------------------------------------------------------------------------ running

    def _interventions(self, rows: list[list[_Edit]], p0: int) -> list[Intervention]:
        span = self.T - p0
        groups: dict[tuple[str, str], tuple[HookSite, torch.Tensor, list[torch.Tensor]]] = {}
        for b, edits in enumerate(rows):
            for e in edits:
                site, mask, vals = groups.setdefault(
                    (e.site.name, e.op), (e.site, torch.zeros(len(rows), span, dtype=torch.bool), [])
                )
                cols = torch.as_tensor(e.positions - p0, dtype=torch.long)
                if mask[b, cols].any():
                    raise AnalysisError(
                        f"two edits of one patched run write {site.name} at the same position"
                    )
                mask[b, cols] = True
                vals.append(e.rows)
        # Rows are appended batch row by batch row, positions sorted within each: the (batch, position)
        # order an Intervention's [N, d] value must follow.
        return [
            Intervention(site, op, torch.cat(vals).to(self.device), positions=mask.to(self.device))
            for (_, op), (site, mask, vals) in groups.items()
        ]

    def _forward(self, rows: list[list[_Edit]], l0: int, p0: int) -> torch.Tensor:
        b = len(rows)
        kw: dict[str, Any] = {"use_cache": False, "logits_to_keep": self.keep - p0}
        if l0 == 0:
            kw["input_ids"] = self.ids[:, p0:].expand(b, -1)
        else:
            kw["inputs_embeds"] = self._resid(l0)[p0:].unsqueeze(0).expand(b, -1, -1).contiguous()
        if p0 > 0:
            kw[self._cache_kw] = self._prefix_cache(p0, b)
            kw["use_cache"] = True
            kw["position_ids"] = torch.arange(p0, self.T, device=self.device).unsqueeze(0).expand(b, -1)
        ivs = self._interventions(rows, p0)
        with torch.no_grad(), intervene(self.model, ivs), self._layers_from(l0):
            out = self.model(**kw)
        self.n_forward += 1
        return self.metric(out.logits.float(), self.answer)

    def run_batch(self, rows: list[list[_Edit]], l0: int = 0, p0: int = 0) -> torch.Tensor:
        """``[B]`` metric of the base run with each row's edits (the fast path when it is on)."""
        if not self.fast:
            l0 = p0 = 0
        p0 = max(0, min(p0, int(self.answer.predict_pos.min())))
        if l0 == 0 and p0 == 0:
            return self._forward(rows, 0, 0)
        try:
            return self._forward(rows, l0, p0)
        except (TypeError, AttributeError, ValueError, IndexError, KeyError) as e:
            if isinstance(e, AnalysisError):
                raise
            # A transformers version whose cache or layer loop we do not know: patch with full passes.
            warnings.warn(
                f"fast patching failed on this model ({type(e).__name__}: {e}); using full forward passes",
                stacklevel=3,
            )
            self.fast = False
            return self._forward(rows, 0, 0)

    def run(self, entries: Sequence[_Entry | None], label: str = "patched runs") -> np.ndarray:
        """The base run's metric with each entry's edits (None: nothing differs, the base metric)."""
        out = np.full(len(entries), self.base_metric, dtype=np.float64)
        todo = [i for i, e in enumerate(entries) if e is not None]
        self.n_skipped += len(entries) - len(todo)
        # Batches of neighbours in (layer, position) order start as late as the fast path allows.
        todo.sort(key=lambda i: (entries[i].layer, entries[i].start))
        # A batch never spans two layers: it would have to start at the lower layer and the earlier position.
        chunks: list[list[int]] = []
        for i in todo:
            if (
                chunks
                and len(chunks[-1]) < self.batch_size
                and entries[chunks[-1][0]].layer == entries[i].layer
            ):
                chunks[-1].append(i)
            else:
                chunks.append([i])
        emit(self.progress, label, 0, len(todo))
        done = 0
        for idx in chunks:
            chunk = [entries[i] for i in idx]
            l0 = min(e.layer for e in chunk)
            p0 = min(e.start for e in chunk)
            vals = self.run_batch([e.make() for e in chunk], l0, p0)
            out[idx] = vals.double().cpu().numpy()
            done += len(idx)
            emit(self.progress, label, done, len(todo))
        return out

    # ------------------------------------------------------------------------------------- result

    def result(
        self,
        raw: np.ndarray,
        *,
        sites: Sequence[HookSite],
        columns: str,
        labels: list[str],
        method: str,
        settings: dict[str, Any],
        **kw: Any,
    ) -> PatchResult:
        """A PatchResult with this pair of runs' metadata."""
        grids = []
        corrupt_grids = self.corrupt.grids() if self.corrupt is not None else None
        for k, g in enumerate(self.clean.grids()):
            d = {k2: g[k2] for k2 in ("segment", "role", "pair")}
            d["shape"] = list(g["shape"])
            d["clean"] = np.asarray(g["grid"]).tolist()
            d["corrupt"] = None if corrupt_grids is None else np.asarray(corrupt_grids[k]["grid"]).tolist()
            grids.append(d)
        settings = {
            **settings,
            "batch_size": self.batch_size,
            "fast": self.fast,
            "forward_passes": self.n_forward,
            "skipped_exact_zero": self.n_skipped,
            "tokens": self.T,
        }
        return PatchResult(
            effect=self.normalise(raw),
            raw=np.asarray(raw, dtype=np.float64),
            clean_metric=self.clean_metric,
            corrupt_metric=self.corrupt_metric,
            sites=[s.name for s in sites],
            layers=[-1 if s.layer is None else int(s.layer) for s in sites],
            columns=columns,
            labels=labels,
            method=method,
            direction=self.direction,
            metric=self.metric.label,
            metric_kind=self.metric.kind,
            task_id=self.clean.task_id,
            corruption=describe(self.corrupt.task) if self.corrupt is not None else None,
            model=model_name(self.model),
            grids=grids,
            changed=self.changed.tolist(),
            settings=settings,
            **kw,
        )


# ========================================================================================= positions


def _table_at(subject: Any, positions: np.ndarray) -> CellTable:
    """A CellTable row for each given token position (row/col -1 where the token is no single cell)."""
    from arcscope.tasks.prompts import Role

    cm = subject.cell_map
    pos = np.asarray(positions, dtype=np.int64)
    roles = np.array([Role.from_code(int(c)).value for c in cm.role[pos]], dtype=object)
    return CellTable(
        pos,
        np.asarray(cm.segment[pos], dtype=np.int64),
        roles,
        np.asarray(cm.pair[pos], dtype=np.int64),
        np.asarray(cm.row[pos], dtype=np.int64),
        np.asarray(cm.col[pos], dtype=np.int64),
    )


def _position_groups(subject: Any, positions: Any) -> tuple[list[np.ndarray], CellTable]:
    """Columns of a positions sweep: groups of token positions and a CellTable row per group.

    ``positions``: ``"cells"`` (every cell of the train pairs and the test input), ``"all"`` (every token),
    ``"prompt"`` (every token before the answer), role names (``"test_input"``, ``"train_input,test_input"``),
    a CellTable, a list of positions, or a list of lists (positions patched together).
    """
    T = len(subject)
    if isinstance(positions, CellTable):
        groups = [np.array([p], dtype=np.int64) for p in positions.position]
        return groups, positions
    if positions is None or (isinstance(positions, str) and positions.strip() == "cells"):
        cells = subject.cells(list(INPUT_ROLES))
        return [np.array([p], dtype=np.int64) for p in cells.position], cells
    if isinstance(positions, str):
        name = positions.strip()
        if name in ("all", "prompt"):
            n = T if name == "all" else subject.n_prompt
            pos = np.arange(n, dtype=np.int64)
            return [pos[i : i + 1] for i in range(n)], _table_at(subject, pos)
        try:
            cells = subject.cells([r for r in name.split(",") if r.strip()])
        except ValueError as e:
            raise AnalysisError(
                f"task {subject.task_id}: positions {positions!r}: expected cells, all, prompt, role names "
                f"({', '.join(INPUT_ROLES)}, answer) or a list of token positions ({e})"
            ) from None
        if not len(cells):
            raise AnalysisError(
                f"task {subject.task_id}: positions {positions!r} select no cell of the prompt"
            )
        return [np.array([p], dtype=np.int64) for p in cells.position], cells
    groups = []
    for item in positions:
        g = np.atleast_1d(np.asarray(item, dtype=np.int64))
        if g.ndim != 1 or not len(g):
            raise AnalysisError(f"task {subject.task_id}: position group {item!r} is empty or not flat")
        bad = g[(g < 0) | (g >= T)]
        if len(bad):
            raise AnalysisError(
                f"task {subject.task_id}: position {int(bad[0])} is outside the prompt (0..{T - 1})"
            )
        groups.append(np.unique(g))
    if not groups:
        raise AnalysisError(f"task {subject.task_id}: no positions to patch")
    return groups, _table_at(subject, np.array([g[0] for g in groups]))


def _flat_positions(subject: Any, positions: Any) -> np.ndarray | None:
    """The union of ``positions`` (None stays None: every position)."""
    if positions is None or (isinstance(positions, str) and positions.strip() == "all"):
        return None
    groups, _ = _position_groups(subject, positions)
    return np.unique(np.concatenate(groups))


def _pos_label(positions: Any) -> str:
    if positions is None:
        return "cells"
    return positions if isinstance(positions, str) else "given"


def _labels(subject: Any, positions: Sequence[int]) -> list[str]:
    tok = subject.tokenizer
    ids = np.asarray(subject.cell_map.input_ids)
    return [tok.decode([int(ids[p])]) for p in positions]


def _sites(model: Any, sites: Any) -> list[HookSite]:
    out = resolve_hooks(model, sites)
    for s in out:
        if s.hook == PATTERN:
            raise AnalysisError(
                f"site {s.name}: attention patterns are cut with a knockout (arcscope.analysis), not patched"
            )
    if not out:
        raise AnalysisError(f"sites {sites!r} name no hook")
    return out


def _z_sites(model: Any, layers: Sequence[int] | None) -> list[HookSite]:
    sites = resolve_hooks(model, "blocks.*.attn.hook_z")
    if layers is None:
        return sites
    n = len(sites)
    out = []
    for layer in layers:
        i = int(layer)
        if not -n <= i < n:
            raise AnalysisError(f"layer {i} is out of range; the model has {n} layers (0..{n - 1})")
        out.append(sites[i % n])
    return out


def _start_layer(site: HookSite) -> int:
    return 0 if site.layer is None else int(site.layer)


def _differ(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rows where a and b differ in any element (bool ``[n]``)."""
    return (a != b).reshape(a.shape[0], -1).any(-1)


def _position_entries(
    pt: _Patcher, sites: Sequence[HookSite], groups: Sequence[np.ndarray]
) -> list[_Entry | None]:
    """Row-major (site, group) entries: the source rows replace the base rows at the group's positions."""
    src = pt.acts("source", sites)
    base = pt.acts("base", sites)
    entries: list[_Entry | None] = []
    for s in sites:
        xs, xb = src[s.name], base[s.name]
        for g in groups:
            gi = torch.as_tensor(g, device=xs.device)
            pos = g[_differ(xs[gi], xb[gi]).cpu().numpy()]
            if not len(pos):
                entries.append(None)
                continue

            def make(s=s, pos=pos, xs=xs) -> list[_Edit]:
                return [_Edit(s, pos, xs[torch.as_tensor(pos, device=xs.device)], "replace")]

            entries.append(_Entry(_start_layer(s), int(pos[0]), make))
    return entries


def _head_entries(
    pt: _Patcher, sites: Sequence[HookSite], positions: np.ndarray | None
) -> list[_Entry | None]:
    """Row-major (layer, head) entries: one head's slice of hook_z from the source run at ``positions``."""
    src = pt.acts("source", sites)
    base = pt.acts("base", sites)
    entries: list[_Entry | None] = []
    for s in sites:
        xs, xb = src[s.name], base[s.name]
        heads = int(s.heads or 1)
        dh = xs.shape[-1] // heads
        allpos = np.arange(pt.T) if positions is None else positions
        pi = torch.as_tensor(allpos, device=xs.device)
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            pos = allpos[_differ(xs[pi, sl], xb[pi, sl]).cpu().numpy()]
            if not len(pos):
                entries.append(None)
                continue

            def make(s=s, pos=pos, xs=xs, xb=xb, sl=sl) -> list[_Edit]:
                idx = torch.as_tensor(pos, device=xs.device)
                rows = xb[idx].clone()
                rows[:, sl] = xs[idx, sl]  # the other heads keep the base run's values
                return [_Edit(s, pos, rows, "replace")]

            entries.append(_Entry(_start_layer(s), int(pos[0]), make))
    return entries


def _heads_of(sites: Sequence[HookSite]) -> int:
    counts = {int(s.heads or 1) for s in sites}
    if len(counts) != 1:
        raise AnalysisError(f"hook_z sites have different head counts {sorted(counts)}")
    return counts.pop()


# ============================================================================================ sweeps


def patch_sweep(
    clean: Any,
    corrupt: Any,
    *,
    metric: Metric | str | None = None,
    sites: Any = DEFAULT_SITES,
    positions: Any = "cells",
    direction: str = "denoise",
    batch_size: int = 16,
    fast: bool = True,
    progress: ProgressFn | None = None,
) -> PatchResult:
    """Exact activation patching over sites (rows, e.g. every layer's resid_pre) x position groups
    (columns: one per input-grid cell by default); one patched run per entry, ``batch_size`` per forward."""
    import time

    t0 = time.perf_counter()
    site_list = _sites(clean.model, sites)
    pt = _Patcher(
        clean,
        corrupt,
        metric,
        direction=direction,
        batch_size=batch_size,
        fast=fast,
        progress=progress,
        sites=site_list,
    )
    groups, cells = _position_groups(pt.base, positions)
    values = pt.run(_position_entries(pt, site_list, groups))
    raw = (values - pt.base_metric).reshape(len(site_list), len(groups))
    return pt.result(
        raw,
        sites=site_list,
        columns="positions",
        labels=_labels(clean, cells.position),
        method="exact",
        settings={"positions": _pos_label(positions), "seconds": time.perf_counter() - t0},
        cells=cells,
        groups=[g.tolist() for g in groups],
    )


def head_sweep(
    clean: Any,
    corrupt: Any,
    *,
    metric: Metric | str | None = None,
    layers: Sequence[int] | None = None,
    positions: Any = None,
    direction: str = "denoise",
    batch_size: int = 16,
    fast: bool = True,
    progress: ProgressFn | None = None,
) -> PatchResult:
    """Exact patching of one attention head at a time (its slice of ``attn.hook_z``, the input of
    ``o_proj``) over layers x heads, at every position (None) or the given ones."""
    import time

    t0 = time.perf_counter()
    site_list = _z_sites(clean.model, layers)
    pt = _Patcher(
        clean,
        corrupt,
        metric,
        direction=direction,
        batch_size=batch_size,
        fast=fast,
        progress=progress,
        sites=site_list,
    )
    n_heads = _heads_of(site_list)
    pos = _flat_positions(pt.base, positions)
    values = pt.run(_head_entries(pt, site_list, pos))
    raw = (values - pt.base_metric).reshape(len(site_list), n_heads)
    return pt.result(
        raw,
        sites=site_list,
        columns="heads",
        labels=[f"H{h}" for h in range(n_heads)],
        method="exact",
        settings={"seconds": time.perf_counter() - t0},
        heads=list(range(n_heads)),
        head_positions=None if pos is None else pos.tolist(),
    )


# ======================================================================================= attribution


class KeepGrad:
    """Hooks that keep the activations at ``sites`` in the autograd graph with ``retain_grad``, so one
    backward pass gives d metric / d activation at every site (capture.Capture detaches; this does not).

    ``with KeepGrad(model, sites) as kg: metric(model(...)).sum().backward()`` then ``kg.acts[name]`` and
    ``kg.grads[name]`` are ``[B, T, d]``. The first hooked activation that is not part of a graph (the
    model's weights do not require grad) becomes a leaf that does, so gradients reach every site.
    """

    def __init__(self, model: Any, sites: Any):
        self.model = model
        self.sites = resolve_hooks(model, sites)
        self.acts: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def _keep(self, site: HookSite, x: torch.Tensor) -> torch.Tensor | None:
        new = None
        if not x.requires_grad:
            new = x = x.detach().requires_grad_(True)
        else:
            x.retain_grad()
        self.acts[site.name] = x
        return new

    def _hook(self, site: HookSite) -> Any:
        if site.kind == "pre":

            def pre(module, args, kwargs):
                if args:
                    new = self._keep(site, args[0])
                    return None if new is None else ((new,) + tuple(args[1:]), kwargs)
                new = self._keep(site, kwargs["hidden_states"])
                return None if new is None else (args, {**kwargs, "hidden_states": new})

            return pre

        def post(module, args, out):
            new = self._keep(site, _first(out))
            return None if new is None else _with_first(out, new)

        return post

    @property
    def grads(self) -> dict[str, torch.Tensor]:
        """d output / d activation at each site after ``backward`` (zeros where the output does not depend)."""
        return {k: v.grad if v.grad is not None else torch.zeros_like(v) for k, v in self.acts.items()}

    def __enter__(self) -> KeepGrad:
        try:
            for s in self.sites:
                module = self.model.get_submodule(s.module)
                if s.kind == "pre":
                    self._handles.append(module.register_forward_pre_hook(self._hook(s), with_kwargs=True))
                else:
                    self._handles.append(module.register_forward_hook(self._hook(s)))
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


@contextlib.contextmanager
def _frozen_weights(model: Any) -> Iterator[None]:
    """Weights stop requiring grad for the block (no weight gradients computed or accumulated)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _gradients(
    pt: _Patcher, sites: Sequence[HookSite]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The base run's activations and d metric / d activation at ``sites``, ``[T, d]`` float32 each."""
    with _frozen_weights(pt.model), torch.enable_grad(), KeepGrad(pt.model, list(sites)) as kg:
        out = pt.model(input_ids=pt.ids, use_cache=False, logits_to_keep=pt.keep)
        m = pt.metric(out.logits.float(), pt.answer).sum()
        m.backward()
        acts = {k: v.detach()[0].float() for k, v in kg.acts.items()}
        grads = {k: g.detach()[0].float() for k, g in kg.grads.items()}
    missing = [s.name for s in sites if s.name not in acts]
    if missing:
        raise AnalysisError(f"site {missing[0]} was not reached by the forward pass")
    pt.n_forward += 1
    return acts, grads


def _attribution(
    pt: _Patcher,
    sites: Sequence[HookSite],
    *,
    groups: Sequence[np.ndarray] | None = None,
    heads: bool = False,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """``[sites, columns]`` first-order estimates of patched - base: (source - base) . gradient."""
    base, grads = _gradients(pt, sites)
    src = pt.acts("source", sites)
    rows = []
    for s in sites:
        contrib = (src[s.name].float() - base[s.name]) * grads[s.name]  # [T, d]
        if heads:
            n = int(s.heads or 1)
            per = contrib.reshape(pt.T, n, -1).sum(-1)  # [T, heads]
            if positions is not None:
                per = per[torch.as_tensor(positions, device=per.device)]
            rows.append(per.sum(0).double().cpu().numpy())
        else:
            tok = contrib.sum(-1).double().cpu().numpy()
            rows.append(np.array([tok[g].sum() for g in groups]))
    return np.stack(rows)


def attribution_patching(
    clean: Any,
    corrupt: Any,
    *,
    metric: Metric | str | None = None,
    sites: Any = DEFAULT_SITES,
    positions: Any = None,
    heads: bool = False,
    layers: Sequence[int] | None = None,
    direction: str = "denoise",
) -> PatchResult:
    """The gradient approximation of :func:`patch_sweep` (or, with ``heads``, of :func:`head_sweep`):
    ``patched - base ~ (source_act - base_act) . d metric / d act`` at the base run, for every entry from one
    forward and backward pass (plus the source run's cached activations)."""
    import time

    t0 = time.perf_counter()
    site_list = _z_sites(clean.model, layers) if heads else _sites(clean.model, sites)
    # the source run's activations come with its metric; the base run's come with the gradient pass
    pt = _Patcher(clean, corrupt, metric, direction=direction, fast=False, sites=site_list)
    if heads:
        n_heads = _heads_of(site_list)
        pos = _flat_positions(pt.base, positions)
        raw = _attribution(pt, site_list, heads=True, positions=pos)
        return pt.result(
            raw,
            sites=site_list,
            columns="heads",
            labels=[f"H{h}" for h in range(n_heads)],
            method="attribution",
            settings={"seconds": time.perf_counter() - t0},
            heads=list(range(n_heads)),
            head_positions=None if pos is None else pos.tolist(),
        )
    groups, cells = _position_groups(pt.base, positions)
    raw = _attribution(pt, site_list, groups=groups)
    return pt.result(
        raw,
        sites=site_list,
        columns="positions",
        labels=_labels(clean, cells.position),
        method="attribution",
        settings={"positions": _pos_label(positions), "seconds": time.perf_counter() - t0},
        cells=cells,
        groups=[g.tolist() for g in groups],
    )


@dataclass
class Agreement:
    """How well approximate effects track exact ones on the same entries."""

    pearson: float
    """Pearson correlation of the raw effects."""
    spearman: float
    """Spearman (rank) correlation."""
    top_k_overlap: float
    """Share of the exact top-k entries (by |effect|) that are also in the approximate top-k."""
    k: int
    n: int
    """Entries compared."""
    exact: np.ndarray
    """float64 ``[n]`` raw exact effects."""
    approx: np.ndarray
    """float64 ``[n]`` raw approximate effects."""
    entries: list[tuple[int, int]] = field(default_factory=list)
    """(row, column) of each compared entry in the sweep's arrays."""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return json_safe(
            {
                "pearson": self.pearson,
                "spearman": self.spearman,
                "top_k_overlap": self.top_k_overlap,
                "k": self.k,
                "n": self.n,
                "exact": self.exact,
                "approx": self.approx,
                "entries": [list(e) for e in self.entries],
                "settings": self.settings,
            }
        )

    def to_table(self) -> pa.Table:
        """One row per compared entry: row, column, exact, approx."""
        e = np.asarray(self.entries, dtype=np.int64).reshape(-1, 2)
        return pa.table({"row": e[:, 0], "column": e[:, 1], "exact": self.exact, "approx": self.approx})


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def agreement(exact: Any, approx: Any, *, k: int = 10) -> Agreement:
    """Pearson and Spearman correlation and top-k overlap of two PatchResults (or arrays) over the
    entries finite in both."""
    from scipy.stats import rankdata

    a = np.asarray(exact.raw if isinstance(exact, PatchResult) else exact, dtype=np.float64)
    b = np.asarray(approx.raw if isinstance(approx, PatchResult) else approx, dtype=np.float64)
    if a.shape != b.shape:
        raise AnalysisError(f"cannot compare effects of shapes {list(a.shape)} and {list(b.shape)}")
    shape = a.shape
    a, b = a.ravel(), b.ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    idx = np.flatnonzero(ok)
    a, b = a[ok], b[ok]
    kk = min(int(k), len(a))
    if kk:
        ta = set(np.argsort(-np.abs(a), kind="stable")[:kk].tolist())
        tb = set(np.argsort(-np.abs(b), kind="stable")[:kk].tolist())
        overlap = len(ta & tb) / kk
    else:
        overlap = math.nan
    entries = [tuple(int(x) for x in np.unravel_index(i, shape)) for i in idx] if len(shape) == 2 else []
    return Agreement(
        pearson=_correlation(a, b),
        spearman=_correlation(rankdata(a), rankdata(b)) if len(a) > 1 else math.nan,
        top_k_overlap=overlap,
        k=kk,
        n=len(a),
        exact=a,
        approx=b,
        entries=entries,
    )


def compare_on_sample(
    clean: Any,
    corrupt: Any,
    *,
    metric: Metric | str | None = None,
    sites: Any = DEFAULT_SITES,
    positions: Any = None,
    heads: bool = False,
    layers: Sequence[int] | None = None,
    n: int = 64,
    k: int = 10,
    seed: int = 0,
    direction: str = "denoise",
    batch_size: int = 16,
    fast: bool = True,
    approx: PatchResult | None = None,
    progress: ProgressFn | None = None,
) -> Agreement:
    """Agreement of attribution patching with exact patching on ``n`` entries drawn uniformly (``seed``)
    from the sweep; ``approx`` reuses an attribution result of the same sweep."""
    if approx is None:
        approx = attribution_patching(
            clean,
            corrupt,
            metric=metric,
            sites=sites,
            positions=positions,
            heads=heads,
            layers=layers,
            direction=direction,
        )
    site_list = _z_sites(clean.model, layers) if heads else _sites(clean.model, sites)
    pt = _Patcher(
        clean,
        corrupt,
        metric,
        direction=direction,
        batch_size=batch_size,
        fast=fast,
        progress=progress,
        sites=site_list,
    )
    if heads:
        entries = _head_entries(pt, site_list, _flat_positions(pt.base, positions))
    else:
        groups, _ = _position_groups(pt.base, positions)
        entries = _position_entries(pt, site_list, groups)
    if len(entries) != approx.raw.size:
        raise AnalysisError(
            f"the attribution result has {approx.raw.size} entries but this sweep has {len(entries)}; pass "
            "the same sites, positions and heads"
        )
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(entries), size=min(int(n), len(entries)), replace=False))
    values = pt.run([entries[i] for i in pick])
    exact = values - pt.base_metric
    res = agreement(exact, approx.raw.ravel()[pick], k=k)
    cols = approx.raw.shape[1]
    res.entries = [
        (int(i) // cols, int(i) % cols)
        for i in pick[np.isfinite(exact) & np.isfinite(approx.raw.ravel()[pick])]
    ]
    res.settings = {
        "sample": int(len(pick)),
        "of": int(len(entries)),
        "seed": int(seed),
        "columns": approx.columns,
        "forward_passes": pt.n_forward,
        "skipped_exact_zero": pt.n_skipped,
    }
    return res


# =============================================================================================== SAE


def _sae_site(model: Any, sae: Any, hook: str | None) -> HookSite:
    name = hook or getattr(getattr(sae, "cfg", None), "hook", None)
    if not name:
        raise AnalysisError("the SAE records no hook; pass hook= (e.g. blocks.3.hook_resid_post)")
    sites = resolve_hooks(model, name)
    if len(sites) != 1:
        raise AnalysisError(f"hook {name!r} names {len(sites)} sites of the model; an SAE reads one")
    site = sites[0]
    if site.d is not None and site.d != sae.d_in:
        raise AnalysisError(f"the SAE reads width {sae.d_in} but {site.name} of the model has width {site.d}")
    return site


def _decode_delta(sae: Any, x: torch.Tensor, dlat: torch.Tensor) -> torch.Tensor:
    """How the SAE's reconstruction of rows ``x`` moves when their latents move by ``dlat``, in x's units.

    decode is affine, so decode(a + dlat) - decode(a) = dlat @ W_dec, scaled back through the SAE's input
    normalisation. Adding this to x equals decode(edited) + reconstruction error, and is exactly x when
    nothing is edited.
    """
    dy = dlat.to(sae.W_dec.dtype) @ sae.W_dec
    mode = sae.cfg.input_norm
    if mode == "none":
        return dy
    _, stats = sae._norm_in(x.to(sae.W_dec.dtype))
    if mode == "layer_norm":
        return dy * stats[1]
    return dy / stats  # constant_norm_rescale: the input was multiplied by stats


@contextlib.contextmanager
def sae_splice(
    model: Any,
    sae: Any,
    *,
    hook: str | None = None,
    edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Splice ``sae`` in at its hook for the block: the activation becomes decode(edited latents) + the
    reconstruction error, where ``edit`` maps latents ``[B, T, d_sae]`` to edited ones (None: no edit, and
    the model is unchanged bit for bit). Yields a dict that holds the last pass's ``latents``."""
    site = _sae_site(model, sae, hook)
    seen: dict[str, torch.Tensor] = {}

    def change(x: torch.Tensor) -> torch.Tensor | None:
        flat = x.reshape(-1, x.shape[-1])
        with torch.no_grad():
            lat = sae.encode(flat.to(sae.W_dec.dtype))
        seen["latents"] = lat.reshape(*x.shape[:-1], -1)
        if edit is None:
            return None
        new = edit(seen["latents"].clone()).reshape(lat.shape)
        dlat = new - lat
        if not bool(dlat.any()):
            return None
        return x + _decode_delta(sae, flat, dlat).reshape(x.shape).to(x.dtype)

    module = model.get_submodule(site.module)
    if site.kind == "pre":

        def pre(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            new = change(x)
            if new is None:
                return None
            if args:
                return (new,) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(mod, args, out):
            new = change(_first(out))
            return None if new is None else _with_first(out, new)

        handle = module.register_forward_hook(post)
    try:
        yield seen
    finally:
        handle.remove()


@dataclass
class SAEPatchResult:
    """The answer metric's change when each of a list of SAE latents is ablated or patched."""

    latents: np.ndarray
    """int64 ``[n]`` latent indices."""
    raw: np.ndarray
    """float64 ``[n]``: edited metric minus the run's own metric."""
    effect: np.ndarray
    """float64 ``[n]``: normalised as in the module docstring (NaN without a corrupted prompt)."""
    activation: np.ndarray
    """float64 ``[n]``: mean activation of each latent over the edited positions in the run edited."""
    source_activation: np.ndarray | None
    """float64 ``[n]``: the same in the source run (patch mode)."""
    mode: str
    """ablate or patch."""
    direction: str
    hook: str
    base_metric: float
    """The unedited run's metric."""
    clean_metric: float
    corrupt_metric: float | None
    metric: str
    metric_kind: str
    task_id: str
    corruption: str | None
    model: str | None
    positions: list[int] | None
    """Token positions edited (None: all)."""
    sae: dict[str, Any] = field(default_factory=dict)
    """The SAE: d_in, d_sae, arch, hook."""
    settings: dict[str, Any] = field(default_factory=dict)

    def top(self, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` latents of largest |raw| change."""
        order = np.argsort(-np.abs(np.nan_to_num(self.raw, nan=0.0)), kind="stable")[:k]
        return [
            {"latent": int(self.latents[i]), "raw": float(self.raw[i]), "effect": float(self.effect[i])}
            for i in order
        ]

    def to_table(self) -> pa.Table:
        """One row per latent: latent, raw, effect, activation (and source_activation)."""
        cols: dict[str, Any] = {
            "latent": self.latents.astype(np.int64),
            "raw": self.raw,
            "effect": self.effect,
            "activation": self.activation,
        }
        if self.source_activation is not None:
            cols["source_activation"] = self.source_activation
        cols["mode"] = [self.mode] * len(self.latents)
        return pa.table(cols)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return json_safe(
            {
                "analysis": "sae_patching",
                "mode": self.mode,
                "direction": self.direction,
                "hook": self.hook,
                "task_id": self.task_id,
                "model": self.model,
                "corruption": self.corruption,
                "metric": self.metric,
                "metric_kind": self.metric_kind,
                "base_metric": self.base_metric,
                "clean_metric": self.clean_metric,
                "corrupt_metric": self.corrupt_metric,
                "latents": self.latents,
                "raw": _json_array(self.raw),
                "effect": _json_array(self.effect),
                "activation": self.activation,
                "source_activation": self.source_activation,
                "positions": self.positions,
                "sae": self.sae,
                "settings": self.settings,
            }
        )


def sae_patch(
    clean: Any,
    corrupt: Any,
    sae: Any,
    *,
    mode: str = "patch",
    latents: Sequence[int] | None = None,
    hook: str | None = None,
    positions: Any = None,
    metric: Metric | str | None = None,
    direction: str = "denoise",
    max_latents: int | None = 256,
    batch_size: int = 16,
    fast: bool = True,
    progress: ProgressFn | None = None,
) -> SAEPatchResult:
    """Edit one SAE latent per patched run, spliced in at the SAE's hook (activation + decoder delta, so the
    rest of the reconstruction error stays): ``ablate`` zeroes it in the clean run (``corrupt`` may be None),
    ``patch`` puts the source run's value into the base run (``direction``). ``latents`` None takes those
    the edit changes at ``positions`` (None: every position), at most ``max_latents`` with the largest edit."""
    import time

    t0 = time.perf_counter()
    if mode not in SAE_MODES:
        raise AnalysisError(f"SAE patching mode {mode!r} is not one of {', '.join(SAE_MODES)}")
    if mode == "patch" and corrupt is None:
        raise AnalysisError(f"task {clean.task_id}: SAE patching (mode patch) needs a corrupted subject")
    site = _sae_site(clean.model, sae, hook)
    pt = _Patcher(
        clean,
        corrupt,
        metric,
        direction="noise" if mode == "ablate" else direction,
        batch_size=batch_size,
        fast=fast,
        progress=progress,
        sites=[site],
    )
    pos = _flat_positions(pt.base, positions)
    allpos = np.arange(pt.T) if pos is None else pos
    pi = torch.as_tensor(allpos, device=pt.device)
    sae_dev = sae.W_dec.device
    xb = pt.acts("base", [site])[site.name][pi]
    with torch.no_grad():
        ab = sae.encode(xb.to(sae_dev, sae.W_dec.dtype))
        asrc = (
            sae.encode(pt.acts("source", [site])[site.name][pi].to(sae_dev, sae.W_dec.dtype))
            if mode == "patch"
            else None
        )
    dl = -ab if mode == "ablate" else asrc - ab  # [n_pos, d_sae]: the latent edit at each position
    if latents is None:
        score = dl.abs().sum(0) * sae.W_dec.norm(dim=1)
        cand = torch.nonzero(score > 0).flatten()
        if max_latents is not None and len(cand) > max_latents:
            cand = cand[torch.argsort(score[cand], descending=True, stable=True)[:max_latents]]
        chosen = np.sort(cand.cpu().numpy()).astype(np.int64)
    else:
        chosen = np.asarray(list(latents), dtype=np.int64)
        bad = chosen[(chosen < 0) | (chosen >= sae.d_sae)]
        if len(bad):
            raise AnalysisError(
                f"latent {int(bad[0])} is out of range; the SAE has {sae.d_sae} (0..{sae.d_sae - 1})"
            )
    entries: list[_Entry | None] = []
    for j in chosen:
        col = dl[:, int(j)]
        nz = torch.nonzero(col != 0).flatten()
        if not len(nz):
            entries.append(None)
            continue
        p = allpos[nz.cpu().numpy()]

        def make(j=int(j), nz=nz, p=p) -> list[_Edit]:
            d = torch.zeros(len(nz), sae.d_sae, device=sae_dev, dtype=sae.W_dec.dtype)
            d[:, j] = dl[nz, j]
            rows = _decode_delta(sae, xb[nz].to(sae_dev), d).to(pt.device, xb.dtype)
            return [_Edit(site, p, rows, "add")]

        entries.append(_Entry(_start_layer(site), int(p[0]), make))
    values = pt.run(entries, label="SAE latents")
    raw = values - pt.base_metric
    ci = torch.as_tensor(chosen, device=ab.device)
    mean_b = ab[:, ci].double().mean(0).cpu().numpy()
    mean_s = asrc[:, ci].double().mean(0).cpu().numpy() if asrc is not None else None
    return SAEPatchResult(
        latents=chosen,
        raw=raw,
        effect=pt.normalise(raw),
        activation=mean_b,
        source_activation=mean_s,
        mode=mode,
        direction=pt.direction,
        hook=site.name,
        base_metric=pt.base_metric,
        clean_metric=pt.clean_metric,
        corrupt_metric=None if corrupt is None else pt.corrupt_metric,
        metric=pt.metric.label,
        metric_kind=pt.metric.kind,
        task_id=clean.task_id,
        corruption=describe(corrupt.task) if corrupt is not None else None,
        model=model_name(pt.model),
        positions=None if pos is None else pos.tolist(),
        sae={"d_in": sae.d_in, "d_sae": sae.d_sae, "arch": sae.cfg.arch, "hook": sae.cfg.hook},
        settings={
            "batch_size": pt.batch_size,
            "fast": pt.fast,
            "forward_passes": pt.n_forward,
            "skipped_exact_zero": pt.n_skipped,
            "seconds": time.perf_counter() - t0,
        },
    )


# ============================================================================================== paths


def path_patch(
    clean: Any,
    corrupt: Any,
    *,
    sender: tuple[int, int],
    metric: Metric | str | None = None,
    receivers: str = "both",
    positions: Any = None,
    direction: str = "denoise",
    batch_size: int = 16,
    fast: bool = True,
    progress: ProgressFn | None = None,
) -> PatchResult:
    """Path patching through one head: the change of head ``sender = (layer, head)``'s output (source minus
    base, through ``o_proj``) is fed only into the input of one receiver at a time (a later layer's attention
    = its queries, keys and values, or a layer's MLP), while the residual stream itself keeps the base run's
    values. Rows are layers, columns ``attn`` and ``mlp``; ``extra`` holds the direct path to the logits and
    the whole head patched."""
    import time

    t0 = time.perf_counter()
    if receivers not in RECEIVERS:
        raise AnalysisError(f"receivers {receivers!r} is not one of {', '.join(RECEIVERS)}")
    if find_layout(clean.model) is None:
        raise AnalysisError("path patching needs the Llama layout (llama, qwen2, qwen3, mistral)")
    layer, head = (int(x) for x in sender)
    zsite = _z_sites(clean.model, [layer])[0]
    pt = _Patcher(
        clean,
        corrupt,
        metric,
        direction=direction,
        batch_size=batch_size,
        fast=fast,
        progress=progress,
        sites=[zsite],
    )
    layer = int(zsite.layer)
    n_heads = int(zsite.heads or 1)
    if not 0 <= head < n_heads:
        raise AnalysisError(
            f"head {head} is out of range; layer {layer} has {n_heads} heads (0..{n_heads - 1})"
        )
    zs, zb = pt.acts("source", [zsite])[zsite.name], pt.acts("base", [zsite])[zsite.name]
    dh = zs.shape[-1] // n_heads
    sl = slice(head * dh, (head + 1) * dh)
    w_o = pt.model.get_submodule(zsite.module).weight  # [d_model, heads * d_head]
    with torch.no_grad():
        delta = (zs[:, sl].float() - zb[:, sl].float()) @ w_o[:, sl].float().T  # [T, d_model]
    pos = _flat_positions(pt.base, positions)
    allpos = np.arange(pt.T) if pos is None else pos
    allpos = allpos[_differ(delta[torch.as_tensor(allpos)], torch.zeros_like(delta[:1])).cpu().numpy()]
    n_layers, d = pt.layout.n_layers, pt.layout.d_model
    layers = list(range(layer, n_layers))

    def receiver(module: str, at: int) -> HookSite:
        return HookSite(f"{module}:in", module, "pre", d, layer=at)

    def entry(site: HookSite) -> _Entry | None:
        if not len(allpos):
            return None

        def make(site=site) -> list[_Edit]:
            idx = torch.as_tensor(allpos, device=delta.device)
            return [_Edit(site, allpos, delta[idx].to(zb.dtype), "add")]

        return _Entry(_start_layer(site), int(allpos[0]), make)

    entries: list[_Entry | None] = []
    blank: list[bool] = []  # receivers that do not exist (the sender's own attention input) or were not asked
    sites_out = []
    for li in layers:
        base_path = f"{pt.layout.layers}.{li}"
        sites_out.append(HookSite(f"blocks.{li}", base_path, "pre", d, layer=li))
        for module, ok in (
            ("input_layernorm", li > layer and receivers in ("attn", "both")),
            ("post_attention_layernorm", receivers in ("mlp", "both")),
        ):
            entries.append(entry(receiver(f"{base_path}.{module}", li)) if ok else None)
            blank.append(not ok)
    final = entry(receiver(pt.layout.final_norm, n_layers - 1))
    whole = _head_entries(pt, [zsite], pos)[head]
    values = pt.run(entries + [final, whole], label="paths")
    raw_all = values - pt.base_metric
    raw = raw_all[: len(entries)].copy()
    raw[np.asarray(blank)] = np.nan
    raw = raw.reshape(len(layers), 2)
    extra = {
        "sender": [layer, head],
        "direct_to_logits": {"raw": float(raw_all[-2]), "effect": float(pt.normalise(raw_all[-2:-1])[0])},
        "whole_head": {"raw": float(raw_all[-1]), "effect": float(pt.normalise(raw_all[-1:])[0])},
    }
    return pt.result(
        raw,
        sites=sites_out,
        columns="receivers",
        labels=["attn", "mlp"],
        method="exact",
        settings={"receivers": receivers, "seconds": time.perf_counter() - t0},
        head_positions=None if pos is None else pos.tolist(),
        extra=extra,
    )


__all__ = [
    "DEFAULT_SITES",
    "DIRECTIONS",
    "INPUT_ROLES",
    "RECEIVERS",
    "SAE_MODES",
    "Agreement",
    "KeepGrad",
    "PatchResult",
    "SAEPatchResult",
    "agreement",
    "attribution_patching",
    "compare_on_sample",
    "head_sweep",
    "patch_sweep",
    "path_patch",
    "sae_patch",
    "sae_splice",
]
