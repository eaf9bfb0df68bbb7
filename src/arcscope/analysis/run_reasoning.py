"""`arcscope analyze lens | patch | attention | probe` on a recurrent reasoner (HRM, TRM checkpoint).

The commands of :mod:`arcscope.analysis.run` take a task source and a causal LM; given an HRM or TRM
checkpoint (:func:`is_reasoning_model`) they come here instead, with the same config dataclasses, and ask
the same questions of the reasoning steps that the LM commands ask of the layers:

* :func:`reasoning_lens`: at which ACT step (and H cycle) each cell of the answer is decided;
* :func:`reasoning_patch`: which cells of the clean state, patched into a run on a corrupted puzzle at each
  step, bring the clean answer back;
* :func:`reasoning_attention`: which input cells one output cell attends to, step by step;
* :func:`reasoning_probe`: how well a linear probe reads each cell's answer from the state, step by step.

Puzzles come from ``cfg.tasks``, a puzzle dataset folder in the HRM layout (``arcscope puzzles build``);
``cfg.test_index`` picks the example of its test split, or ``cfg.task`` names one (``7``, ``train:7``, or
an identifier name such as an ARC task id, then ``test_index`` picks among that puzzle's examples). A
Sudoku model (vocabulary n + 2 over n * n cells, as the bundled TRM) given no dataset (the default task
source, or any ``name:split`` spec) gets a few seeded Sudoku puzzles built on the fly, so
``arcscope analyze lens --model <bundled TRM>`` runs offline with nothing else.

Positions are drawn as grids in ARC colours: Sudoku digits 1..n as colours 1..n (blank black), ARC tokens as
their colours on the top-left part of the 30x30 canvas that holds the puzzle (so rows and columns are the
model's own), other tokens as their ids. Cells in options, tables and JSON are the model's (row, col).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from arcscope.analysis.config import (
    AttentionConfig,
    LensConfig,
    PatchConfig,
    SubjectConfig,
    parse_cells,
    parse_ints,
)
from arcscope.analysis.subject import AnalysisError
from arcscope.config import Config, make_config
from arcscope.progress import ProgressFn, emit

GENERATED_PUZZLES = 8
"""Sudoku puzzles built on the fly for lens, patch and attention when no dataset is given."""
GENERATED_SEED = 0
"""Seed of those puzzles (patch and probe use their config's seed)."""
SUDOKU_SIDES = (4, 6, 9)
"""Board sides a generated Sudoku may have."""

__all__ = [
    "GENERATED_PUZZLES",
    "ReasoningProbeConfig",
    "ReasoningSource",
    "StepAttentionResult",
    "StepPatchResult",
    "is_reasoning_model",
    "load_reasoner",
    "reasoning_attention",
    "reasoning_lens",
    "reasoning_patch",
    "reasoning_probe",
]


# ---- is it a reasoner? -----------------------------------------------------------------------------------


def _step_files(folder: Path) -> list[Path]:
    return [p for p in folder.glob("step_*") if p.is_file() and p.name.split("_", 1)[1].isdigit()]


def _json_format(path: Path) -> Any:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj.get("format") if isinstance(obj, dict) else None


def is_reasoning_model(path: Any) -> bool:
    """Whether ``path`` is an HRM/TRM checkpoint :func:`arcscope.reasoning.checkpoint.load_model` reads: an
    arcscope folder (``config.json`` of the reasoning format + ``model.safetensors``) or its weights file, or
    an original folder (``all_config.yaml`` + ``step_N``) or step file; or an HRM/TRM model object (a
    ``loaded`` model). Reads only the small config files; False for None, Hub ids, HF model folders, GGUF
    files and loaded LMs."""
    from arcscope.reasoning.act import ACTModel
    from arcscope.reasoning.checkpoint import FORMAT

    if path is None:
        return False
    if isinstance(path, ACTModel) or (isinstance(path, tuple) and path and isinstance(path[0], ACTModel)):
        return True
    if not isinstance(path, str | PathLike):
        return False
    try:
        p = Path(path)
        if not p.exists():
            return False
        folder = p if p.is_dir() else p.parent
        if p.is_file() and p.suffix.lower() == ".gguf":
            return False
        if (folder / "config.json").is_file() and _json_format(folder / "config.json") == FORMAT:
            if p.is_dir():
                return (p / "model.safetensors").is_file() or bool(_step_files(p))
            return p.suffix == ".safetensors" or p.name.startswith("step_")
        if (folder / "all_config.yaml").is_file():
            if p.is_dir():
                return bool(_step_files(p))
            return p.name.startswith("step_") or p.suffix == ".safetensors"
    except OSError:
        return False
    return False


def load_reasoner(
    path: Any, *, device: str = "auto", dtype: str = "float32", seq_len: int | None = None
) -> tuple[Any, str]:
    """The HRM/TRM at ``path`` (None: the bundled TRM) on ``device``, computing in ``dtype`` (``auto``: the
    checkpoint's own), in eval mode; returns (model, its name for reports)."""
    from dataclasses import replace

    from arcscope.models.device import resolve_device, resolve_dtype
    from arcscope.reasoning.checkpoint import load_model

    if path is None:
        from arcscope.reasoning.bundled import bundled_checkpoint

        path = bundled_checkpoint()
    dev = resolve_device(device)
    model, _ = load_model(path, device=dev, seq_len=seq_len)
    if dtype not in (None, "auto") and model.inner.forward_dtype != resolve_dtype(dtype, dev):
        # The compute dtype is fixed when the model is built: rebuild with the asked one (float32: exact).
        model, _ = load_model(path, device=dev, config=replace(model.config, forward_dtype=dtype))
    model.eval()
    p = Path(path)
    name = p.name if p.is_dir() else f"{p.parent.name}/{p.name}"
    return model, name


def _model_of(cfg: Any, loaded: Any, seq_len: int | None = None) -> tuple[Any, str]:
    if loaded is not None:
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if not hasattr(model, "inner") or not hasattr(model, "config"):
            raise AnalysisError(
                f"loaded model is a {type(model).__name__}, not an HRM/TRM (arcscope.reasoning model)"
            )
        name = Path(str(cfg.model)).name if getattr(cfg, "model", None) else model.config.name.upper()
        return model, name
    return load_reasoner(cfg.model, device=cfg.device, dtype=cfg.dtype, seq_len=seq_len)


# ---- how positions look --------------------------------------------------------------------------------


def _sudoku_side(model: Any) -> int | None:
    cfg = model.config
    for n in SUDOKU_SIDES:
        if int(cfg.seq_len) == n * n and int(cfg.vocab_size) == n + 2:
            return n
    return None


@dataclass(frozen=True)
class _View:
    """How a puzzle's tokens are drawn: the kind, the drawn part of the position grid, token <-> colour."""

    kind: str
    """sudoku, arc, maze or tokens."""
    shape: tuple[int, int]
    """Rows and columns drawn (ARC: the top-left part of the canvas holding the puzzle; else all)."""
    vocab: int

    def show(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens ``[..., H, W]`` (-100 allowed) as colours 0..9 ``[..., h, w]``."""
        t = np.asarray(tokens, dtype=np.int64)[..., : self.shape[0], : self.shape[1]]
        if self.kind == "sudoku":
            v = t - 1
        elif self.kind == "arc":
            v = np.where(t >= 2, t - 2, 0)
        else:
            v = t
        return np.clip(v, 0, 9).astype(np.uint8)

    def crop(self, values: np.ndarray) -> np.ndarray:
        """Per-cell values ``[..., H, W]`` on the drawn part."""
        return np.asarray(values)[..., : self.shape[0], : self.shape[1]]

    def token(self, value: int) -> int:
        """The token that draws as ``value`` (a Sudoku digit, an ARC colour, else the token itself)."""
        return int(value) + {"sudoku": 1, "arc": 2}.get(self.kind, 0)

    def choices(self) -> list[int]:
        """Values a corrupted cell may take."""
        if self.kind == "sudoku":
            return list(range(1, self.vocab - 1))
        if self.kind == "arc":
            return list(range(10))
        return list(range(1, self.vocab))

    def given(self, tokens: np.ndarray) -> np.ndarray:
        """bool ``[H, W]`` cells the puzzle gives (a clue, a coloured input cell)."""
        t = np.asarray(tokens)
        return t >= 2 if self.kind in ("sudoku", "arc") else t > 0

    @property
    def note(self) -> str:
        """How the grids are drawn, for the report."""
        return {
            "sudoku": "Sudoku digits 1..n are drawn as ARC colours 1..n, blanks black",
            "arc": "ARC cells in their colours on the part of the 30x30 canvas that holds the puzzle",
            "maze": "maze tokens drawn as colours 0..5 (wall 1, open 2, start 3, goal 4, path 5)",
        }.get(self.kind, "tokens drawn as colours 0..9 (ids above 9 as 9)")


def _view(model: Any, puzzles: Any, kind: str | None) -> _View:
    cfg = model.config
    h, w = puzzles.shape
    if kind not in ("sudoku", "arc", "maze"):
        if int(cfg.vocab_size) == 12 and int(cfg.seq_len) == 900:
            kind = "arc"
        elif _sudoku_side(model) is not None:
            kind = "sudoku"
        else:
            kind = "tokens"
    shape = (h, w)
    if kind == "arc":
        # The top-left part that holds every coloured cell, so drawn rows and columns are the model's own.
        used = (puzzles.grid(puzzles.inputs) >= 2).any(0)
        if puzzles.labels is not None:
            used |= (puzzles.grid(puzzles.labels) >= 2).any(0)
        if used.any():
            rows, cols = np.nonzero(used)
            shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    return _View(str(kind), shape, int(cfg.vocab_size))


# ---- where puzzles come from -----------------------------------------------------------------------------


@dataclass
class ReasoningSource:
    """Where an analysis's puzzles came from."""

    dataset: str | None
    """The dataset folder, or None when the puzzles were generated."""
    split: str
    kind: str | None
    """The dataset's kind (arcscope.json), or sudoku when generated."""
    generated: dict[str, Any] | None = None
    """How generated puzzles were made (side, count, seed), or None."""

    def to_json(self) -> dict[str, Any]:
        """JSON-safe description."""
        return {"dataset": self.dataset, "split": self.split, "kind": self.kind, "generated": self.generated}


def _not_a_dataset(tasks: Any) -> bool:
    # None or a task-source spec ('arc1:evaluation') that names no folder: not a puzzle dataset.
    return tasks is None or (":" in str(tasks) and not Path(str(tasks)).exists())


@contextmanager
def _open_source(
    model: Any, tasks: Any, count: int, seed: int, split: str = "test"
) -> Iterator[tuple[Any, ReasoningSource]]:
    """The puzzle dataset of ``tasks``, or ``count`` generated Sudoku puzzles for a Sudoku model."""
    from arcscope.puzzles.layout import open_dataset

    if not _not_a_dataset(tasks):
        ds = open_dataset(str(tasks))
        yield ds, ReasoningSource(str(tasks), split, ds.kind)
        return
    n = _sudoku_side(model)
    if n is None:
        c = model.config
        raise AnalysisError(
            f"tasks {tasks!r} is not a puzzle dataset folder, and the {c.name.upper()} (vocabulary "
            f"{c.vocab_size}, {c.seq_len} positions) is not a Sudoku model to build puzzles for; give --tasks "
            "DIR, a dataset built with `arcscope puzzles build arc|sudoku|maze DIR` for this model"
        )
    from arcscope.puzzles.sudoku import build_sudoku

    with tempfile.TemporaryDirectory(prefix="arcscope-sudoku-") as tmp:
        build_sudoku(Path(tmp) / "sudoku", n=n, train=0, test=int(count), seed=int(seed))
        ds = open_dataset(Path(tmp) / "sudoku")
        gen = {"puzzle": "sudoku", "n": n, "count": int(count), "seed": int(seed), "replaces_tasks": tasks}
        yield ds, ReasoningSource(None, "test", "sudoku", gen)


def _split_of(ds: Any, split: str) -> str:
    if split in ds.splits:
        return split
    return "test" if "test" in ds.splits else next(iter(ds.splits))


def _example(ds: Any, split: str, task: str | None, test_index: int) -> tuple[str, int]:
    """(split, example) that ``task`` / ``test_index`` name in ``ds``."""
    sp = ds[split]
    if task is None or not str(task).strip():
        return split, int(test_index)
    task = str(task).strip()
    m = re.fullmatch(r"(?:([A-Za-z0-9_-]+)[:/])?(\d+)", task)
    if m:
        return (m.group(1) or split), int(m.group(2))
    names = ds.identifiers or []
    idents = [i for i, n in enumerate(names) if n == task]
    if not idents:
        idents = [i for i, n in enumerate(names) if n.startswith(task)]
    if not idents:
        near = sorted({n.split("_t")[0] for n in names if n[:2] == task[:2]})[:5]
        hint = f" (names starting alike: {', '.join(near)})" if near else ""
        raise AnalysisError(
            f"task {task!r} is neither an example number nor a puzzle name of {ds.path}{hint}; give an "
            "example number (7, train:7) or an identifier name from identifiers.json"
        )
    found: list[int] = []
    start = 0
    for s in sp.sets.values():
        owner = s.puzzle_of_examples()
        ids = np.asarray(s.puzzle_identifiers)[owner]
        found.extend((start + np.flatnonzero(np.isin(ids, idents))).tolist())
        start += s.n_examples
    if not found:
        raise AnalysisError(f"puzzle {task!r} has no example in split {split!r} of {ds.path}")
    if not 0 <= test_index < len(found):
        raise AnalysisError(
            f"puzzle {task!r} has {len(found)} example(s) in split {split!r}; test_index {test_index} is out "
            f"of range 0..{len(found) - 1}"
        )
    return split, int(found[test_index])


def _one_puzzle(
    cfg: SubjectConfig, model: Any, seed: int = GENERATED_SEED
) -> tuple[Any, ReasoningSource, _View]:
    """The one puzzle a lens / patch / attention config names."""
    from arcscope.analysis.reasoning import as_puzzles

    count = max(GENERATED_PUZZLES, int(cfg.test_index) + 1)
    with _open_source(model, cfg.tasks, count, seed) as (ds, src):
        split = _split_of(ds, src.split)
        split, ex = _example(ds, split, cfg.task, int(cfg.test_index))
        src.split = split
        puzzles = as_puzzles(model, ds, examples=[ex], split=split)
    return puzzles, src, _view(model, puzzles, src.kind)


# ---- shared report pieces --------------------------------------------------------------------------------


def _prompt_grids(view: _View, puzzles: Any, pred: np.ndarray | None = None, corrupt: Any = None) -> list:
    """Prompt-like grids for the report's heat blocks: input (segment 0), answer (1), prediction (2)."""
    g = puzzles.grid
    grids: list[dict[str, Any]] = [
        {"segment": 0, "role": "test_input", "pair": 0, "grid": view.show(g(puzzles.inputs[0]))}
    ]
    if corrupt is not None:
        grids[0]["corrupt"] = view.show(g(corrupt.inputs[0]))
    if puzzles.labels is not None:
        grids.append({"segment": 1, "role": "answer", "pair": 0, "grid": view.show(g(puzzles.labels[0]))})
    if pred is not None:
        grids.append({"segment": 2, "role": "generated", "pair": 0, "grid": view.show(pred)})
    for x in grids:
        x["shape"] = tuple(int(s) for s in x["grid"].shape)
    return grids


def _write(
    cfg: Any,
    title: str,
    sections: list[str],
    data: dict[str, Any],
    tables: dict[str, pa.Table],
    *,
    task: str | None,
    model: str,
    metric: str,
) -> dict[str, Any]:
    from arcscope.analysis.report import write_report

    header = {"task": task, "model": model, "metric": metric, "settings": cfg.to_dict()}
    files = write_report(
        cfg.out,
        title,
        sections,
        {**header, **data},
        tables,
        task_id=task,
        model=model,
        metric=metric,
        settings=cfg.to_dict(),
    )
    return {"report": files.html, "json": files.json, **files.tables}


def _cells(spec: str | None, shape: tuple[int, int], what: str) -> list[tuple[int, int]] | None:
    cells = parse_cells(spec)
    if cells is None:
        return None
    h, w = shape
    for r, c in cells:
        if not (0 <= r < h and 0 <= c < w):
            raise AnalysisError(f"{what} ({r}, {c}) is outside the {h}x{w} grid of the puzzle")
    return cells


# ---- lens: at which step is each cell decided ------------------------------------------------------------


def reasoning_lens(
    cfg: LensConfig | dict | None = None,
    *,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    **settings: Any,
):
    """`arcscope analyze lens` on an HRM/TRM: per cell of one puzzle, the ACT step and H cycle from which its
    prediction is right for good, the probability of the answer after every cycle, accuracy curves; returns
    (:class:`~arcscope.analysis.reasoning.DecidedResult`, paths)."""
    from arcscope.analysis import report
    from arcscope.analysis.reasoning import decided_step

    cfg = make_config(LensConfig, cfg, settings)
    model, name = _model_of(cfg, loaded)
    puzzles, src, view = _one_puzzle(cfg, model)
    emit(progress, "lens", 0, 1)
    res = decided_step(model, puzzles, model_name=name)
    emit(progress, "lens", 1, 1)
    n, u = res.steps, len(res.cycle_labels)
    crop = view.crop
    truth = view.show(res.target[0])
    pred = res.preds[0, -1]
    ulabels = [f"{s}.{c}" for s, c in res.cycle_labels]
    scored = res.scored[0]
    n_scored = max(int(scored.sum()), 1)
    counts = res.decided_counts()
    prob = np.exp(res.cycle_logprob[0].astype(np.float64))  # [U, h, w], NaN where not scored
    step_prob = np.array([np.nanmean(prob[(s + 1) * res.cycles - 1]) for s in range(n)])
    ref = "the answer" if res.reference == "labels" else "the model's last prediction"
    sections = [
        report.section(
            f"Puzzle {res.names[0]}",
            report.heat_grids(_prompt_grids(view, puzzles, pred), {}),
            report.answer_compare(
                truth, view.show(pred), title="answer vs prediction after the last step", label="predicted"
            ),
            note=f"{view.note}; the prediction is the output after step {n} (of {n}, halt_max_steps); the "
            f"Q head says halt after step {int(res.halt_step[0])}",
        ),
        report.section(
            "At which reasoning step each cell is decided",
            report.decided_grid(
                crop(res.decided[0]),
                title="ACT step (1-based) from which the cell stays right",
                n_layers=n + 1,
                truth=truth,
            ),
            report.decided_grid(
                # 1-based H cycle counted over all steps (1 = step 1 cycle 0), as the step grid is 1-based.
                crop(np.where(res.decided_update[0] >= 0, res.decided_update[0] + 1, res.decided_update[0])),
                title=f"H cycle (1..{u}, over all steps) from which the output head on z_H stays right",
                n_layers=u + 1,
                truth=truth,
                layer_labels=["-"]
                + [f"{k} (step {s}, cycle {c})" for k, (s, c) in enumerate(res.cycle_labels, 1)],
            ),
            note=f"compared with {ref}; \u00b7 never right at the end",
        ),
        report.section(
            f"Probability of {ref} per cell after every H cycle",
            report.layer_cell_picture(
                crop(prob),
                ulabels,
                truth=truth,
                value_label="P(reference token)",
                scale="sequential",
                vmin=0.0,
                vmax=1.0,
            ),
        ),
        report.section(
            "Accuracy over the reasoning steps",
            report.line_plot(
                list(range(1, n + 1)),
                {
                    "accuracy": res.accuracy[0],
                    "mean P(reference)": step_prob,
                    "cells decided": np.cumsum(counts[:n]) / n_scored,
                },
                x_label="ACT step",
                y_label="share of scored cells",
                title="after each step",
                y_range=(0.0, 1.0),
            ),
            report.line_plot(
                ulabels,
                {"accuracy": res.cycle_accuracy[0], "mean P(reference)": np.nanmean(prob.reshape(u, -1), 1)},
                x_label="ACT step . H cycle",
                y_label="share of scored cells",
                title="after each H cycle (output head on z_H)",
                y_range=(0.0, 1.0),
            ),
            report.table(
                [
                    {
                        "step": s + 1,
                        "accuracy": float(res.accuracy[0, s]),
                        "solved": bool(res.solved[0, s]),
                        "cells decided here": int(counts[s]),
                        "q_halt logit": float(res.q_halt[0, s]),
                    }
                    for s in range(n)
                ],
                title=f"{int(counts[n])} of {int(scored.sum())} scored cells never decided",
            ),
        ),
    ]
    cells = _cells(cfg.cells, puzzles.shape, "cell")
    if cells:
        w = puzzles.shape[1]
        sections.append(
            report.section(
                "Chosen cells",
                report.line_plot(
                    ulabels,
                    {f"({r}, {c})": prob[:, r, c] for r, c in cells},
                    x_label="ACT step . H cycle",
                    y_label="P(reference token)",
                    y_range=(0.0, 1.0),
                ),
                note=", ".join(f"({r}, {c}) = position {r * w + c}" for r, c in cells),
            )
        )
    data = {"decided": res.to_json(), "source": src.to_json(), "drawn_shape": list(view.shape)}
    tables = {"cells": res.to_table(), "curve": res.curve_table()}
    paths = _write(
        cfg,
        f"At which reasoning step is each cell decided, {res.names[0]}",
        sections,
        data,
        tables,
        task=res.names[0],
        model=res.model,
        metric=f"first step from which each cell equals {ref}",
    )
    return res, paths


# ---- patch z_H / z_L at every step -----------------------------------------------------------------------


@dataclass
class StepPatchResult:
    """The clean state patched into the corrupted puzzle's run cell by cell, at every ACT step."""

    model: str
    corruption: str
    """``cell:r,c=v`` as applied (v drawn as the report draws it: Sudoku digit, ARC colour, token)."""
    cell: tuple[int, int]
    """The corrupted input cell."""
    results: list[Any]
    """One :class:`~arcscope.analysis.reasoning.PatchResult` per patched ACT step (1..steps)."""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> list[int]:
        """The patched ACT steps."""
        return [r.step for r in self.results]

    @property
    def effect(self) -> np.ndarray:
        """float64 ``[steps, h, w]`` patched minus corrupted metric, per patched cell and step."""
        return np.stack([r.grid() for r in self.results])

    @property
    def recovered(self) -> np.ndarray:
        """float64 ``[steps, h, w]`` the effect as a share of clean minus corrupted."""
        return np.stack([r.grid(r.recovered) for r in self.results])

    @property
    def all_cells(self) -> np.ndarray:
        """float64 ``[steps]`` metric with every cell patched at once (group 0)."""
        return np.array([r.values[0] for r in self.results])

    def to_table(self) -> pa.Table:
        """The steps' tables stacked: one row per (patched step, group)."""
        return pa.concat_tables([r.to_table() for r in self.results])

    def to_json(self) -> dict[str, Any]:
        """JSON-safe values."""
        from arcscope.analysis.report import json_safe

        return {
            "analysis": "reasoning_patch",
            "model": self.model,
            "corruption": self.corruption,
            "cell": list(self.cell),
            "steps": self.steps,
            "effect": json_safe(self.effect),
            "recovered": json_safe(self.recovered),
            "all_cells": json_safe(self.all_cells),
            "results": [r.to_json() for r in self.results],
            "settings": dict(self.settings),
        }


def _corruption(spec: str, puzzles: Any, view: _View) -> tuple[tuple[int, int], int]:
    """(cell, token) that ``cell[:r,c[=v]]`` names; by default the first given cell, changed to the next
    value it may take."""
    spec = str(spec).strip()
    kind, _, rest = spec.partition(":")
    if kind != "cell":
        raise AnalysisError(
            f"corruption {spec!r}: an HRM/TRM puzzle is corrupted one cell at a time; use cell, cell:ROW,COL "
            "or cell:ROW,COL=VALUE (a Sudoku digit, an ARC colour)"
        )
    h, w = puzzles.shape
    inp = puzzles.grid(puzzles.inputs[0])
    value = None
    if rest:
        m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*(?:=\s*(\d+)\s*)?", rest)
        if m is None:
            raise AnalysisError(f"corruption {spec!r}: expected cell:ROW,COL or cell:ROW,COL=VALUE")
        cell = (int(m.group(1)), int(m.group(2)))
        if not (0 <= cell[0] < h and 0 <= cell[1] < w):
            raise AnalysisError(f"corruption {spec!r}: cell {cell} is outside the {h}x{w} grid")
        value = None if m.group(3) is None else int(m.group(3))
    else:
        given = np.argwhere(view.given(inp))
        if not len(given):
            raise AnalysisError(
                f"puzzle {puzzles.names[0]} gives no cell to corrupt; name one with cell:ROW,COL=VALUE"
            )
        cell = (int(given[0][0]), int(given[0][1]))
    old = int(inp[cell])
    if value is None:
        choices = view.choices()
        shown = [v for v in choices if view.token(v) != old]
        if not shown:
            raise AnalysisError(f"cell {cell} has no other value to take")
        # The next value after the old one, cyclically: a fixed, visible choice.
        after = [v for v in shown if view.token(v) > old]
        value = (after or shown)[0]
    token = view.token(value)
    if not 0 <= token < view.vocab:
        raise AnalysisError(
            f"corruption {spec!r}: value {value} is token {token}, outside the model's vocabulary 0..{view.vocab - 1}"
        )
    return cell, token


def _site_name(site: str) -> str:
    s = str(site).strip()
    return s if s.split(".")[0] in ("z_H", "z_L") else "z_H"


def reasoning_patch(
    cfg: PatchConfig | dict | None = None,
    *,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    **settings: Any,
):
    """`arcscope analyze patch` on an HRM/TRM: one input cell corrupted (``cfg.corruption``), then the clean
    state (``cfg.site`` when it names z_H / z_L, else z_H; the last update of its kind in a step) patched
    into the corrupted run at each cell, and at all cells at once, at every ACT step; the clean answer's
    log-probability at ``cfg.cells`` (all) after the last step. Returns (:class:`StepPatchResult`, paths)."""
    from arcscope.analysis import report
    from arcscope.analysis.reasoning import patch_states, with_cell

    cfg = make_config(PatchConfig, cfg, settings)
    if cfg.heads:
        raise AnalysisError("patch --heads sweeps LM attention heads; an HRM/TRM patch sweeps cells x steps")
    model, name = _model_of(cfg, loaded)
    clean, src, view = _one_puzzle(cfg, model, seed=cfg.seed)
    cell, token = _corruption(cfg.corruption, clean, view)
    bad = with_cell(clean, cell, token)
    old = int(clean.grid(clean.inputs[0])[cell])
    spec = f"cell:{cell[0]},{cell[1]}={int(view.show(np.array([[token]]))[0, 0])}"
    shown_old = int(view.show(np.array([[old]]))[0, 0])
    site = _site_name(cfg.site)
    metric_cells = _cells(cfg.cells, clean.shape, "metric cell")
    h, w = view.shape
    if cfg.positions == "all":
        groups: list[list[tuple[int, int]]] = [[(r, c) for r in range(h) for c in range(w)]]
    else:
        every = [(r, c) for r in range(h) for c in range(w)]
        groups = [every] + [[rc] for rc in every]
    n = int(model.config.halt_max_steps)
    results = []
    emit(progress, "steps", 0, n)
    for s in range(1, n + 1):
        results.append(
            patch_states(
                model,
                clean,
                bad,
                state=site,
                step=s,
                cells=groups,
                metric_cells=metric_cells,
                batch_size=cfg.batch_size,
                model_name=name,
            )
        )
        emit(progress, "steps", s, n)
    res = StepPatchResult(
        model=results[0].model,
        corruption=spec,
        cell=cell,
        results=results,
        settings={
            "site": results[0].site,
            "positions": cfg.positions,
            "batch_size": cfg.batch_size,
            "method": "exact",
            "metric_cells": metric_cells,
            "old_token": old,
            "new_token": token,
        },
    )
    last = results[-1]
    step_labels = [f"step {s}" for s in res.steps]
    grids = _prompt_grids(view, clean, view.crop(last.clean_preds), corrupt=bad)
    marks = {0: [cell]}
    sections = [
        report.section(
            f"Corrupted puzzle: {spec}",
            report.answer_compare(
                view.show(clean.grid(clean.labels[0]))
                if clean.labels is not None
                else view.show(last.clean_preds),
                view.show(last.corrupt_preds),
                title="clean answer vs the corrupted run's prediction",
                label="corrupted run",
            ),
            note=f"{view.note}; cell ({cell[0]}, {cell[1]}): {shown_old} -> {spec.rsplit('=', 1)[1]} (token "
            f"{old} -> {token}); metric: {last.metric}",
        )
    ]
    if cfg.positions != "all":
        sections.append(
            report.section(
                f"Patching {res.settings['site']} cell by cell, per ACT step",
                report.heat_grids(
                    grids,
                    {0: view.crop(res.effect)},
                    value_label="effect on the metric (patched - corrupted)",
                    scale="diverging",
                    marks=marks,
                    layer_labels=step_labels,
                ),
                note="the clean state at one cell replaces the corrupted one at the patched step; the metric "
                f"is read after step {last.at_step}. Slider: the patched step",
            )
        )
    sections.append(
        report.section(
            "Metric by patched step",
            report.line_plot(
                res.steps,
                {
                    "every cell patched": res.all_cells,
                    **(
                        {"best single cell": np.array([np.nanmax(r.values[1:]) for r in results])}
                        if cfg.positions != "all"
                        else {}
                    ),
                },
                x_label="patched ACT step",
                y_label="log-prob of the clean answer",
                hlines={"clean": last.clean_value, "corrupted": last.corrupt_value},
            ),
            report.table(
                [
                    {
                        "patched step": r.step,
                        "every cell": float(r.values[0]),
                        "clean": r.clean_value,
                        "corrupted": r.corrupt_value,
                        **(_best(r) if cfg.positions != "all" else {}),
                    }
                    for r in results
                ]
            ),
        )
    )
    data = {"patch": res.to_json(), "source": src.to_json(), "drawn_shape": list(view.shape)}
    paths = _write(
        cfg,
        f"Patching {res.settings['site']} of {clean.names[0]}",
        sections,
        data,
        {"patch": res.to_table()},
        task=clean.names[0],
        model=res.model,
        metric=last.metric,
    )
    return res, paths


def _best(r: Any) -> dict[str, Any]:
    single = r.values[1:]
    i = int(np.nanargmax(single)) + 1
    return {"best cell": r.group_labels[i], "best cell metric": float(r.values[i])}


# ---- attention -------------------------------------------------------------------------------------------


@dataclass
class StepAttentionResult:
    """Where one output cell attends, per attention layer of the reasoner, gathered per ACT step."""

    model: str
    query: tuple[int, int]
    aggregate: str
    """How calls, heads and layers were combined: mean, max or sum."""
    layers: list[str]
    """``H.0``, ``L.1``: module and block of each result."""
    results: list[Any]
    """One :class:`~arcscope.analysis.reasoning.AttentionResult` per layer."""
    steps: int

    def step_maps(self) -> np.ndarray:
        """float64 ``[1 + steps, h, w]``: all steps combined, then each ACT step (calls x heads x layers)."""
        per: list[list[np.ndarray]] = [[] for _ in range(self.steps + 1)]
        for r in self.results:
            cw = r.cell_weights()[0, :, :, 0].astype(np.float64)  # [calls, heads, h, w]
            for k, (s, _) in enumerate(r.calls):
                per[0].append(cw[k])
                per[s].append(cw[k])
        how = {"mean": np.mean, "max": np.max, "sum": np.sum}[self.aggregate]
        shape = self.results[0].shape
        return np.stack([how(np.concatenate(p), 0) if p else np.full(shape, np.nan) for p in per])

    def focus(self) -> np.ndarray:
        """float64 ``[layers, heads]`` the largest weight on one cell, mean over calls (1: one cell only)."""
        return np.stack(
            [
                r.cell_weights()[0, :, :, 0].reshape(len(r.calls), len(r.heads), -1).max(-1).mean(0)
                for r in self.results
            ]
        ).astype(np.float64)

    def to_table(self) -> pa.Table:
        """The layers' tables stacked: one row per (call, head, key position)."""
        return pa.concat_tables([r.to_table() for r in self.results])

    def to_json(self) -> dict[str, Any]:
        """JSON-safe values."""
        from arcscope.analysis.report import json_safe

        return {
            "analysis": "reasoning_attention",
            "model": self.model,
            "query": list(self.query),
            "aggregate": self.aggregate,
            "layers": list(self.layers),
            "heads": list(self.results[0].heads),
            "step_maps": json_safe(self.step_maps()),
            "focus": json_safe(self.focus()),
            "results": [r.to_json() for r in self.results],
        }


def _attention_layers(model: Any, spec: str | None) -> list[tuple[str, int]]:
    """(module, block) of the attention layers ``spec`` names: None every one; ``H0``/``H.0``/``L1``; a
    number or range: that block of every module."""
    inner = model.inner
    modules = [m for m in ("H", "L") if hasattr(inner, f"{m}_level")]

    def has_attn(m: str, i: int) -> bool:
        layers = getattr(inner, f"{m}_level").layers
        return 0 <= i < len(layers) and getattr(layers[i], "self_attn", None) is not None

    every = [
        (m, i) for m in modules for i in range(len(getattr(inner, f"{m}_level").layers)) if has_attn(m, i)
    ]
    if spec is None or not str(spec).strip() or str(spec).strip() == "all":
        if not every:
            raise AnalysisError("this model's blocks mix positions with an MLP (mlp_t); it has no attention")
        return every
    out: list[tuple[str, int]] = []
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"([HLhl])\.?(\d+)", part)
        if m:
            out.append((m.group(1).upper(), int(m.group(2))))
        else:
            nums = parse_ints(part, "layers") or []
            out.extend((mod, i) for i in nums for mod in modules if has_attn(mod, i) or len(modules) == 1)
    if not out:
        raise AnalysisError(f"layers {spec!r} name no attention layer; this model has {every}")
    return list(dict.fromkeys(out))


def _default_query(puzzles: Any, view: _View) -> tuple[int, int]:
    inp = puzzles.grid(puzzles.inputs[0])
    if view.kind == "sudoku":
        blank = np.argwhere(inp == 1)
        if len(blank):
            return int(blank[0][0]), int(blank[0][1])
    if puzzles.labels is not None:
        lab = puzzles.grid(puzzles.labels[0])
        hit = np.argwhere(lab >= (2 if view.kind == "arc" else 0))
        if len(hit):
            return int(hit[0][0]), int(hit[0][1])
    return 0, 0


def reasoning_attention(
    cfg: AttentionConfig | dict | None = None,
    *,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    **settings: Any,
):
    """`arcscope analyze attention` on an HRM/TRM: the attention weights of ``cfg.layers`` (``H0``, ``L1``,
    numbers, or all) and ``cfg.heads`` from one output cell (the first of ``cfg.cells``; default the first
    blank / answer cell) to the input cells, at every call in every ACT step, combined per step with
    ``cfg.aggregate``. Returns (:class:`StepAttentionResult`, paths)."""
    from arcscope.analysis import report
    from arcscope.analysis.reasoning import grid_attention

    cfg = make_config(AttentionConfig, cfg, settings)
    if cfg.aggregate not in ("mean", "max", "sum"):
        raise AnalysisError(f"aggregate {cfg.aggregate!r} is not mean, max or sum")
    model, name = _model_of(cfg, loaded)
    puzzles, src, view = _one_puzzle(cfg, model)
    cells = _cells(cfg.cells, puzzles.shape, "query cell")
    query = cells[0] if cells else _default_query(puzzles, view)
    layers = _attention_layers(model, cfg.layers)
    heads = parse_ints(cfg.heads, "heads")
    results = []
    emit(progress, "layers", 0, len(layers))
    for k, (mod, i) in enumerate(layers):
        results.append(
            grid_attention(model, puzzles, module=mod, layer=i, heads=heads, query=query, model_name=name)
        )
        emit(progress, "layers", k + 1, len(layers))
    n = int(model.config.halt_max_steps)
    res = StepAttentionResult(
        model=results[0].model,
        query=query,
        aggregate=cfg.aggregate,
        layers=[f"{m}.{i}" for m, i in layers],
        results=results,
        steps=n,
    )
    maps = view.crop(res.step_maps())
    pred = _final_prediction(model, puzzles)
    grids = _prompt_grids(view, puzzles, pred)
    marks = {g["segment"]: [query] for g in grids}
    r, c = query
    hs = results[0].heads
    sections = [
        report.section(
            f"Which input cells output cell ({r}, {c}) attends to",
            report.heat_grids(
                grids,
                {0: maps},
                value_label="attention",
                scale="sequential",
                marks=marks,
                layer_labels=["all steps"] + [f"step {s}" for s in range(1, n + 1)],
                layer=0,
            ),
            note=f"{view.note}; {cfg.aggregate} over the calls of each step, {len(hs)} head(s) and "
            f"{len(layers)} layer(s) ({', '.join(res.layers)}); weights on puzzle-embedding positions left out. "
            "Slider: the ACT step",
        ),
        report.section(
            "How focused each head is",
            report.heatmap(
                res.focus(),
                res.layers,
                [str(x) for x in hs],
                x_label="head",
                y_label="layer",
                value_label="largest weight on one cell (mean over calls)",
                scale="sequential",
                vmin=0.0,
            ),
        ),
    ]
    data = {"attention": res.to_json(), "source": src.to_json(), "drawn_shape": list(view.shape)}
    paths = _write(
        cfg,
        f"Attention on the grid, {puzzles.names[0]}",
        sections,
        data,
        {"attention": res.to_table()},
        task=puzzles.names[0],
        model=res.model,
        metric=f"attention weight from cell ({r}, {c}) ({cfg.aggregate} over calls, heads and layers)",
    )
    return res, paths


def _final_prediction(model: Any, puzzles: Any) -> np.ndarray:
    from arcscope.analysis.reasoning import run_act

    dev = next(model.parameters()).device
    outs = run_act(model, puzzles.tensors(dev))
    return puzzles.grid(outs[-1]["logits"].argmax(-1)[0].cpu().numpy().astype(np.int64))


# ---- probes per step -------------------------------------------------------------------------------------


@dataclass
class ReasoningProbeConfig(Config):
    """`arcscope analyze probe` on an HRM/TRM: a linear probe per reasoning step, from a puzzle dataset."""

    config_name = "probe"

    model: str | None = None
    """HRM/TRM checkpoint folder or file; None for the bundled TRM (4x4 Sudoku)."""
    tasks: str | None = None
    """Puzzle dataset folder (HRM layout); None: seeded Sudoku puzzles built for a Sudoku model."""
    data_split: str = "test"
    """Split of the dataset whose puzzles are probed (the probe holds out puzzles of it)."""
    target: str = "answer"
    """What the probe predicts per cell: answer (the answer token), input (its input token) or final (the
    model's own last prediction)."""
    state: str = "z_H"
    """State probed: z_H, or z_L (its last L update of each cycle)."""
    cycles: str = "all"
    """One probe per H cycle (all) or per ACT step (last: the z_H the step's output reads)."""
    max_examples: int | None = 256
    """Puzzles to use at most (None: the whole split); also how many are generated without a dataset."""
    batch_size: int = 64
    """Puzzles per forward pass."""
    test_fraction: float = 0.25
    """Share of puzzles held out for testing."""
    l2: float = 1e-3
    """L2 penalty on the weights of the standardised features."""
    max_iter: int = 200
    """L-BFGS iterations per probe."""
    seed: int = 0
    """Seed for the held-out split (and generated puzzles)."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    dtype: str = "float32"
    """Compute dtype of the model: float32 (exact), bfloat16, float16 or auto (the checkpoint's)."""
    out: str = "runs/probe"
    """Output folder: report.html, result.json and Parquet tables."""

    def validate(self) -> ReasoningProbeConfig:
        """Check the target, state, cycles and split settings."""
        from arcscope.analysis.config import AnalysisConfigError

        if self.target not in ("answer", "input", "final"):
            raise AnalysisConfigError(f"probe target {self.target!r} is not answer, input or final")
        if self.state not in ("z_H", "z_L"):
            raise AnalysisConfigError(f"probe state {self.state!r} is not z_H or z_L")
        if self.cycles not in ("all", "last"):
            raise AnalysisConfigError(f"cycles {self.cycles!r} is not all or last")
        if not 0.0 < self.test_fraction < 1.0:
            raise AnalysisConfigError(
                f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction}"
            )
        if self.max_examples is not None and self.max_examples < 2:
            raise AnalysisConfigError(f"max_examples must be at least 2 (or None), got {self.max_examples}")
        if self.batch_size < 1:
            raise AnalysisConfigError("batch_size must be >= 1")
        return self


_LM_TARGETS = {"colour": "answer", "output_colour": "answer"}
"""LM probe targets (ProbeRunConfig's default is colour) and the per-cell target they become here."""


def _probe_config(cfg: Any, settings: Mapping[str, Any]) -> ReasoningProbeConfig:
    if cfg is None or isinstance(cfg, ReasoningProbeConfig | Mapping):
        return make_config(ReasoningProbeConfig, cfg, settings)
    # Another config (ProbeRunConfig with model / tasks fields): take the fields both have.
    d = {f.name: getattr(cfg, f.name) for f in fields(ReasoningProbeConfig) if hasattr(cfg, f.name)}
    if "target" in d:
        d["target"] = _LM_TARGETS.get(str(d["target"]), d["target"])
    return make_config(ReasoningProbeConfig, d, settings)


def reasoning_probe(
    cfg: ReasoningProbeConfig | dict | Any = None,
    *,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    **settings: Any,
):
    """`arcscope analyze probe` on an HRM/TRM: a linear probe per H cycle (or ACT step) predicting each
    cell's ``target`` from ``state``, trained on some puzzles of ``cfg.tasks`` and scored on held-out ones,
    beside the model's own readout; returns (:class:`~arcscope.analysis.reasoning.StepProbeResult`, paths).
    ``cfg`` is a :class:`ReasoningProbeConfig`, a dict, or a config with some of its fields."""
    from arcscope.analysis import report
    from arcscope.analysis.reasoning import as_puzzles, probe_steps

    cfg = _probe_config(cfg, settings)
    model, name = _model_of(cfg, loaded)
    count = cfg.max_examples or 256
    with _open_source(model, cfg.tasks, count, cfg.seed, cfg.data_split) as (ds, src):
        split = _split_of(ds, cfg.data_split)
        src.split = split
        total = ds[split].n_examples
        take = total if cfg.max_examples is None else min(total, cfg.max_examples)
        puzzles = as_puzzles(model, ds, examples=np.arange(take), split=split)
    res = probe_steps(
        model,
        puzzles,
        target=cfg.target,
        state=cfg.state,
        cycles=cfg.cycles,
        max_examples=cfg.max_examples,
        batch_size=cfg.batch_size,
        test_fraction=cfg.test_fraction,
        l2=cfg.l2,
        max_iter=cfg.max_iter,
        seed=cfg.seed,
        model_name=name,
        progress=progress,
    )
    labels = [f"{s}.{c}" if cfg.cycles == "all" else str(s) for s, c in res.labels]
    k = len(labels)
    series = {
        "held-out accuracy": res.accuracy,
        "train accuracy": res.train_accuracy,
        "majority baseline": np.full(k, res.baseline),
        "chance": np.full(k, res.chance),
    }
    if res.target == "answer":
        series["model's readout"] = res.readout_accuracy
    sections = [
        report.line_plot(
            labels,
            series,
            x_label="ACT step . H cycle" if cfg.cycles == "all" else "ACT step",
            y_label="accuracy",
            title=f"Probe for each cell's {res.target} token from {res.state}",
            y_range=(0.0, 1.0),
        ),
        report.table(
            [
                {
                    "step": s,
                    "cycle": c,
                    "held-out accuracy": float(a),
                    "train accuracy": float(t),
                    "readout accuracy": None if not math.isfinite(ro) else float(ro),
                }
                for (s, c), a, t, ro in zip(
                    res.labels, res.accuracy, res.train_accuracy, res.readout_accuracy, strict=True
                )
            ],
            title=f"{res.n_train} train cells of {res.n_train_puzzles} puzzles / {res.n_test} test cells of "
            f"{res.n_test_puzzles} puzzles; majority baseline {res.baseline:.3f}, chance {res.chance:.3f}",
        ),
    ]
    source = src.dataset or f"{src.generated['count']} generated Sudoku puzzles"  # type: ignore[index]
    data = {"probe": res.to_json(), "source": src.to_json()}
    paths = _write(
        cfg,
        f"Probes for the {res.target} over the reasoning steps",
        sections,
        data,
        {"probes": res.to_table()},
        task=f"{source} ({split})",
        model=res.model,
        metric=f"held-out accuracy of a linear probe for the {res.target} token",
    )
    return res, paths
