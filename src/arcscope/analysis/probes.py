"""Linear probes on stored activations: what one hook's activations say about a cell, layer by layer.

A probe is a multinomial logistic regression from one hook's rows to a label of each row, trained on some
tasks and scored on others. Targets (:data:`TARGETS`, or any index column):

* ``colour``: the colour of the cell the token encodes, read from the task grids (the store's task source,
  with the row's augmentation applied, the grid picked by role and pair);
* ``output_colour``: for a cell of an input grid, the colour the output grid of the same pair has at the same
  row and column (rows outside that grid, or whose output is unknown, are dropped);
* ``row``, ``col``: the cell's place (rows that are not cells are dropped); ``role``: the grid's role;
* any other index column, as a categorical label (nulls dropped); or a label array given by the caller.

The held-out split is by task: no task has rows on both sides, so a probe cannot pass by recognising a task.
A store of one task falls back to a split of rows, and the result says so. Features are standardised with
the training rows' mean and spread; the classifier is fitted full-batch with L-BFGS and a small L2 penalty.
The same rows (``max_rows`` drawn with the seed) and the same split serve every hook, so accuracies compare
across layers. :attr:`ProbeResult.weights` hold each layer's class directions in activation space, the
directions :func:`arcscope.analysis.vectors.probe_direction` steers with.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from arcscope.analysis.config import SPLITS, ProbeConfig, ProbeError
from arcscope.analysis.subject import natural_key
from arcscope.config import make_config
from arcscope.errors import ArcscopeError
from arcscope.progress import ProgressFn, emit
from arcscope.tasks.lookup import GridLookup

TARGETS = ("colour", "output_colour", "row", "col", "role")
"""Named probe targets; any other index column name is a categorical target too."""
GRID_TARGETS = ("colour", "output_colour")
"""Targets read from the task grids rather than from the index."""


# ---- stores, hooks and rows ----------------------------------------------------------------------------


def as_store(store: Any) -> Any:
    """A :class:`arcscope.store.Store` from a Store, a local path or an fsspec URL."""
    from arcscope.store import Store, open_store

    return store if isinstance(store, Store) else open_store(store)


def match_hooks(store: Any, hooks: str | list[str] | tuple[str, ...]) -> list[str]:
    """Store hooks named by ``hooks``: names or glob patterns (``blocks.*.hook_resid_post``, ``{0..3}``),
    comma-separated or a list; each pattern's matches in layer order, duplicates dropped."""
    from arcscope.capture.spec import expand_braces, split_names

    items = split_names(hooks) if isinstance(hooks, str) else list(hooks)
    if not items:
        raise ProbeError(f"{store.url}: no hooks given; the store has {sorted(store.hooks, key=natural_key)}")
    out: dict[str, None] = {}
    for item in items:
        found = []
        for pattern in expand_braces(str(item).strip()):
            found += [h for h in store.hooks if h == pattern or fnmatch.fnmatchcase(h, pattern)]
        if not found:
            raise ProbeError(
                f"{store.url}: hook {item!r} is not in the store; it has {sorted(store.hooks, key=natural_key)}"
            )
        for h in sorted(set(found), key=natural_key):
            out.setdefault(h, None)
    return list(out)


def layer_of(hook: str) -> int | None:
    """The layer number in a hook name (``blocks.3.hook_resid_post`` -> 3), or None."""
    m = re.search(r"(?:^|\.)(?:blocks|layers|h|layer)\.(\d+)(?:\.|$)", hook) or re.search(
        r"\.(\d+)(?:\.|$)", hook
    )
    return int(m.group(1)) if m else None


def read_rows(store: Any, hook: str, index: pa.Table) -> torch.Tensor:
    """``hook``'s rows for the rows of ``index`` (a slice of ``store.index()``), in the table's order, float32."""
    shard = index.column("shard").to_numpy().astype(np.int64)
    local = index.column("row_in_shard").to_numpy().astype(np.int64)
    d = store.hooks[hook][0]
    out = torch.empty((len(shard), d), dtype=torch.float32)
    for sid in np.unique(shard):
        where = np.nonzero(shard == sid)[0]
        out[torch.from_numpy(where)] = store.read(hook, shard=int(sid), rows=local[where]).float()
    return out


# ---- labels --------------------------------------------------------------------------------------------


def load_task_grids(store: Any, tasks: Any = None) -> TaskGrids:
    """Grid lookup for the store's task source (or ``tasks``: a source spec or a TaskSet)."""
    from arcscope.tasks import load

    spec = tasks if tasks is not None else store.meta.get("task_source")
    if spec is None:
        raise ProbeError(
            f"{store.url}: the store does not name its task source, so cell colours are unknown; pass tasks="
        )
    try:
        return TaskGrids(load(spec))
    except ArcscopeError as e:
        raise ProbeError(
            f"{store.url}: cannot load the task source {str(spec)!r} to read colours: {e}"
        ) from e


TaskGrids = GridLookup
"""The grid lookup probes use (one mechanism: :class:`arcscope.tasks.lookup.GridLookup`)."""


def _ints(col: pa.ChunkedArray | pa.Array, fill: int = -1) -> np.ndarray:
    return pc.fill_null(col, fill).to_numpy().astype(np.int64)


def cell_colours(index: pa.Table, grids: TaskGrids, *, output: bool = False) -> np.ndarray:
    """Per index row, the colour of its cell (``output``: of the same cell of its pair's output grid), or -1
    where unknown (not a cell, no such grid, outside it)."""
    return grids.cells(index, output=output)[0]


@dataclass
class Labels:
    """Per index row, a class code (-1: no label, the row is left out), and the class of each code."""

    codes: np.ndarray
    classes: list[Any]


def _categorical(values: np.ndarray, keep: np.ndarray) -> Labels:
    codes = np.full(len(values), -1, dtype=np.int64)
    if keep.any():
        classes, inv = np.unique(values[keep], return_inverse=True)
        codes[keep] = inv
        return Labels(codes, [c.item() if hasattr(c, "item") else c for c in classes])
    return Labels(codes, [])


def target_labels(store: Any, target: str, index: pa.Table, *, tasks: Any = None) -> Labels:
    """The labels of ``target`` (:data:`TARGETS` or an index column) for the rows of ``index``."""
    cols = [c for c in index.column_names if c not in ("shard", "row_in_shard")]
    if target in GRID_TARGETS:
        for need in ("task_id", "augmentation", "role", "pair", "row", "col"):
            if need not in cols:
                raise ProbeError(f"{store.url}: target {target!r} needs the index column {need!r}")
        colours = cell_colours(index, load_task_grids(store, tasks), output=target == "output_colour")
        return _categorical(colours.astype(np.int64), colours >= 0)
    if target not in cols:
        raise ProbeError(
            f"{store.url}: unknown probe target {target!r}; use one of {', '.join(TARGETS)} or an index "
            f"column ({', '.join(cols)})"
        )
    column = index[target]
    if target in ("row", "col"):
        v = _ints(column)
        return _categorical(v, v >= 0)
    keep = ~np.asarray(pc.is_null(column).to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        column = pc.fill_null(column, pa.scalar(0, column.type))  # null rows are dropped by ``keep``
    elif pa.types.is_boolean(column.type):
        column = pc.fill_null(column, False)
    values = np.asarray(column.to_numpy(zero_copy_only=False))
    if values.dtype.kind == "f":
        keep &= ~np.isnan(values)
    elif values.dtype == object:
        values = np.array(["" if v is None else str(v) for v in values], dtype=object)
    return _categorical(values, keep)


def _given_labels(labels: Any, n: int, url: str) -> Labels:
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise ProbeError(
            f"{url}: labels must be one value per index row ({n} rows after `where`), got shape {arr.shape}"
        )
    if arr.dtype.kind in "iub":
        keep = arr >= 0 if arr.dtype.kind == "i" else np.ones(n, dtype=bool)
    elif arr.dtype.kind == "f":
        keep = ~np.isnan(arr)
    else:
        keep = np.array([v is not None for v in arr], dtype=bool)
        arr = np.array([str(v) if v is not None else "" for v in arr], dtype=object)
    return _categorical(arr, keep)


# ---- split and classifier ------------------------------------------------------------------------------


def group_split(groups: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A held-out mask over rows: whole groups (tasks) in seeded order go to test until ``test_fraction`` of
    the rows is there, at least one group on each side (needs two groups or more)."""
    uniq, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(uniq) < 2:
        raise ProbeError(f"a split by task needs two tasks or more; the rows come from {len(uniq)}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    want = test_fraction * len(groups)
    test_groups: list[int] = []
    held = 0
    for g in order[:-1]:  # the last group always stays in train
        if test_groups and held + counts[g] / 2 > want:
            break
        test_groups.append(int(g))
        held += int(counts[g])
    return np.isin(inv, test_groups)


def row_split(n: int, test_fraction: float, seed: int) -> np.ndarray:
    """A held-out mask of ``round(test_fraction * n)`` rows drawn with ``seed`` (at least one on each side)."""
    k = min(max(1, round(test_fraction * n)), n - 1)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:k]] = True
    return mask


@dataclass
class LinearProbe:
    """A fitted multinomial logistic regression, in activation space: ``logits = x @ weight.T + bias``."""

    weight: torch.Tensor
    """[n_classes, d] class directions (classes without training rows: zeros)."""
    bias: torch.Tensor
    """[n_classes] (classes without training rows: -inf, never predicted)."""
    train_accuracy: float
    test_accuracy: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[n, n_classes] logits of rows ``x``."""
        return x.float() @ self.weight.T + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """[n] the predicted class code of each row."""
        return self.logits(x).argmax(1)


def fit_probe(
    x: torch.Tensor,
    y: np.ndarray | torch.Tensor,
    test: np.ndarray,
    n_classes: int,
    *,
    l2: float = 1e-3,
    max_iter: int = 200,
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Fit a probe of rows ``x`` [n, d] to class codes ``y`` (0..n_classes-1) on the rows not in ``test``
    (a bool mask), and score it on the rows in it: standardised features, full-batch L-BFGS, L2 ``l2``;
    fitted on ``device``, returned on the CPU."""
    dev = torch.device(device)
    x = x.to(dev, torch.float32)
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.int64).to(dev)
    test_t = torch.as_tensor(np.asarray(test, dtype=bool)).to(dev)
    xtr, ytr = x[~test_t], y_t[~test_t]
    d = x.shape[1]
    if len(ytr) == 0:
        raise ProbeError("a probe needs training rows; every row is held out")
    mu = xtr.double().mean(0)
    sd = xtr.double().std(0, unbiased=False)
    sd = torch.where(sd > 1e-8 * sd.max().clamp_min(1e-30), sd, torch.ones_like(sd))
    mu, sd = mu.float(), sd.float()
    present = torch.unique(ytr)
    # Only classes with training rows are fitted: an absent class would drive its bias to -inf and never end.
    remap = torch.full((n_classes,), -1, dtype=torch.int64, device=dev)
    remap[present] = torch.arange(len(present), device=dev)
    z = (xtr - mu) / sd
    w = torch.zeros(d, len(present), device=dev, requires_grad=True)
    b = torch.zeros(len(present), device=dev, requires_grad=True)
    if len(present) > 1:
        opt = torch.optim.LBFGS(
            [w, b],
            lr=1.0,
            max_iter=max_iter,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-7,
            tolerance_change=1e-10,
        )
        target = remap[ytr]

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(z @ w + b, target) + 0.5 * l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        pred_present = ((x - mu) / sd @ w + b).argmax(1)
        hit = (present[pred_present] == y_t).float()
        train_acc = float(hit[~test_t].mean())
        test_acc = float(hit[test_t].mean()) if bool(test_t.any()) else math.nan
        # Softmax is unchanged by a shift shared by all classes: centring makes each row a contrast.
        wc = w - w.mean(1, keepdim=True)
        w_raw = torch.zeros(n_classes, d, device=dev)
        b_raw = torch.full((n_classes,), -math.inf, device=dev)
        w_raw[present] = (wc / sd[:, None]).T
        b_raw[present] = b - (mu / sd) @ wc
    return LinearProbe(w_raw.cpu(), b_raw.cpu(), train_acc, test_acc)


# ---- results -------------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """Probe accuracy per hook on one set of rows and one split, with each hook's fitted probe."""

    target: str
    hooks: list[str]
    classes: list[Any]
    """The class of each code (a colour, a row number, a role...)."""
    accuracy: np.ndarray
    """[n_hooks] held-out accuracy."""
    train_accuracy: np.ndarray
    """[n_hooks] accuracy on the training rows."""
    baseline: float
    """Held-out accuracy of always answering the training rows' most frequent class."""
    chance: float
    """1 / n_classes."""
    n_train: int
    n_test: int
    n_train_tasks: int
    n_test_tasks: int
    split: str
    """tasks (no task on both sides) or rows."""
    class_counts: np.ndarray
    """[n_classes] rows of each class among the sampled rows."""
    weights: dict[str, torch.Tensor] = field(repr=False)
    """hook -> [n_classes, d] class directions in activation space."""
    biases: dict[str, torch.Tensor] = field(repr=False)
    """hook -> [n_classes] biases (-inf for a class without training rows)."""
    note: str = ""
    """Anything the caller should know: a fallback split, classes without training rows."""
    store: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def best(self) -> str:
        """The hook with the highest held-out accuracy."""
        return self.hooks[int(np.nanargmax(self.accuracy))]

    def probe(self, hook: str | int) -> LinearProbe:
        """The fitted probe of ``hook`` (a name, a layer number, or a position in :attr:`hooks`)."""
        h = self.hook_name(hook)
        i = self.hooks.index(h)
        return LinearProbe(
            self.weights[h], self.biases[h], float(self.train_accuracy[i]), float(self.accuracy[i])
        )

    def hook_name(self, hook: str | int) -> str:
        """The hook named by a name, a layer number or a position in :attr:`hooks`."""
        if isinstance(hook, str):
            if hook not in self.hooks:
                raise ProbeError(f"probe result has no hook {hook!r}; it has {self.hooks}")
            return hook
        layers = [layer_of(h) for h in self.hooks]
        if all(n is None for n in layers) and 0 <= int(hook) < len(self.hooks):
            return self.hooks[int(hook)]  # hooks without layer numbers: a position in the list
        by_layer = [h for h, n in zip(self.hooks, layers, strict=True) if n == int(hook)]
        if len(by_layer) == 1:
            return by_layer[0]
        raise ProbeError(
            f"probe result: layer {hook} names {len(by_layer)} of its hooks {self.hooks}; pass the hook name"
        )

    def class_code(self, cls: Any) -> int:
        """The code of class ``cls`` (a class value; a string matches its text form)."""
        for i, c in enumerate(self.classes):
            if c == cls or str(c) == str(cls):
                return i
        raise ProbeError(f"probe of {self.target!r} has no class {cls!r}; its classes are {self.classes}")

    def to_table(self) -> pa.Table:
        """One row per hook: hook, layer, accuracy, train accuracy, baseline, chance, rows and classes."""
        n = len(self.hooks)
        return pa.table(
            {
                "hook": pa.array(self.hooks, pa.string()),
                "layer": pa.array([layer_of(h) for h in self.hooks], pa.int32()),
                "target": pa.array([self.target] * n, pa.string()),
                "accuracy": pa.array(self.accuracy, pa.float64()),
                "train_accuracy": pa.array(self.train_accuracy, pa.float64()),
                "baseline": pa.array([self.baseline] * n, pa.float64()),
                "chance": pa.array([self.chance] * n, pa.float64()),
                "n_train": pa.array([self.n_train] * n, pa.int64()),
                "n_test": pa.array([self.n_test] * n, pa.int64()),
                "n_classes": pa.array([self.n_classes] * n, pa.int32()),
                "split": pa.array([self.split] * n, pa.string()),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything but the weights, as plain JSON-able values."""

        def num(v: float) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        return {
            "target": self.target,
            "store": self.store,
            "hooks": list(self.hooks),
            "layers": [layer_of(h) for h in self.hooks],
            "classes": [c if isinstance(c, int | str) else str(c) for c in self.classes],
            "accuracy": [num(a) for a in self.accuracy],
            "train_accuracy": [num(a) for a in self.train_accuracy],
            "baseline": num(self.baseline),
            "chance": num(self.chance),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_train_tasks": self.n_train_tasks,
            "n_test_tasks": self.n_test_tasks,
            "n_classes": self.n_classes,
            "class_counts": [int(c) for c in self.class_counts],
            "split": self.split,
            "note": self.note,
            "config": dict(self.config),
        }

    def to_json(self) -> dict[str, Any]:
        """:meth:`to_dict` (JSON-safe values), named like every other analysis result's."""
        return self.to_dict()


# ---- the probe sweep -----------------------------------------------------------------------------------


def probe_layers(
    store: Any,
    hooks: str | list[str] | tuple[str, ...],
    target: str = "colour",
    *,
    labels: Any = None,
    where: dict[str, Any] | None = None,
    tasks: Any = None,
    config: ProbeConfig | dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> ProbeResult:
    """Train one probe per hook (names or patterns such as ``blocks.*.hook_resid_post``) to predict
    ``target`` from the store's rows (those matching ``where``, index conditions as in ``Store.query``), and
    score each on held-out tasks. ``labels`` (one value per such row; negative, NaN or None: no label)
    replaces ``target``'s labels; ``tasks`` overrides the store's task source; ``options`` are
    :class:`ProbeConfig` fields."""
    from arcscope.models import resolve_device

    cfg = make_config(ProbeConfig, config, options)
    device = resolve_device(cfg.device, no_mps="probes are fitted in float64 statistics")
    store = as_store(store)
    names = match_hooks(store, hooks)
    try:
        index = store.index(filter=where) if where else store.index()
    except ArcscopeError as e:
        raise ProbeError(f"{store.url}: bad row conditions {where!r}: {e}") from e
    if labels is not None:
        lab = _given_labels(labels, index.num_rows, store.url)
        target = target if target != "colour" else "labels"
    else:
        lab = target_labels(store, target, index, tasks=tasks)
    keep = np.nonzero(lab.codes >= 0)[0]
    what = f"rows matching {where!r}" if where else "rows"
    if len(keep) < 2:
        raise ProbeError(
            f"{store.url}: {len(keep)} of {index.num_rows} {what} have a {target!r} label; a probe needs at "
            "least two (for colours: are the rows grid cells, and is the task source the one the store was "
            "made from?)"
        )
    rng = np.random.default_rng(cfg.seed)
    if cfg.max_rows is not None and len(keep) > cfg.max_rows:
        keep = np.sort(rng.choice(keep, size=cfg.max_rows, replace=False))
    sub = index.take(pa.array(keep))
    y = lab.codes[keep]
    n_classes = len(lab.classes)
    if len(np.unique(y)) < 2:
        raise ProbeError(
            f"{store.url}: every sampled row has the same {target!r} label ({lab.classes[int(y[0])]!r}); "
            "a probe needs two classes or more"
        )
    groups = np.asarray(pc.fill_null(sub["task_id"], "").to_numpy(zero_copy_only=False)).astype(str)
    notes = []
    n_tasks = len(np.unique(groups))
    split = cfg.split
    if split == "tasks" and n_tasks < 2:
        split = "rows"
        notes.append("the rows come from one task, so the held-out split is by row, not by task")
    test = (
        group_split(groups, cfg.test_fraction, cfg.seed)
        if split == "tasks"
        else row_split(len(y), cfg.test_fraction, cfg.seed)
    )
    counts_train = np.bincount(y[~test], minlength=n_classes)
    majority = int(np.argmax(counts_train))
    baseline = float((y[test] == majority).mean())
    unseen = sorted({lab.classes[c] for c in np.unique(y[test]) if counts_train[c] == 0}, key=str)
    if unseen:
        notes.append(f"held-out classes with no training rows (never predicted): {unseen}")
    acc = np.full(len(names), np.nan)
    tr_acc = np.full(len(names), np.nan)
    weights: dict[str, torch.Tensor] = {}
    biases: dict[str, torch.Tensor] = {}
    emit(progress, "probes", 0, len(names))
    for i, hook in enumerate(names):
        x = read_rows(store, hook, sub)
        fit = fit_probe(x, y, test, n_classes, l2=cfg.l2, max_iter=cfg.max_iter, device=device)
        acc[i], tr_acc[i] = fit.test_accuracy, fit.train_accuracy
        weights[hook], biases[hook] = fit.weight, fit.bias
        del x
        emit(progress, "probes", i + 1, len(names), accuracy=round(float(acc[i]), 4))
    return ProbeResult(
        target=target,
        hooks=names,
        classes=list(lab.classes),
        accuracy=acc,
        train_accuracy=tr_acc,
        baseline=baseline,
        chance=1.0 / n_classes,
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
        n_train_tasks=len(np.unique(groups[~test])),
        n_test_tasks=len(np.unique(groups[test])),
        split=split,
        class_counts=np.bincount(y, minlength=n_classes),
        weights=weights,
        biases=biases,
        note="; ".join(notes),
        store=store.url,
        config=cfg.to_dict(),
    )


__all__ = [
    "GRID_TARGETS",
    "SPLITS",
    "TARGETS",
    "Labels",
    "LinearProbe",
    "ProbeConfig",
    "ProbeError",
    "ProbeResult",
    "TaskGrids",
    "as_store",
    "cell_colours",
    "fit_probe",
    "group_split",
    "layer_of",
    "load_task_grids",
    "match_hooks",
    "probe_layers",
    "read_rows",
    "row_split",
    "target_labels",
]
