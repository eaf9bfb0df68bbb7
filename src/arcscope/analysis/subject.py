"""The thing every analysis looks at: one ARC task prompt with its gold answer, where each answer cell is
predicted, and a metric of how well the model predicts it.

A :class:`Subject` is a task written as a teacher-forced prompt (train pairs, the test input, then the gold
answer), tokenized once, with the token-to-cell map of :mod:`arcscope.tasks.prompts`. Its
:class:`AnswerCells` say, for each answer cell encoded by one token, the position of that token, the
position whose logits predict it (one before), the correct token and the token each of the 10 colours would
be at that place. Analyses (lens, attention, patching, probes, steering) all measure the model on these
cells, so "the answer" means the same thing everywhere.

Metrics (:class:`Metric`) take logits at the answer's predicting positions ``[B, K, V]`` and give one
number per batch row (differentiable, for attribution):

* ``logprob``: log-probability of the correct colour token;
* ``prob``: its probability;
* ``logit_diff``: its logit minus the largest logit of the other nine colours at that cell (> 0: the model
  prefers the right colour among colours).

``cells`` picks the cells averaged over: all of them (None), one ``(row, col)``, or a list.

Positions are grouped by grid cell (:meth:`Subject.cells`): one row per (grid, row, col) of the prompt's
grids, with the token position that encodes it. Results over such groups are arrays plus that table, and
:func:`to_grids` turns them back into one 2-d array per grid for heat maps.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from arcscope.analysis.config import METRICS, AnalysisError


@dataclass(frozen=True)
class AnswerCells:
    """Where the gold answer's cells are in a subject's tokens: one entry per cell encoded by one token."""

    token_pos: np.ndarray
    """int64 ``[K]``: position of the token that encodes the cell."""
    predict_pos: np.ndarray
    """int64 ``[K]``: the position whose logits predict that token (``token_pos - 1``)."""
    row: np.ndarray
    """int64 ``[K]``."""
    col: np.ndarray
    """int64 ``[K]``."""
    target: np.ndarray
    """int64 ``[K]``: the correct token id."""
    colour: np.ndarray
    """int64 ``[K]``: the correct colour 0..9."""
    colour_ids: np.ndarray
    """int64 ``[K, 10]``: the token each colour would be at this cell (-1 where it is not one token)."""
    shape: tuple[int, int]
    """The answer grid's (rows, columns)."""

    def __len__(self) -> int:
        return len(self.token_pos)

    def index(self, row: int, col: int) -> int:
        """The entry of cell (row, col); AnalysisError when no single token encodes it."""
        hit = np.flatnonzero((self.row == row) & (self.col == col))
        if not len(hit):
            h, w = self.shape
            if not (0 <= row < h and 0 <= col < w):
                raise AnalysisError(f"answer cell ({row}, {col}) is outside the {h}x{w} answer grid")
            raise AnalysisError(f"answer cell ({row}, {col}) is not encoded by a token of its own")
        return int(hit[0])

    def select(self, cells: Any) -> np.ndarray:
        """Entries for ``cells``: None (all), (row, col), or a list of (row, col)."""
        if cells is None:
            return np.arange(len(self))
        if (
            isinstance(cells, tuple)
            and len(cells) == 2
            and all(isinstance(x, int | np.integer) for x in cells)
        ):
            return np.array([self.index(int(cells[0]), int(cells[1]))])
        return np.array([self.index(int(r), int(c)) for r, c in cells])


@dataclass(frozen=True)
class Metric:
    """How well the model predicts the answer: ``kind`` over ``cells`` (see the module docstring)."""

    kind: Literal["logprob", "prob", "logit_diff"] = "logprob"
    cells: Any = None
    """None (every answer cell), (row, col), or a list of (row, col)."""

    def __post_init__(self):
        if self.kind not in METRICS:
            raise AnalysisError(f"metric {self.kind!r} is not one of {', '.join(METRICS)}")

    def per_cell(self, logits: torch.Tensor, answer: AnswerCells) -> torch.Tensor:
        """``[B, K']`` metric per selected cell from logits ``[B, K, V]`` at the predicting positions."""
        sel = answer.select(self.cells)
        lg = logits[:, sel].float()
        target = torch.as_tensor(answer.target[sel], device=lg.device)
        if self.kind == "logit_diff":
            ids = torch.as_tensor(answer.colour_ids[sel], device=lg.device)
            right = lg.gather(-1, target[None, :, None].expand(lg.shape[0], -1, 1)).squeeze(-1)
            alt = lg.gather(-1, ids.clamp(min=0)[None].expand(lg.shape[0], -1, -1))
            other = (ids != target[:, None]) & (ids >= 0)
            alt = alt.masked_fill(~other[None], float("-inf"))
            return right - alt.max(-1).values
        lp = (
            torch.log_softmax(lg, -1).gather(-1, target[None, :, None].expand(lg.shape[0], -1, 1)).squeeze(-1)
        )
        return lp.exp() if self.kind == "prob" else lp

    def __call__(self, logits: torch.Tensor, answer: AnswerCells) -> torch.Tensor:
        """``[B]``: the mean over the selected cells."""
        return self.per_cell(logits, answer).mean(-1)

    @property
    def label(self) -> str:
        """A short description for reports."""
        where = "all answer cells" if self.cells is None else f"cells {self.cells}"
        return f"{self.kind} of the correct colour, {where}"


def as_metric(metric: Metric | str | None, cells: Any = None) -> Metric:
    """A Metric from a Metric, a kind name or None (logprob)."""
    if isinstance(metric, Metric):
        return metric if cells is None else replace(metric, cells=cells)
    return Metric(metric or "logprob", cells)


@dataclass
class Subject:
    """One task prompt, teacher-forced with its gold answer, tokenized and mapped to grid cells."""

    model: Any
    tokenizer: Any
    task: Any
    """The task as prompted (arcscope.tasks.Task)."""
    test_index: int
    prompt: Any
    """arcscope.tasks.prompts.Prompt (answer included)."""
    cell_map: Any
    """arcscope.tasks.prompts.TokenCellMap over the whole prompt."""
    n_prompt: int
    """Tokens before the answer."""
    answer: AnswerCells
    encoder: str = "minimal"
    template: str = "default"
    _cells: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def from_task(
        cls,
        model: Any,
        task: Any,
        *,
        tokenizer: Any = None,
        test_index: int = 0,
        encoder: str = "minimal",
        template: str = "default",
        max_tokens: int | None = None,
    ) -> Subject:
        """Prepare ``task`` for ``model`` (a LoadedModel, or a model with ``tokenizer`` given)."""
        from arcscope.tasks.prompts import build_prompt, token_cell_map

        model, tokenizer = _unpack(model, tokenizer)
        if not 0 <= test_index < len(task.test):
            raise AnalysisError(
                f"task {task.id}: test index {test_index} out of range ({len(task.test)} tests)"
            )
        if task.test[test_index].output is None:
            raise AnalysisError(f"task {task.id}: test[{test_index}] has no known answer to analyse against")
        prompt = build_prompt(
            task, encoder, tokenizer, test_index=test_index, include_answer=True, template=template
        )
        cmap = token_cell_map(prompt, tokenizer)
        n_prompt = len(cmap.input_ids) - prompt.answer_token_count(cell_map=cmap)
        limit = max_tokens or int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or 0)
        if limit and len(cmap.input_ids) > limit:
            raise AnalysisError(
                f"task {task.id}: the prompt with its answer needs {len(cmap.input_ids)} tokens and the model "
                f"takes {limit}; pick a smaller task or a model with a longer context"
            )
        answer = _answer_cells(cmap, prompt, tokenizer, task.test[test_index].output)
        if not len(answer):
            raise AnalysisError(f"task {task.id}: no answer cell is encoded by a token of its own")
        return cls(model, tokenizer, task, test_index, prompt, cmap, n_prompt, answer, encoder, template)

    def with_task(self, task: Any) -> Subject:
        """The same model and prompt settings on another task (a corruption keeps the clean test output, so
        both subjects are measured on the clean answer)."""
        return Subject.from_task(
            self.model,
            task,
            tokenizer=self.tokenizer,
            test_index=self.test_index,
            encoder=self.encoder,
            template=self.template,
        )

    # ---------------------------------------------------------------------------------------- accessors

    @property
    def input_ids(self) -> torch.Tensor:
        """long ``[1, T]`` on the model's device."""
        return torch.as_tensor(np.asarray(self.cell_map.input_ids, dtype=np.int64))[None].to(self.device)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def __len__(self) -> int:
        return len(self.cell_map.input_ids)

    @property
    def task_id(self) -> str:
        """The task's id."""
        return self.task.id

    def cells(self, roles: Sequence[str] | str | None = None) -> CellTable:
        """Prompt tokens that encode one grid cell each (optionally of some roles), as a CellTable."""
        if self._cells is None:
            self._cells = CellTable.from_map(self.cell_map, self.prompt)
        return self._cells if roles is None else self._cells.where(roles)

    def grids(self) -> list[dict[str, Any]]:
        """Every grid of the prompt: segment, role, pair, shape and cells (for drawing)."""
        return [
            {"segment": k, "role": s.role.value, "pair": int(s.pair), "shape": tuple(s.shape), "grid": s.grid}
            for k, s in enumerate(self.prompt.segments)
        ]

    # ----------------------------------------------------------------------------------------- running

    def batch(self, n: int) -> torch.Tensor:
        """``n`` copies of the input ids ``[n, T]``."""
        return self.input_ids.expand(n, -1)

    def logits(self, input_ids: torch.Tensor | None = None, **model_kwargs: Any) -> torch.Tensor:
        """Logits at the answer's predicting positions ``[B, K, V]`` (float32); only those are projected."""
        ids = self.input_ids if input_ids is None else input_ids
        keep = torch.as_tensor(self.answer.predict_pos, device=ids.device)
        out = self.model(input_ids=ids, use_cache=False, logits_to_keep=keep, **model_kwargs)
        return out.logits.float()

    def score(self, metric: Metric | str | None = None, **model_kwargs: Any) -> float:
        """The metric of the unmodified model on this subject."""
        with torch.no_grad():
            return float(as_metric(metric)(self.logits(**model_kwargs), self.answer)[0])

    def predicted_grid(self, logits: torch.Tensor | None = None) -> np.ndarray:
        """int ``[h, w]``: the colour the model ranks first among colours at each answer cell (-1 where the
        cell has no token of its own), teacher-forced."""
        if logits is None:
            with torch.no_grad():
                logits = self.logits()
        ids = torch.as_tensor(self.answer.colour_ids, device=logits.device)
        lg = logits[0].gather(-1, ids.clamp(min=0)).masked_fill(ids < 0, float("-inf"))
        best = lg.argmax(-1).cpu().numpy()
        out = np.full(self.answer.shape, -1, dtype=np.int64)
        out[self.answer.row, self.answer.col] = best
        return out


def _unpack(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    if hasattr(model, "model") and hasattr(model, "tokenizer"):  # a LoadedModel
        return model.model, tokenizer or model.tokenizer
    if tokenizer is None:
        raise AnalysisError(
            "pass the tokenizer with the model (or a LoadedModel from arcscope.models.load_model)"
        )
    return model, tokenizer


def _colour_tokens(tokenizer: Any, token_id: int, colour: int) -> np.ndarray:
    """The token each colour would be where ``token_id`` writes ``colour`` (digit substituted in place)."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    digit = str(int(colour))
    out = np.full(10, -1, dtype=np.int64)
    if not isinstance(piece, str) or piece.count(digit) != 1:
        return out
    unk = getattr(tokenizer, "unk_token_id", None)
    for c in range(10):
        alt = piece.replace(digit, str(c))
        tid = tokenizer.convert_tokens_to_ids(alt)
        if tid is not None and (tid != unk or alt == getattr(tokenizer, "unk_token", None)):
            out[c] = int(tid)
    out[int(colour)] = int(token_id)
    return out


def _answer_cells(cmap: Any, prompt: Any, tokenizer: Any, grid: Any) -> AnswerCells:
    from arcscope.tasks.prompts import Role

    pos = np.flatnonzero((cmap.role == Role.ANSWER.code) & (cmap.row >= 0)).astype(np.int64)
    pos = pos[pos >= 1]
    g = np.asarray(grid)
    row = cmap.row[pos].astype(np.int64)
    col = cmap.col[pos].astype(np.int64)
    target = np.asarray(cmap.input_ids, dtype=np.int64)[pos]
    colour = g[row, col].astype(np.int64)
    cache: dict[tuple[int, int], np.ndarray] = {}
    ids = (
        np.stack(
            [
                cache.setdefault((int(t), int(c)), _colour_tokens(tokenizer, int(t), int(c)))
                for t, c in zip(target, colour, strict=True)
            ]
        )
        if len(pos)
        else np.zeros((0, 10), dtype=np.int64)
    )
    return AnswerCells(pos, pos - 1, row, col, target, colour, ids, tuple(g.shape))


@dataclass(frozen=True)
class CellTable:
    """Prompt tokens that each encode one grid cell: parallel arrays, one entry per cell."""

    position: np.ndarray
    """int64 token position."""
    segment: np.ndarray
    """int64 index into the prompt's grids (Subject.grids())."""
    role: np.ndarray
    """object: role names (train_input, train_output, test_input, answer)."""
    pair: np.ndarray
    row: np.ndarray
    col: np.ndarray

    def __len__(self) -> int:
        return len(self.position)

    @classmethod
    def from_map(cls, cmap: Any, prompt: Any) -> CellTable:
        """Every single-cell token of a token-to-cell map."""
        from arcscope.tasks.prompts import Role

        pos = np.flatnonzero(cmap.row >= 0).astype(np.int64)
        roles = np.array([Role.from_code(int(c)).value for c in cmap.role[pos]], dtype=object)
        return cls(
            pos,
            cmap.segment[pos].astype(np.int64),
            roles,
            cmap.pair[pos].astype(np.int64),
            cmap.row[pos].astype(np.int64),
            cmap.col[pos].astype(np.int64),
        )

    def where(self, roles: Sequence[str] | str) -> CellTable:
        """The cells of the given role(s) (names as in the store's ``role`` column, ``-`` or ``_``)."""
        from arcscope.tasks.prompts import Role

        roles = [roles] if isinstance(roles, str) else list(roles)
        names = [Role.parse(r).value for r in roles]
        keep = np.isin(self.role, names)
        return self.take(keep)

    def take(self, keep: np.ndarray) -> CellTable:
        """The entries selected by a bool mask or index array."""
        return CellTable(
            *(getattr(self, f)[keep] for f in ("position", "segment", "role", "pair", "row", "col"))
        )

    def to_dict(self) -> dict[str, list]:
        """Columns as lists (JSON, Parquet)."""
        return {f: getattr(self, f).tolist() for f in ("position", "segment", "role", "pair", "row", "col")}


def to_grids(
    values: np.ndarray, cells: CellTable, shapes: Sequence[tuple[int, int]]
) -> dict[int, np.ndarray]:
    """Per-cell values ``[..., n_cells]`` as one ``[..., h, w]`` float array per grid segment (NaN where no
    value), keyed by segment index; ``shapes`` are the segments' shapes (Subject.grids())."""
    values = np.asarray(values, dtype=np.float64)
    lead = values.shape[:-1]
    out: dict[int, np.ndarray] = {}
    for seg in np.unique(cells.segment):
        h, w = shapes[int(seg)]
        arr = np.full((*lead, h, w), np.nan)
        sel = cells.segment == seg
        arr[..., cells.row[sel], cells.col[sel]] = values[..., sel]
        out[int(seg)] = arr
    return out


def natural_key(name: str) -> list[Any]:
    """Sort key that orders numbers inside names by value (``blocks.2`` before ``blocks.10``)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy arrays and scalars to lists and numbers, NaN and inf to None, tuples
    to lists, paths to strings, mapping keys to strings."""
    if obj is None or isinstance(obj, str | bool):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # torch tensors and other array types
        return json_safe(obj.tolist())
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def model_name(model: Any) -> str:
    """A model's name for results: a LoadedModel's name, else its config's path, else its type."""
    if hasattr(model, "tokenizer") and isinstance(getattr(model, "name", None), str):
        return model.name
    inner = model.model if hasattr(model, "tokenizer") else model
    cfg = getattr(inner, "config", None)
    name = (
        getattr(inner, "name_or_path", "")
        or getattr(cfg, "_name_or_path", "")
        or getattr(cfg, "name_or_path", "")
        or getattr(cfg, "model_type", "")
    )
    return str(name or type(inner).__name__)
