"""The recurrent reasoners (HRM, TRM) on the grid: when a cell is decided, which state carries it, where the
model looks, and what a linear probe reads from its states, step by step.

An HRM or TRM position already is a grid cell (Sudoku: cell ``r * n + c``; ARC: a cell of the 30x30 canvas),
so results come back as ``[h, w]`` grids. Time has two scales: ACT *steps* (1-based, as the store's
``act_step`` column and the halting step count them), and inside a step the *updates* of the recurrence,
named as :func:`arcscope.reasoning.capture.hook_names` names them: ``z_L.{h}.{l}`` (L update ``l`` of H
cycle ``h``) and ``z_H.{h}`` (the H update closing cycle ``h``; cycles are 0-based). The output head reads
``z_H``, so every ``z_H.{h}`` update gives a prediction of every cell, not only the last one of a step.

* :func:`decided_step`: per cell, the first ACT step (and the first (step, cycle)) from which the prediction
  is correct and stays correct (-1: never), with accuracy curves per step and per cycle.
* :func:`patch_states`: activation patching of ``z_H`` or ``z_L`` at one (step, update) from a clean puzzle
  into a corrupted one (:func:`with_cell` changes one input cell; any other puzzle works too), at all
  positions or cell by cell (batched: one forward per ``batch_size`` cells), measured by the log-probability
  of the clean answer's tokens at chosen output cells. The input embedding is added again at every update,
  so a corrupted input keeps acting after the patch: patching the last ``z_H`` of step ``s`` at every
  position gives exactly the clean output of step ``s``, not of the steps after it.
* :func:`grid_attention`: attention weights of one layer (per head) from output cells to input cells at every
  update that layer runs in, recomputed as ``softmax(q k^T / sqrt(d))`` from the q and k the layer computes
  (its own projection captured by a hook, RoPE applied as the layer applies it).
* :func:`probe_steps`: a linear probe per step (or per cycle) predicting each cell's answer token from
  ``z_H``, trained on some puzzles and scored on others, beside the model's own readout accuracy.

The model's recurrence is watched and edited through forward hooks on its state modules (``H_level`` and
``L_level``), which see every state update in order; the recorder the model already calls after each update
checks that the order is the one :func:`hook_names` lists, so a model whose recurrence changes fails loudly
instead of being patched at the wrong place. Models run in eval mode (every puzzle runs
``halt_max_steps`` steps, as in evaluation) and are put back in the mode they were in.

Puzzles (:class:`Puzzles`, made by :func:`as_puzzles`) come from a dataset in the HRM layout, a batch of
:mod:`arcscope.reasoning.data`, a dict of tensors, or token arrays given directly (tokens as the model reads
them: Sudoku blank 1, digit d as d + 1; ARC colour c as c + 2 on the canvas).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from arcscope.analysis.subject import AnalysisError
from arcscope.progress import ProgressFn, emit
from arcscope.reasoning.losses import IGNORE_LABEL_ID

IGNORE = IGNORE_LABEL_ID
"""Label value of a cell that is not scored (the reasoning losses' ignore id, -100)."""
NOT_SCORED = -2
"""Value of :attr:`DecidedResult.decided` at cells without a reference token."""
NEVER = -1
"""Value of :attr:`DecidedResult.decided` at cells whose prediction is not right at the end."""

Update = tuple[str, int, int]
"""A state update inside one ACT step: (``z_H`` or ``z_L``, H cycle, L step; -1 for z_H)."""


# ---- puzzles ---------------------------------------------------------------------------------------------


@dataclass
class Puzzles:
    """Puzzles as an HRM/TRM reads them: one row per puzzle, one token per position (= grid cell)."""

    inputs: np.ndarray
    """int64 ``[B, seq_len]`` input tokens."""
    labels: np.ndarray | None
    """int64 ``[B, seq_len]`` answer tokens (-100: not scored), or None when the answer is unknown."""
    puzzle_identifiers: np.ndarray
    """int64 ``[B]`` puzzle embedding rows."""
    shape: tuple[int, int]
    """The grid the positions form, (rows, cols) with rows * cols = seq_len."""
    names: list[str]
    """One name per puzzle (dataset example, or given)."""

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, rows: Sequence[int] | np.ndarray) -> Puzzles:
        """The puzzles at ``rows``."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        return Puzzles(
            self.inputs[idx],
            None if self.labels is None else self.labels[idx],
            self.puzzle_identifiers[idx],
            self.shape,
            [self.names[i] for i in idx.tolist()],
        )

    def tensors(self, device: torch.device | str, rows: int | None = None) -> dict[str, torch.Tensor]:
        """The model's batch dict on ``device`` (``rows`` copies of a single puzzle when given)."""
        labels = self.labels if self.labels is not None else np.full_like(self.inputs, IGNORE)
        t = {
            "inputs": torch.as_tensor(self.inputs, dtype=torch.int32),
            "labels": torch.as_tensor(labels, dtype=torch.int32),
            "puzzle_identifiers": torch.as_tensor(self.puzzle_identifiers, dtype=torch.int32),
        }
        if rows is not None:
            t = {k: v[:1].expand(rows, *v.shape[1:]).contiguous() for k, v in t.items()}
        return {k: v.to(device) for k, v in t.items()}

    def grid(self, values: np.ndarray) -> np.ndarray:
        """Per-position values ``[..., seq_len]`` as ``[..., h, w]``."""
        return np.asarray(values).reshape(*np.shape(values)[:-1], *self.shape)


def with_cell(puzzles: Puzzles, cell: tuple[int, int], value: int, *, puzzle: int = 0) -> Puzzles:
    """A copy of one puzzle with the input token at grid ``cell`` set to ``value`` (the usual corruption);
    the labels stay the clean ones, so the corrupted run is measured against the clean answer."""
    w = puzzles.shape[1]
    r, c = _cell(cell, puzzles.shape, "corrupted cell")
    one = puzzles.take([puzzle])
    old = int(one.inputs[0, r * w + c])
    if int(value) == old:
        raise AnalysisError(
            f"puzzle {one.names[0]}: cell ({r}, {c}) already holds token {old}; a corruption must change it"
        )
    one.inputs = one.inputs.copy()
    one.inputs[0, r * w + c] = int(value)
    one.names = [f"{one.names[0]} with ({r}, {c}) = {int(value)}"]
    return one


def _cell(cell: Any, shape: tuple[int, int], what: str) -> tuple[int, int]:
    try:
        r, c = (int(x) for x in cell)
    except (TypeError, ValueError):
        raise AnalysisError(f"{what} must be a (row, col) pair, got {cell!r}") from None
    h, w = shape
    if not (0 <= r < h and 0 <= c < w):
        raise AnalysisError(f"{what} ({r}, {c}) is outside the {h}x{w} grid")
    return r, c


def _default_shape(seq_len: int) -> tuple[int, int]:
    side = int(round(math.sqrt(seq_len)))
    return (side, side) if side * side == seq_len else (1, seq_len)


def as_puzzles(
    model: Any,
    source: Any,
    *,
    examples: int | Sequence[int] | None = None,
    split: str = "test",
    labels: Any = None,
    puzzle_identifiers: int | Sequence[int] = 0,
    shape: tuple[int, int] | None = None,
    names: Sequence[str] | None = None,
) -> Puzzles:
    """Puzzles for ``model`` from ``source``: :class:`Puzzles`; a dataset folder, ``PuzzleDataset`` or
    ``PuzzleSplit`` (``examples`` of ``split``, default all of it); a :class:`arcscope.reasoning.data.Batch`
    (its real rows); a dict with ``inputs`` (``labels``, ``puzzle_identifiers``); or token arrays: ``[seq]``,
    ``[h, w]``, ``[B, seq]`` or ``[B, h, w]`` (``labels`` alike, or None).

    Checked against the model: sequence length, vocabulary, puzzle identifiers."""
    from arcscope.puzzles.layout import PuzzleDataset, PuzzleSplit, open_dataset
    from arcscope.reasoning.data import Batch

    cfg = model.config
    seq = int(cfg.seq_len)
    if isinstance(source, Puzzles):
        out = replace(source)
    elif isinstance(source, str | os.PathLike | PuzzleDataset | PuzzleSplit):
        if isinstance(source, str | os.PathLike):
            source = open_dataset(source)
        out = _from_split(source, split, examples)
    elif isinstance(source, Batch):
        real = np.flatnonzero(source.examples >= 0)
        t = {k: v[real] for k, v in source.tensors.items()}
        ex = source.examples[real].tolist()
        out = _from_arrays(t["inputs"], t.get("labels"), t.get("puzzle_identifiers"), seq, None)
        out.names = [f"{source.set_name}/example {e}" for e in ex]
    elif isinstance(source, dict):
        if "inputs" not in source:
            raise AnalysisError(f"a puzzle batch dict needs 'inputs'; got keys {sorted(source)}")
        out = _from_arrays(
            source["inputs"],
            source.get("labels", labels),
            source.get("puzzle_identifiers", puzzle_identifiers),
            seq,
            names,
        )
    else:
        out = _from_arrays(source, labels, puzzle_identifiers, seq, names)
    if shape is not None:
        shape = (int(shape[0]), int(shape[1]))
        if shape[0] * shape[1] != seq:
            raise AnalysisError(f"grid shape {shape} does not hold the model's {seq} positions")
        out.shape = shape
    if examples is not None and not isinstance(source, PuzzleDataset | PuzzleSplit):
        out = out.take(np.atleast_1d(np.asarray(examples, dtype=np.int64)))
    _check_puzzles(model, out)
    return out


def _from_split(source: Any, split: str, examples: Any) -> Puzzles:
    from arcscope.puzzles.layout import PuzzleDataset
    from arcscope.reasoning.data import collate

    ds = source if isinstance(source, PuzzleDataset) else None
    sp = source[split] if ds is not None else source
    total = sp.n_examples
    want = np.arange(total) if examples is None else np.atleast_1d(np.asarray(examples, dtype=np.int64))
    if len(want) == 0:
        raise AnalysisError(f"{sp.path}: no examples chosen")
    bad = want[(want < 0) | (want >= total)]
    if len(bad):
        raise AnalysisError(f"{sp.path}: example {int(bad[0])} is out of range (the split has {total})")
    inputs, labels, ids, names, where = [], [], [], [], []
    start = 0
    for set_name, s in sp.sets.items():
        inside = (want >= start) & (want < start + s.n_examples)
        mine = want[inside] - start
        if len(mine):
            owner = s.puzzle_of_examples()
            t = collate(sp, set_name, mine, owner[mine], len(mine))
            inputs.append(t["inputs"].numpy())
            labels.append(t["labels"].numpy())
            ids.append(t["puzzle_identifiers"].numpy())
            where.append(np.flatnonzero(inside))
            for e, p in zip(mine.tolist(), owner[mine].tolist(), strict=True):
                ident = int(s.puzzle_identifiers[p])
                tag = ds.identifier_name(ident) if ds is not None and ds.identifiers else f"puzzle {p}"
                names.append(f"{sp.name}/{set_name}/example {e} ({tag})")
        start += s.n_examples
    # Rows come grouped by set; put them back in the order the examples were asked for.
    rows = np.empty(len(want), dtype=np.int64)
    rows[np.concatenate(where)] = np.arange(len(want))
    return Puzzles(
        np.concatenate(inputs).astype(np.int64)[rows],
        np.concatenate(labels).astype(np.int64)[rows],
        np.concatenate(ids).astype(np.int64)[rows],
        _default_shape(int(sp.metadata.seq_len)),
        [names[i] for i in rows.tolist()],
    )


def _from_arrays(inputs: Any, labels: Any, ids: Any, seq: int, names: Any) -> Puzzles:
    def norm(a: Any, what: str) -> np.ndarray:
        arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        if arr.dtype.kind not in "iu":
            raise AnalysisError(f"puzzle {what} must be integer tokens, got dtype {arr.dtype}")
        if arr.ndim == 1 and arr.shape[0] == seq:
            arr = arr[None]
        elif arr.ndim == 2 and arr.shape[1] == seq:
            pass
        elif arr.ndim == 2 and arr.size == seq:
            arr = arr.reshape(1, seq)
        elif arr.ndim == 3 and arr.shape[1] * arr.shape[2] == seq:
            arr = arr.reshape(arr.shape[0], seq)
        else:
            raise AnalysisError(
                f"puzzle {what} of shape {tuple(arr.shape)} do not fit the model's {seq} positions "
                f"(give [{seq}], [h, w] with h*w={seq}, [B, {seq}] or [B, h, w])"
            )
        return arr.astype(np.int64)

    inp = norm(inputs, "inputs")
    lab = None if labels is None else norm(labels, "labels")
    if lab is not None and lab.shape != inp.shape:
        raise AnalysisError(f"puzzle labels {lab.shape} and inputs {inp.shape} differ in shape")
    idv = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
    if idv.size == 1:
        idv = np.repeat(idv, len(inp))
    if len(idv) != len(inp):
        raise AnalysisError(f"{len(idv)} puzzle identifiers for {len(inp)} puzzles")
    raw_shape = np.shape(inputs.cpu() if isinstance(inputs, torch.Tensor) else inputs)
    grid_shape = _default_shape(seq)
    if len(raw_shape) >= 2 and raw_shape[-1] != seq and raw_shape[-2] * raw_shape[-1] == seq:
        grid_shape = (int(raw_shape[-2]), int(raw_shape[-1]))
    if names is None:
        names = [f"puzzle {i}" for i in range(len(inp))]
    names = list(names)
    if len(names) != len(inp):
        raise AnalysisError(f"{len(names)} names for {len(inp)} puzzles")
    return Puzzles(inp, lab, idv, grid_shape, names)


def _check_puzzles(model: Any, p: Puzzles) -> None:
    cfg = model.config
    if len(p) == 0:
        raise AnalysisError("no puzzles given")
    if p.inputs.shape[1] != cfg.seq_len:
        raise AnalysisError(f"puzzles have {p.inputs.shape[1]} positions; the model reads {cfg.seq_len}")
    lo, hi = int(p.inputs.min()), int(p.inputs.max())
    if lo < 0 or hi >= cfg.vocab_size:
        raise AnalysisError(
            f"puzzle input tokens run {lo}..{hi}; the model's vocabulary is 0..{cfg.vocab_size - 1}"
        )
    if p.labels is not None:
        scored = p.labels[p.labels != IGNORE]
        if scored.size and (scored.min() < 0 or scored.max() >= cfg.vocab_size):
            raise AnalysisError(
                f"puzzle labels run {int(scored.min())}..{int(scored.max())}; the model's vocabulary is "
                f"0..{cfg.vocab_size - 1} (-100 marks a cell that is not scored)"
            )
    if cfg.puzzle_emb_dim > 0:
        ids = p.puzzle_identifiers
        if ids.min() < 0 or ids.max() >= cfg.num_puzzle_identifiers:
            raise AnalysisError(
                f"puzzle identifiers run {int(ids.min())}..{int(ids.max())}; the model embeds "
                f"0..{cfg.num_puzzle_identifiers - 1}"
            )


# ---- watching and editing the recurrence -----------------------------------------------------------------

Edit = Callable[[int, str, int, int, torch.Tensor], torch.Tensor | None]
"""``edit(step, kind, h, l, state)`` after each update; a returned tensor replaces the state."""


def state_updates(model: Any) -> list[Update]:
    """The state updates of one ACT step in the order the model makes them (from :func:`hook_names`)."""
    from arcscope.reasoning.capture import hook_names

    out: list[Update] = []
    for name in hook_names(model):
        parts = name.split(".")
        out.append(("z_H", int(parts[1]), -1) if parts[0] == "z_H" else ("z_L", int(parts[1]), int(parts[2])))
    return out


def update_name(u: Update) -> str:
    """The hook name of an update (``z_H.1``, ``z_L.0.2``)."""
    kind, h, l = u  # noqa: E741
    return f"z_H.{h}" if kind == "z_H" else f"z_L.{h}.{l}"


def _model_label(model: Any, name: str | None) -> str:
    cfg = model.config
    base = (
        f"{cfg.name.upper()} (hidden {cfg.hidden_size}, {cfg.H_cycles} H x {cfg.L_cycles} L cycles, "
        f"{cfg.halt_max_steps} steps)"
    )
    return f"{name}: {base}" if name else base


def _device(model: Any, device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


class _Watch:
    """Forward hooks on the state modules: each call is one update, labelled in schedule order."""

    def __init__(self, model: Any, edit: Edit | None):
        self.schedule = state_updates(model)
        self.edit = edit
        self.step = 0
        self.i = 0
        self.current: Update | None = None
        self.last: torch.Tensor | None = None
        inner = model.inner
        self.modules = [inner.L_level] + ([inner.H_level] if hasattr(inner, "H_level") else [])

    def pre(self, module: Any, args: Any) -> None:
        if self.i >= len(self.schedule):
            raise AnalysisError(
                f"the model made more than the {len(self.schedule)} state updates per ACT step that its "
                "config lists; this analysis does not know its recurrence"
            )
        self.current = self.schedule[self.i]
        self.i += 1

    def post(self, module: Any, args: Any, out: torch.Tensor) -> torch.Tensor | None:
        assert self.current is not None
        new = self.edit(self.step, *self.current, out) if self.edit is not None else None
        self.last = out if new is None else new
        return new

    def recorder(self, kind: str, h: int, l: int, state: torch.Tensor) -> None:  # noqa: E741
        # The model names each update after making it: it must be the one the hooks just saw.
        if (kind, h, l) != self.current or state is not self.last:
            raise AnalysisError(
                f"the model reported update {update_name((kind, h, l))} where the analysis expected "
                f"{update_name(self.current) if self.current else 'none'}; its recurrence differs from "
                "the order hook_names lists"
            )

    @contextmanager
    def attached(self) -> Iterator[_Watch]:
        handles = [m.register_forward_pre_hook(self.pre) for m in self.modules]
        handles += [m.register_forward_hook(self.post) for m in self.modules]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


@contextmanager
def _eval(model: Any) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def run_act(
    model: Any,
    batch: dict[str, torch.Tensor],
    steps: int | None = None,
    edit: Edit | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Run ``steps`` ACT steps (default ``halt_max_steps``) in eval mode, calling ``edit(step, kind, h, l,
    state)`` after every state update (a returned tensor replaces the state); the outputs of every step."""
    return _run(model, batch, _steps(model, steps), _Watch(model, edit))


def _run(model: Any, batch: dict[str, torch.Tensor], n: int, watch: _Watch) -> list[dict[str, torch.Tensor]]:
    outs = []
    with _eval(model), torch.inference_mode(), watch.attached():
        carry = model.initial_carry(batch)
        for s in range(1, n + 1):
            watch.step, watch.i, watch.current = s, 0, None
            carry, out = model(carry, batch, watch.recorder)
            if watch.i != len(watch.schedule):
                raise AnalysisError(
                    f"ACT step {s} made {watch.i} state updates; the config lists {len(watch.schedule)}"
                )
            outs.append(out)
    return outs


def _steps(model: Any, steps: int | None) -> int:
    mx = int(model.config.halt_max_steps)
    if steps is None:
        return mx
    if not 1 <= int(steps) <= mx:
        raise AnalysisError(f"steps must be 1..{mx} (the model's halt_max_steps), got {steps}")
    return int(steps)


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _nan_list(a: np.ndarray) -> Any:
    """Nested lists with NaN and inf as None (JSON-safe)."""
    a = np.asarray(a, dtype=np.float64)
    obj = a.astype(object)
    obj[~np.isfinite(a)] = None
    return obj.tolist()


# ---- 1. at which reasoning step is this cell decided -----------------------------------------------------


@dataclass
class DecidedResult:
    """Per puzzle and cell: the prediction after every update and step, and when it became right for good."""

    model: str
    names: list[str]
    shape: tuple[int, int]
    steps: int
    cycles: int
    """H cycles per step: predictions per step at the finer scale."""
    reference: str
    """``labels`` (the answer) or ``final`` (the model's own last prediction, when no answer is known)."""
    inputs: np.ndarray
    """int64 ``[B, h, w]`` input tokens."""
    target: np.ndarray
    """int64 ``[B, h, w]`` reference token (-100 where not scored)."""
    preds: np.ndarray
    """int64 ``[B, steps, h, w]`` prediction after each ACT step."""
    cycle_preds: np.ndarray
    """int64 ``[B, steps * cycles, h, w]`` prediction of the output head on z_H after each H cycle."""
    cycle_logprob: np.ndarray
    """float32 ``[B, steps * cycles, h, w]`` log-probability of the reference token there (NaN if unscored)."""
    decided: np.ndarray
    """int64 ``[B, h, w]`` first ACT step (1-based) from which the cell is right and stays right; -1 never,
    -2 not scored."""
    decided_update: np.ndarray
    """int64 ``[B, h, w]`` the same on the cycle scale: an index into :attr:`cycle_labels` (-1, -2 alike)."""
    accuracy: np.ndarray
    """float64 ``[B, steps]`` share of scored cells right after each step."""
    cycle_accuracy: np.ndarray
    """float64 ``[B, steps * cycles]``."""
    q_halt: np.ndarray
    """float32 ``[B, steps]`` halting logit after each step."""
    halt_step: np.ndarray
    """int64 ``[B]`` first step whose Q head says halt (``steps`` when it never does)."""

    @property
    def cycle_labels(self) -> list[tuple[int, int]]:
        """(ACT step, H cycle) of each entry on the cycle scale."""
        return [(s + 1, c) for s in range(self.steps) for c in range(self.cycles)]

    @property
    def scored(self) -> np.ndarray:
        """bool ``[B, h, w]`` cells with a reference token."""
        return self.target != IGNORE

    @property
    def solved(self) -> np.ndarray:
        """bool ``[B, steps]`` every scored cell right after the step."""
        ok = (self.preds == self.target[:, None]) | ~self.scored[:, None]
        return ok.all(axis=(2, 3))

    @property
    def mean_accuracy(self) -> np.ndarray:
        """float64 ``[steps]`` accuracy averaged over puzzles."""
        return self.accuracy.mean(0)

    def decided_counts(self) -> np.ndarray:
        """int64 ``[steps + 1]``: scored cells decided at step 1..steps (entries 0..steps-1) and never (last)."""
        d = self.decided[self.scored]
        counts = np.bincount(np.where(d < 0, self.steps + 1, d), minlength=self.steps + 2)
        return np.concatenate([counts[1 : self.steps + 1], counts[self.steps + 1 :]])

    def to_table(self) -> pa.Table:
        """One row per (puzzle, cell): the cell, its input and reference tokens, final prediction and the
        step / (step, cycle) it is decided at."""
        b, h, w = self.decided.shape
        pz, r, c = np.meshgrid(np.arange(b), np.arange(h), np.arange(w), indexing="ij")
        labels = self.cycle_labels
        du = self.decided_update.reshape(-1)
        return pa.table(
            {
                "puzzle": pa.array(pz.reshape(-1), pa.int32()),
                "name": pa.array([self.names[i] for i in pz.reshape(-1)], pa.string()),
                "row": pa.array(r.reshape(-1), pa.int32()),
                "col": pa.array(c.reshape(-1), pa.int32()),
                "position": pa.array((r * w + c).reshape(-1), pa.int32()),
                "input": pa.array(self.inputs.reshape(-1), pa.int32()),
                "target": pa.array(self.target.reshape(-1), pa.int32()),
                "final_pred": pa.array(self.preds[:, -1].reshape(-1), pa.int32()),
                "decided_step": pa.array(self.decided.reshape(-1), pa.int32()),
                "decided_update_step": pa.array(
                    [labels[u][0] if u >= 0 else u for u in du.tolist()], pa.int32()
                ),
                "decided_update_cycle": pa.array(
                    [labels[u][1] if u >= 0 else u for u in du.tolist()], pa.int32()
                ),
            }
        )

    def curve_table(self) -> pa.Table:
        """One row per (puzzle, step, cycle): accuracy of the head on z_H there (``final`` marks each step's
        output, read after its last cycle)."""
        labels = self.cycle_labels
        b = len(self.names)
        u = len(labels)
        return pa.table(
            {
                "puzzle": pa.array(np.repeat(np.arange(b), u), pa.int32()),
                "name": pa.array([n for n in self.names for _ in range(u)], pa.string()),
                "step": pa.array([s for _ in range(b) for s, _ in labels], pa.int32()),
                "cycle": pa.array([c for _ in range(b) for _, c in labels], pa.int32()),
                "final": pa.array([c == self.cycles - 1 for _ in range(b) for _, c in labels], pa.bool_()),
                "accuracy": pa.array(self.cycle_accuracy.reshape(-1), pa.float64()),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-safe values (grids as nested lists)."""
        return {
            "analysis": "decided_step",
            "model": self.model,
            "names": list(self.names),
            "shape": list(self.shape),
            "steps": self.steps,
            "cycles": self.cycles,
            "reference": self.reference,
            "inputs": self.inputs.tolist(),
            "target": self.target.tolist(),
            "preds": self.preds.tolist(),
            "decided": self.decided.tolist(),
            "decided_update": self.decided_update.tolist(),
            "cycle_labels": [list(x) for x in self.cycle_labels],
            "accuracy": _nan_list(self.accuracy),
            "cycle_accuracy": _nan_list(self.cycle_accuracy),
            "mean_accuracy": _nan_list(self.mean_accuracy),
            "solved": self.solved.tolist(),
            "decided_counts": self.decided_counts().tolist(),
            "q_halt": _nan_list(self.q_halt),
            "halt_step": self.halt_step.tolist(),
        }


def _first_for_good(correct: np.ndarray) -> np.ndarray:
    """Index along axis 1 from which ``correct`` stays True to the end (-1 when the last entry is False)."""
    stays = np.flip(np.logical_and.accumulate(np.flip(correct, 1), axis=1), 1)
    first = stays.argmax(1)
    return np.where(stays.any(1), first, NEVER)


def decided_step(
    model: Any,
    batch: Any,
    *,
    steps: int | None = None,
    reference: str = "auto",
    device: torch.device | str | None = None,
    model_name: str | None = None,
    **puzzle_options: Any,
) -> DecidedResult:
    """Run the ACT loop on ``batch`` (anything :func:`as_puzzles` takes; ``puzzle_options`` go to it), decode
    every cell after every H cycle of every step, and find per cell the first step (and cycle) from which
    the prediction is right and stays right. ``reference``: ``labels`` (the answer), ``final`` (the model's
    own last prediction), or ``auto`` (labels when the puzzles have them)."""
    puzzles = as_puzzles(model, batch, **puzzle_options)
    if reference not in ("auto", "labels", "final"):
        raise AnalysisError(f"reference must be auto, labels or final, got {reference!r}")
    if reference == "auto":
        reference = "labels" if puzzles.labels is not None and (puzzles.labels != IGNORE).any() else "final"
    if reference == "labels" and (puzzles.labels is None or not (puzzles.labels != IGNORE).any()):
        raise AnalysisError(
            f"puzzles {puzzles.names[:3]}: no answer tokens to compare with; give labels or use reference='final'"
        )
    n = _steps(model, steps)
    cfg = model.config
    dev = _device(model, device)
    heads = model.inner.heads
    cyc_logits: list[torch.Tensor] = []

    def edit(step: int, kind: str, h: int, l: int, state: torch.Tensor) -> None:  # noqa: E741
        if kind == "z_H":
            cyc_logits.append(heads(state)[0].float().log_softmax(-1).cpu())

    outs = run_act(model, puzzles.tensors(dev), n, edit)
    lp = torch.stack(cyc_logits, 1)  # [B, U, seq, V]
    cyc_pred = lp.argmax(-1).numpy().astype(np.int64)
    step_pred = torch.stack([o["logits"].argmax(-1).cpu() for o in outs], 1).numpy().astype(np.int64)
    if reference == "labels":
        assert puzzles.labels is not None
        target = puzzles.labels.copy()
    else:
        target = step_pred[:, -1].copy()
    scored = target != IGNORE
    tgt = torch.as_tensor(np.where(scored, target, 0))
    cyc_lp = lp.gather(-1, tgt[:, None, :, None].expand(-1, lp.shape[1], -1, 1)).squeeze(-1).numpy()
    cyc_lp = np.where(scored[:, None], cyc_lp, np.nan).astype(np.float32)
    right_s = (step_pred == target[:, None]) & scored[:, None]
    right_u = (cyc_pred == target[:, None]) & scored[:, None]
    d_step = _first_for_good(right_s)
    d_step = np.where(d_step >= 0, d_step + 1, NEVER)
    d_step = np.where(scored, d_step, NOT_SCORED)
    d_upd = np.where(scored, _first_for_good(right_u), NOT_SCORED)
    denom = np.maximum(scored.sum(-1), 1)[:, None]
    acc_s = np.where(scored.any(-1)[:, None], right_s.sum(-1) / denom, np.nan)
    acc_u = np.where(scored.any(-1)[:, None], right_u.sum(-1) / denom, np.nan)
    q_halt = torch.stack([o["q_halt_logits"].float().cpu() for o in outs], 1)
    q_cont = torch.stack([o["q_continue_logits"].float().cpu() for o in outs], 1)
    fire = model.halt_signal(q_halt, q_cont).numpy()
    fire[:, -1] = True
    g = puzzles.grid
    return DecidedResult(
        model=_model_label(model, model_name),
        names=list(puzzles.names),
        shape=puzzles.shape,
        steps=n,
        cycles=int(cfg.H_cycles),
        reference=reference,
        inputs=g(puzzles.inputs),
        target=g(np.where(scored, target, IGNORE)),
        preds=g(step_pred),
        cycle_preds=g(cyc_pred),
        cycle_logprob=g(cyc_lp),
        decided=g(d_step),
        decided_update=g(d_upd),
        accuracy=acc_s,
        cycle_accuracy=acc_u,
        q_halt=q_halt.numpy(),
        halt_step=fire.argmax(1).astype(np.int64) + 1,
    )


# ---- 2. patching z_H / z_L ---------------------------------------------------------------------------------


def _site(model: Any, state: str, cycle: int | None, inner: int | None) -> Update:
    cfg = model.config
    parts = state.split(".")
    kind = parts[0]
    if kind not in ("z_H", "z_L") or len(parts) > (2 if kind == "z_H" else 3):
        raise AnalysisError(
            f"state must be z_H or z_L (or a hook name such as z_H.0, z_L.1.2), got {state!r}"
        )
    try:
        if len(parts) > 1:
            cycle = int(parts[1])
        if len(parts) > 2:
            inner = int(parts[2])
    except ValueError:
        raise AnalysisError(f"state {state!r}: cycle and L step must be integers (z_H.0, z_L.1.2)") from None
    h = cfg.H_cycles - 1 if cycle is None else int(cycle)
    if not 0 <= h < cfg.H_cycles:
        raise AnalysisError(f"cycle must be 0..{cfg.H_cycles - 1} (H_cycles={cfg.H_cycles}), got {cycle}")
    if kind == "z_H":
        return ("z_H", h, -1)
    l = cfg.L_cycles - 1 if inner is None else int(inner)  # noqa: E741
    if not 0 <= l < cfg.L_cycles:
        raise AnalysisError(
            f"inner L step must be 0..{cfg.L_cycles - 1} (L_cycles={cfg.L_cycles}), got {inner}"
        )
    return ("z_L", h, l)


@dataclass
class PatchResult:
    """Clean state patched into a corrupted run, one group of cells at a time, and the answer's response."""

    model: str
    clean: str
    corrupt: str
    site: str
    """The patched update (``z_H.1``, ``z_L.0.2``)."""
    step: int
    """The ACT step it was patched at (1-based)."""
    metric: str
    """What :attr:`values` measure, in words."""
    at_step: int
    """The ACT step whose output the metric reads."""
    shape: tuple[int, int]
    groups: list[list[tuple[int, int]]]
    """Cells patched together in each run; ``all`` runs patch the puzzle-embedding positions too."""
    group_labels: list[str]
    out_rows: np.ndarray
    """int64 ``[K]`` measured output cells."""
    out_cols: np.ndarray
    values: np.ndarray
    """float64 ``[G]`` metric of each patched run at ``at_step``."""
    per_cell: np.ndarray
    """float64 ``[G, K]`` log-prob of the clean token per measured cell."""
    by_step: np.ndarray
    """float64 ``[G, steps]`` metric after every step."""
    preds: np.ndarray
    """int64 ``[G, h, w]`` patched run's prediction at ``at_step``."""
    clean_value: float
    corrupt_value: float
    clean_by_step: np.ndarray
    """float64 ``[steps]``."""
    corrupt_by_step: np.ndarray
    clean_preds: np.ndarray
    """int64 ``[h, w]`` the clean run's prediction at ``at_step``."""
    corrupt_preds: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def effect(self) -> np.ndarray:
        """float64 ``[G]`` patched minus corrupted metric."""
        return self.values - self.corrupt_value

    @property
    def recovered(self) -> np.ndarray:
        """float64 ``[G]`` effect as a share of (clean - corrupted); NaN when they are equal."""
        gap = self.clean_value - self.corrupt_value
        return self.effect / gap if abs(gap) > 1e-12 else np.full_like(self.values, np.nan)

    def grid(self, values: np.ndarray | None = None) -> np.ndarray:
        """float64 ``[h, w]`` a per-group value (default :attr:`effect`) at each single-cell group's cell, NaN
        elsewhere: the heat map of a cell sweep."""
        v = self.effect if values is None else np.asarray(values, dtype=np.float64)
        out = np.full(self.shape, np.nan)
        for g, cells in enumerate(self.groups):
            if len(cells) == 1 and self.group_labels[g] != "all":
                out[cells[0]] = v[g]
        return out

    def to_table(self) -> pa.Table:
        """One row per patched group: its cell (-1 for groups of more than one), size, metric, effect, share."""
        single = [len(c) == 1 and lab != "all" for c, lab in zip(self.groups, self.group_labels, strict=True)]
        g = len(self.groups)
        return pa.table(
            {
                "group": pa.array(np.arange(g), pa.int32()),
                "label": pa.array(self.group_labels, pa.string()),
                "row": pa.array(
                    [c[0][0] if s else -1 for c, s in zip(self.groups, single, strict=True)], pa.int32()
                ),
                "col": pa.array(
                    [c[0][1] if s else -1 for c, s in zip(self.groups, single, strict=True)], pa.int32()
                ),
                "n_cells": pa.array([len(c) for c in self.groups], pa.int32()),
                "site": pa.array([self.site] * g, pa.string()),
                "step": pa.array([self.step] * g, pa.int32()),
                "at_step": pa.array([self.at_step] * g, pa.int32()),
                "value": pa.array(self.values, pa.float64()),
                "effect": pa.array(self.effect, pa.float64()),
                "recovered": pa.array(self.recovered, pa.float64()),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-safe values."""
        return {
            "analysis": "patch_states",
            "model": self.model,
            "clean": self.clean,
            "corrupt": self.corrupt,
            "site": self.site,
            "step": self.step,
            "metric": self.metric,
            "at_step": self.at_step,
            "shape": list(self.shape),
            "groups": [[list(c) for c in g] for g in self.groups],
            "group_labels": list(self.group_labels),
            "out_cells": [[int(r), int(c)] for r, c in zip(self.out_rows, self.out_cols, strict=True)],
            "values": _nan_list(self.values),
            "effect": _nan_list(self.effect),
            "recovered": _nan_list(self.recovered),
            "effect_grid": _nan_list(self.grid()),
            "by_step": _nan_list(self.by_step),
            "clean_value": _num(self.clean_value),
            "corrupt_value": _num(self.corrupt_value),
            "clean_by_step": _nan_list(self.clean_by_step),
            "corrupt_by_step": _nan_list(self.corrupt_by_step),
            "clean_preds": self.clean_preds.tolist(),
            "corrupt_preds": self.corrupt_preds.tolist(),
            "settings": dict(self.settings),
        }


def _groups(cells: Any, shape: tuple[int, int]) -> tuple[list[list[tuple[int, int]]], list[str]]:
    h, w = shape
    every = [(r, c) for r in range(h) for c in range(w)]
    if isinstance(cells, str):
        if cells == "each":
            return [[rc] for rc in every], [f"({r}, {c})" for r, c in every]
        if cells == "all":
            return [every], ["all"]
        raise AnalysisError(
            f"cells must be 'each', 'all', a list of (row, col) or a list of groups, got {cells!r}"
        )
    items = list(cells)
    if items and all(
        isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], tuple | list) for x in items
    ):
        gs = [[_cell(x, shape, "patched cell")] for x in items]
    else:
        gs = [[_cell(x, shape, "patched cell") for x in g] for g in items]
    if not gs:
        raise AnalysisError("no cells to patch: give 'each', 'all' or a non-empty list")
    labels = [", ".join(f"({r}, {c})" for r, c in g) or "none" for g in gs]
    return gs, labels


def patch_states(
    model: Any,
    clean: Any,
    corrupt: Any,
    *,
    state: str = "z_H",
    step: int = 1,
    cycle: int | None = None,
    inner: int | None = None,
    cells: Any = "each",
    metric_cells: Any = None,
    at_step: int | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    model_name: str | None = None,
    progress: ProgressFn | None = None,
) -> PatchResult:
    """Patch the clean puzzle's ``state`` (``z_H`` / ``z_L``, or a hook name ``z_L.1.0``) at ACT ``step``
    (1-based) and H ``cycle`` (default the last; ``inner``: the L step for z_L, default the last) into the
    corrupted run, for each group of ``cells`` (``each``: cell by cell; ``all``: every position at once;
    a list of (row, col) cells one by one; or a list of cell groups), ``batch_size`` groups per forward.
    Metric: mean log-prob of the clean answer token (the clean model's own prediction where the answer is
    unknown) at ``metric_cells`` (None: all scored cells) after ACT step ``at_step`` (default the last)."""
    cfg = model.config
    cl = as_puzzles(model, clean)
    co = as_puzzles(model, corrupt)
    if len(cl) != 1 or len(co) != 1:
        raise AnalysisError(f"patching takes one clean and one corrupted puzzle, got {len(cl)} and {len(co)}")
    if cl.shape != co.shape:
        raise AnalysisError(f"clean grid {cl.shape} and corrupted grid {co.shape} differ in shape")
    n = _steps(model, None)
    if not 1 <= int(step) <= n:
        raise AnalysisError(f"step must be 1..{n} (halt_max_steps), got {step}")
    at = n if at_step is None else int(at_step)
    if not int(step) <= at <= n:
        raise AnalysisError(
            f"at_step must be {step}..{n}: the metric is read at or after the patched step {step}, got {at_step}"
        )
    if batch_size < 1:
        raise AnalysisError(f"batch_size must be >= 1, got {batch_size}")
    site = _site(model, state, cycle, inner)
    groups, glabels = _groups(cells, cl.shape)
    dev = _device(model, device)
    h, w = cl.shape
    prefix = int(model.inner.puzzle_emb_len)
    n_pos = prefix + int(cfg.seq_len)

    # The clean run: its state at the site, and its answer (labels, else its own prediction at at_step).
    kept: dict[str, torch.Tensor] = {}

    def keep(s: int, kind: str, hh: int, l: int, z: torch.Tensor) -> None:  # noqa: E741
        if s == step and (kind, hh, l) == site:
            kept["state"] = z.clone()

    clean_outs = run_act(model, cl.tensors(dev), n, keep)
    clean_pred_at = clean_outs[at - 1]["logits"].argmax(-1)[0].cpu().numpy().astype(np.int64)
    if cl.labels is not None and (cl.labels[0] != IGNORE).any():
        target = cl.labels[0].copy()
        what = "answer"
    else:
        target = clean_pred_at.copy()
        what = f"clean model's step-{at} prediction"
    scored = target != IGNORE
    if metric_cells is None:
        out_idx = np.flatnonzero(scored)
    else:
        mc = [metric_cells] if isinstance(metric_cells, tuple) else list(metric_cells)
        out_idx = []
        for x in mc:
            r, c = _cell(x, cl.shape, "metric cell")
            if not scored[r * w + c]:
                raise AnalysisError(f"metric cell ({r}, {c}) of puzzle {cl.names[0]} has no answer token")
            out_idx.append(r * w + c)
        out_idx = np.asarray(out_idx, dtype=np.int64)
    if not len(out_idx):
        raise AnalysisError(f"puzzle {cl.names[0]}: no scored output cell to measure")
    tgt = torch.as_tensor(target[out_idx], device=dev)
    pos_t = torch.as_tensor(out_idx, device=dev)

    def measure(outs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        # [B, steps, K] log-prob of the clean token at the measured cells after every step.
        lps = []
        for o in outs:
            lp = o["logits"][:, pos_t].float().log_softmax(-1)
            lps.append(lp.gather(-1, tgt[None, :, None].expand(lp.shape[0], -1, 1)).squeeze(-1))
        return torch.stack(lps, 1).cpu()

    clean_m = measure(clean_outs)[0]
    corrupt_outs = run_act(model, co.tensors(dev), n)
    corrupt_m = measure(corrupt_outs)[0]
    corrupt_pred_at = corrupt_outs[at - 1]["logits"].argmax(-1)[0].cpu().numpy().astype(np.int64)
    clean_state = kept["state"]

    masks = torch.zeros(len(groups), n_pos, dtype=torch.bool)
    for g, (cells_g, lab) in enumerate(zip(groups, glabels, strict=True)):
        if lab == "all":
            masks[g] = True
        for r, c in cells_g:
            masks[g, prefix + r * w + c] = True

    per_step, preds = [], []
    emit(progress, "groups", 0, len(groups))
    for lo in range(0, len(groups), batch_size):
        m = masks[lo : lo + batch_size].to(dev)
        b = m.shape[0]

        def patch(s: int, kind: str, hh: int, l: int, z: torch.Tensor, m=m) -> torch.Tensor | None:  # noqa: E741
            if s != step or (kind, hh, l) != site:
                return None
            return torch.where(m[:, :, None], clean_state.to(z.dtype).expand_as(z), z)

        outs = run_act(model, co.tensors(dev, rows=b), n, patch)
        per_step.append(measure(outs))
        preds.append(outs[at - 1]["logits"].argmax(-1).cpu())
        emit(progress, "groups", min(lo + b, len(groups)), len(groups))
    ps = torch.cat(per_step).double().numpy()  # [G, steps, K]
    g = cl.grid
    return PatchResult(
        model=_model_label(model, model_name),
        clean=cl.names[0],
        corrupt=co.names[0],
        site=update_name(site),
        step=int(step),
        metric=f"log-prob of the {what} token, mean over {len(out_idx)} cell(s), after step {at}",
        at_step=at,
        shape=cl.shape,
        groups=groups,
        group_labels=glabels,
        out_rows=out_idx // w,
        out_cols=out_idx % w,
        values=ps[:, at - 1].mean(-1),
        per_cell=ps[:, at - 1],
        by_step=ps.mean(-1),
        preds=g(torch.cat(preds).numpy().astype(np.int64)),
        clean_value=float(clean_m[at - 1].double().mean()),
        corrupt_value=float(corrupt_m[at - 1].double().mean()),
        clean_by_step=clean_m.double().mean(-1).numpy(),
        corrupt_by_step=corrupt_m.double().mean(-1).numpy(),
        clean_preds=g(clean_pred_at),
        corrupt_preds=g(corrupt_pred_at),
        settings={"state": update_name(site), "step": int(step), "batch_size": batch_size, "reference": what},
    )


# ---- 3. attention on the grid ------------------------------------------------------------------------------


@dataclass
class AttentionResult:
    """Attention of one layer, per head, from query cells to every position, at each update it runs in."""

    model: str
    names: list[str]
    shape: tuple[int, int]
    prefix: int
    """Puzzle-embedding positions before the cells (keys 0..prefix-1)."""
    module: str
    """``H`` or ``L``: the state module the layer belongs to."""
    layer: int
    heads: list[int]
    calls: list[tuple[int, str]]
    """(ACT step, update name) of each captured call."""
    query_rows: np.ndarray
    """int64 ``[Q]`` query cells."""
    query_cols: np.ndarray
    pattern: np.ndarray
    """float32 ``[B, calls, heads, Q, prefix + h*w]`` softmax weights over keys."""

    def cell_weights(self) -> np.ndarray:
        """float32 ``[B, calls, heads, Q, h, w]`` the weights on the grid's cells."""
        return self.pattern[..., self.prefix :].reshape(*self.pattern.shape[:-1], *self.shape)

    def prefix_weights(self) -> np.ndarray:
        """float32 ``[B, calls, heads, Q, prefix]`` the weights on the puzzle-embedding positions."""
        return self.pattern[..., : self.prefix]

    def heatmap(
        self, query: tuple[int, int], *, puzzle: int = 0, call: int | None = None, head: int | None = None
    ) -> np.ndarray:
        """float64 ``[h, w]`` where ``query`` attends: one call and head, or the mean over calls / heads
        (None)."""
        hit = np.flatnonzero((self.query_rows == query[0]) & (self.query_cols == query[1]))
        if not len(hit):
            raise AnalysisError(f"cell {tuple(query)} is not among the captured query cells")
        x = self.cell_weights()[puzzle][:, :, int(hit[0])].astype(np.float64)  # [calls, heads, h, w]
        x = x.mean(0) if call is None else x[call]
        if head is None:
            return x.mean(0)
        if head not in self.heads:
            raise AnalysisError(f"head {head} was not captured (heads {self.heads})")
        return x[self.heads.index(head)]

    def to_table(self) -> pa.Table:
        """One row per (puzzle, call, head, query cell, key position): step, update, key cell (-1 for the
        puzzle-embedding positions) and weight."""
        b, nc, nh, nq, nk = self.pattern.shape
        pz, ci, hi, qi, ki = (a.reshape(-1) for a in np.indices((b, nc, nh, nq, nk)))
        key_cell = ki - self.prefix
        w = self.shape[1]
        return pa.table(
            {
                "puzzle": pa.array(pz, pa.int32()),
                "step": pa.array(np.array([c[0] for c in self.calls])[ci], pa.int32()),
                "update": pa.array(np.array([c[1] for c in self.calls], dtype=object)[ci], pa.string()),
                "module": pa.array([self.module] * len(pz), pa.string()),
                "layer": pa.array(np.full(len(pz), self.layer), pa.int32()),
                "head": pa.array(np.asarray(self.heads)[hi], pa.int32()),
                "query_row": pa.array(self.query_rows[qi], pa.int32()),
                "query_col": pa.array(self.query_cols[qi], pa.int32()),
                "key_position": pa.array(ki, pa.int32()),
                "key_row": pa.array(np.where(key_cell >= 0, key_cell // w, -1), pa.int32()),
                "key_col": pa.array(np.where(key_cell >= 0, key_cell % w, -1), pa.int32()),
                "value": pa.array(self.pattern.reshape(-1), pa.float32()),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-safe values (cell weights as nested lists)."""
        return {
            "analysis": "grid_attention",
            "model": self.model,
            "names": list(self.names),
            "shape": list(self.shape),
            "prefix": self.prefix,
            "module": self.module,
            "layer": self.layer,
            "heads": list(self.heads),
            "calls": [[s, u] for s, u in self.calls],
            "query_cells": [[int(r), int(c)] for r, c in zip(self.query_rows, self.query_cols, strict=True)],
            "cell_weights": self.cell_weights().tolist(),
            "prefix_weights": self.prefix_weights().tolist(),
        }


def _attention_module(model: Any, module: str, layer: int) -> Any:
    inner = model.inner
    name = {"H": "H_level", "L": "L_level"}.get(module)
    if name is None:
        raise AnalysisError(f"module must be 'H' or 'L', got {module!r}")
    if not hasattr(inner, name):
        raise AnalysisError(f"a {model.config.name.upper()} has no {name} (TRM has one network, module 'L')")
    layers = getattr(inner, name).layers
    if not 0 <= int(layer) < len(layers):
        raise AnalysisError(
            f"layer must be 0..{len(layers) - 1} ({name} has {len(layers)} blocks), got {layer}"
        )
    block = layers[int(layer)]
    attn = getattr(block, "self_attn", None)
    if attn is None:
        raise AnalysisError(
            f"{name}.layers.{layer} mixes positions with an MLP over the sequence (mlp_t), not attention; "
            "it has no attention weights"
        )
    return attn


def attention_weights(
    attn: Any, qkv: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """float32 ``[B, heads, T, T]`` softmax weights of a reasoning :class:`~arcscope.reasoning.layers.Attention`
    from its fused projection output ``qkv`` ``[B, T, (heads + 2 * kv_heads) * head_dim]``: RoPE as the layer
    applies it, then ``softmax(q k^T / sqrt(head_dim))``, the weights its SDPA call uses."""
    from arcscope.reasoning.layers import apply_rotary_pos_emb

    b, t, _ = qkv.shape
    nh, nkv, hd = attn.num_heads, attn.num_key_value_heads, attn.head_dim
    x = qkv.view(b, t, nh + 2 * nkv, hd)
    q, k = x[:, :, :nh], x[:, :, nh : nh + nkv]
    if cos_sin is not None:
        q, k = apply_rotary_pos_emb(q, k, *cos_sin)
    q, k = q.transpose(1, 2).float(), k.transpose(1, 2).float()
    if nkv != nh:
        k = k.repeat_interleave(nh // nkv, dim=1)
    scores = q @ k.transpose(-1, -2) * hd**-0.5
    if attn.causal:
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool, device=qkv.device).triu(1), -math.inf)
    return scores.softmax(-1)


def grid_attention(
    model: Any,
    batch: Any,
    *,
    module: str = "L",
    layer: int = 0,
    heads: Sequence[int] | None = None,
    steps: Sequence[int] | int | None = None,
    updates: Sequence[str] | str | None = None,
    query: Any = None,
    device: torch.device | str | None = None,
    model_name: str | None = None,
    max_bytes: int = 1 << 30,
    **puzzle_options: Any,
) -> AttentionResult:
    """Attention weights of block ``layer`` of ``module`` (``H`` or ``L``; TRM: ``L``) from the ``query``
    cells (None: every cell; (row, col); or a list) to every position, per head (``heads``, default all),
    at every call of that layer in ACT ``steps`` (default all; 1-based) and ``updates`` (hook names such
    as ``z_H.0``; default all the layer runs in) on the puzzles of ``batch``."""
    puzzles = as_puzzles(model, batch, **puzzle_options)
    cfg = model.config
    attn = _attention_module(model, module, layer)
    n = _steps(model, None)
    all_heads = list(range(attn.num_heads))
    hs = all_heads if heads is None else [int(x) for x in heads]
    bad = [x for x in hs if x not in all_heads]
    if bad or not hs:
        raise AnalysisError(f"heads must be among 0..{attn.num_heads - 1}, got {list(heads or [])}")
    step_set = set(range(1, n + 1)) if steps is None else {int(s) for s in np.atleast_1d(steps)}
    if not step_set or min(step_set) < 1 or max(step_set) > n:
        raise AnalysisError(f"steps must be among 1..{n} (halt_max_steps), got {steps}")
    sched = state_updates(model)
    names = [update_name(u) for u in sched]
    # HRM's H blocks run in z_H updates, its L blocks in z_L updates; TRM's one network runs in both.
    runs_in = [u for u in names if module == "L" and (cfg.name == "trm" or u.startswith("z_L"))]
    runs_in += [u for u in names if module == "H" and u.startswith("z_H")]
    if updates is None:
        upd_set = set(runs_in)
    else:
        upd_set = {updates} if isinstance(updates, str) else set(updates)
        bad_u = sorted(upd_set - set(runs_in))
        if bad_u:
            raise AnalysisError(
                f"module {module} layer {layer} does not run in update(s) {bad_u}; it runs in {runs_in}"
            )
    h, w = puzzles.shape
    if query is None:
        q_cells = [(r, c) for r in range(h) for c in range(w)]
    elif isinstance(query, tuple):
        q_cells = [_cell(query, puzzles.shape, "query cell")]
    else:
        q_cells = [_cell(x, puzzles.shape, "query cell") for x in query]
    prefix = int(model.inner.puzzle_emb_len)
    q_pos = torch.as_tensor([prefix + r * w + c for r, c in q_cells])
    n_keys = prefix + int(cfg.seq_len)
    n_calls = sum(1 for s in step_set for u in upd_set)
    need = len(puzzles) * n_calls * len(hs) * len(q_cells) * n_keys * 4
    if need > max_bytes:
        raise AnalysisError(
            f"the attention weights asked for take {need / 2**20:.0f} MiB (limit {max_bytes / 2**20:.0f} MiB); "
            "choose fewer steps, updates, heads or query cells"
        )
    dev = _device(model, device)
    cos_sin = model.inner.cos_sin()
    watch = _Watch(model, None)
    calls: list[tuple[int, str]] = []
    pats: list[torch.Tensor] = []

    def on_qkv(mod: Any, args: Any, out: torch.Tensor) -> None:
        # The watch knows which step and update this call of the layer belongs to.
        u = update_name(watch.current) if watch.current is not None else None
        if watch.step in step_set and u in upd_set:
            p = attention_weights(attn, out, cos_sin)
            pats.append(p[:, hs][:, :, q_pos.to(p.device)].cpu())
            calls.append((watch.step, u))

    handle = attn.qkv_proj.register_forward_hook(on_qkv)
    try:
        _run(model, puzzles.tensors(dev), n, watch)
    finally:
        handle.remove()
    pattern = torch.stack(pats, 1).numpy().astype(np.float32)
    return AttentionResult(
        model=_model_label(model, model_name),
        names=list(puzzles.names),
        shape=puzzles.shape,
        prefix=prefix,
        module=module,
        layer=int(layer),
        heads=hs,
        calls=calls,
        query_rows=np.array([r for r, _ in q_cells], dtype=np.int64),
        query_cols=np.array([c for _, c in q_cells], dtype=np.int64),
        pattern=pattern,
    )


# ---- 4. probes per step ------------------------------------------------------------------------------------


@dataclass
class StepProbeResult:
    """Linear probe accuracy per (step, cycle) predicting a per-cell label from a recurrent state."""

    model: str
    target: str
    """``answer`` (the cell's answer token), ``input`` (its input token) or ``final`` (the model's last
    prediction)."""
    state: str
    """``z_H`` or ``z_L`` (the last L update of each cycle)."""
    labels: list[tuple[int, int]]
    """(ACT step, H cycle) of each probe."""
    classes: list[int]
    """Token ids (class codes)."""
    accuracy: np.ndarray
    """float64 ``[probes]`` held-out accuracy."""
    train_accuracy: np.ndarray
    readout_accuracy: np.ndarray
    """float64 ``[probes]`` held-out accuracy of the model's own output head on z_H there (the answer target)."""
    baseline: float
    """Held-out accuracy of the training rows' most frequent class."""
    chance: float
    n_train: int
    n_test: int
    n_train_puzzles: int
    n_test_puzzles: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_table(self) -> pa.Table:
        """One row per probe: step, cycle, accuracy, train accuracy, readout accuracy, baseline, chance."""
        k = len(self.labels)
        return pa.table(
            {
                "step": pa.array([s for s, _ in self.labels], pa.int32()),
                "cycle": pa.array([c for _, c in self.labels], pa.int32()),
                "state": pa.array([self.state] * k, pa.string()),
                "target": pa.array([self.target] * k, pa.string()),
                "accuracy": pa.array(self.accuracy, pa.float64()),
                "train_accuracy": pa.array(self.train_accuracy, pa.float64()),
                "readout_accuracy": pa.array(self.readout_accuracy, pa.float64()),
                "baseline": pa.array([self.baseline] * k, pa.float64()),
                "chance": pa.array([self.chance] * k, pa.float64()),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-safe values."""
        return {
            "analysis": "probe_steps",
            "model": self.model,
            "target": self.target,
            "state": self.state,
            "labels": [list(x) for x in self.labels],
            "classes": list(self.classes),
            "accuracy": _nan_list(self.accuracy),
            "train_accuracy": _nan_list(self.train_accuracy),
            "readout_accuracy": _nan_list(self.readout_accuracy),
            "baseline": _num(self.baseline),
            "chance": _num(self.chance),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_train_puzzles": self.n_train_puzzles,
            "n_test_puzzles": self.n_test_puzzles,
            "settings": dict(self.settings),
        }


PROBE_TARGETS = ("answer", "input", "final")
"""What a step probe predicts per cell."""


def probe_steps(
    model: Any,
    data: Any,
    *,
    target: str = "answer",
    state: str = "z_H",
    cycles: str = "last",
    max_examples: int | None = 512,
    batch_size: int = 64,
    test_fraction: float = 0.25,
    l2: float = 1e-3,
    max_iter: int = 200,
    seed: int = 0,
    device: torch.device | str | None = None,
    model_name: str | None = None,
    progress: ProgressFn | None = None,
    **puzzle_options: Any,
) -> StepProbeResult:
    """Fit a linear probe (:func:`arcscope.analysis.probes.fit_probe`) per ACT step (``cycles='last'``) or
    per H cycle (``'all'``) predicting each cell's ``target`` token from ``state`` at its position, trained
    on some puzzles and scored on held-out ones (``test_fraction``, seeded); ``data`` is anything
    :func:`as_puzzles` takes (at most ``max_examples`` puzzles, run ``batch_size`` at a time)."""
    from arcscope.analysis.probes import fit_probe, group_split

    if target not in PROBE_TARGETS:
        raise AnalysisError(f"probe target must be one of {', '.join(PROBE_TARGETS)}, got {target!r}")
    if state not in ("z_H", "z_L"):
        raise AnalysisError(f"probe state must be z_H or z_L, got {state!r}")
    if cycles not in ("last", "all"):
        raise AnalysisError(f"cycles must be 'last' or 'all', got {cycles!r}")
    puzzles = as_puzzles(model, data, **puzzle_options)
    if max_examples is not None and len(puzzles) > max_examples:
        puzzles = puzzles.take(np.arange(max_examples))
    if len(puzzles) < 2:
        raise AnalysisError(f"a probe held out by puzzle needs two puzzles or more, got {len(puzzles)}")
    if target == "answer" and (puzzles.labels is None or not (puzzles.labels != IGNORE).any()):
        raise AnalysisError("probe target 'answer' needs puzzles with labels; use target='input' or 'final'")
    cfg = model.config
    n = _steps(model, None)
    hc = list(range(cfg.H_cycles)) if cycles == "all" else [cfg.H_cycles - 1]
    want = {(state, h, -1 if state == "z_H" else cfg.L_cycles - 1) for h in hc}
    labels_sc = [(s, h) for s in range(1, n + 1) for h in hc]
    prefix = int(model.inner.puzzle_emb_len)
    dev = _device(model, device)
    heads = model.inner.heads
    feats: dict[tuple[int, int], list[torch.Tensor]] = {k: [] for k in labels_sc}
    reads: dict[tuple[int, int], list[torch.Tensor]] = {k: [] for k in labels_sc}
    finals: list[np.ndarray] = []
    emit(progress, "puzzles", 0, len(puzzles))
    for lo in range(0, len(puzzles), batch_size):
        part = puzzles.take(np.arange(lo, min(lo + batch_size, len(puzzles))))

        def grab(s: int, kind: str, h: int, l: int, z: torch.Tensor) -> None:  # noqa: E741
            if (kind, h, l) in want:
                feats[(s, h)].append(z[:, prefix:].float().cpu())
            if kind == "z_H" and h in hc:
                reads[(s, h)].append(heads(z)[0].argmax(-1).cpu())

        outs = run_act(model, part.tensors(dev), n, grab)
        finals.append(outs[-1]["logits"].argmax(-1).cpu().numpy())
        emit(progress, "puzzles", min(lo + batch_size, len(puzzles)), len(puzzles))
    if target == "answer":
        assert puzzles.labels is not None
        y_all = puzzles.labels
    elif target == "input":
        y_all = puzzles.inputs
    else:
        y_all = np.concatenate(finals).astype(np.int64)
    ok = y_all != IGNORE  # [B, seq]
    pz = np.broadcast_to(np.arange(len(puzzles))[:, None], ok.shape)[ok]
    y = y_all[ok]
    test_rows = group_split(pz, test_fraction, seed)
    answer = puzzles.labels if puzzles.labels is not None else np.full_like(y_all, IGNORE)
    ans = answer[ok]
    n_classes = int(cfg.vocab_size)
    counts = np.bincount(y[~test_rows], minlength=n_classes)
    baseline = float((y[test_rows] == int(counts.argmax())).mean())
    ok_t = torch.as_tensor(ok)
    acc, tr_acc, ro_acc = [], [], []
    for key in labels_sc:
        x = torch.cat(feats[key])[ok_t]
        fit = fit_probe(x, y, test_rows, n_classes, l2=l2, max_iter=max_iter)
        acc.append(fit.test_accuracy)
        tr_acc.append(fit.train_accuracy)
        rd = torch.cat(reads[key]).numpy()[ok]
        has = test_rows & (ans != IGNORE)
        ro_acc.append(float((rd[has] == ans[has]).mean()) if has.any() else math.nan)
    return StepProbeResult(
        model=_model_label(model, model_name),
        target=target,
        state=state,
        labels=labels_sc,
        classes=list(range(n_classes)),
        accuracy=np.asarray(acc),
        train_accuracy=np.asarray(tr_acc),
        readout_accuracy=np.asarray(ro_acc),
        baseline=baseline,
        chance=1.0 / n_classes,
        n_train=int((~test_rows).sum()),
        n_test=int(test_rows.sum()),
        n_train_puzzles=len(np.unique(pz[~test_rows])),
        n_test_puzzles=len(np.unique(pz[test_rows])),
        settings={
            "cycles": cycles,
            "test_fraction": test_fraction,
            "l2": l2,
            "max_iter": max_iter,
            "seed": seed,
            "puzzles": len(puzzles),
        },
    )


__all__ = [
    "IGNORE",
    "NEVER",
    "NOT_SCORED",
    "PROBE_TARGETS",
    "AttentionResult",
    "DecidedResult",
    "PatchResult",
    "Puzzles",
    "StepProbeResult",
    "as_puzzles",
    "attention_weights",
    "decided_step",
    "grid_attention",
    "patch_states",
    "probe_steps",
    "run_act",
    "update_name",
    "state_updates",
    "with_cell",
]
