"""Steering vectors: directions at one hook, from stored activations, a probe, or an SAE decoder.

* :func:`mean_difference`: the mean of one group of store rows minus the mean of another, each group given by
  index conditions as in ``Store.query`` (``role="test_input"``, ``pair=[0, 1]``), plus the grid targets
  ``colour`` and ``output_colour`` of :mod:`arcscope.analysis.probes` (``colour=3``);
* :func:`probe_direction`: a probe class's direction at one layer, as a unit vector;
* :func:`sae_direction`: a latent's decoder row of an arcscope ``SparseAutoencoder`` (``W_dec[latent]``).

Each gives a :class:`SteeringVector` (hook, ``[d]`` float32 vector, description), which the dose-response
sweep adds at its hook with a coefficient. :func:`save_vector` writes one as a safetensors file whose header
metadata carries the rest as JSON (no pickle); :func:`load_vector` reads it back.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from arcscope.analysis.probes import GRID_TARGETS, ProbeResult, as_store, cell_colours, load_task_grids
from arcscope.analysis.subject import AnalysisError, json_safe

FORMAT = "arcscope.steering_vector"
FORMAT_VERSION = 1
KINDS = ("mean_difference", "probe", "sae", "custom")
"""Where a vector came from."""


class SteeringError(AnalysisError):
    """A steering vector's source, group, file or setting is unusable; the message names it and the rule."""


@dataclass
class SteeringVector:
    """A direction to add at one hook: ``activation + coefficient * vector``."""

    hook: str
    """The hook it is added at (TransformerLens-style name, as in the store)."""
    vector: torch.Tensor
    """[d] float32."""
    description: str
    """Where it came from, in words."""
    kind: str = "custom"
    """mean_difference, probe, sae or custom."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance as JSON-able values (store, groups and their row counts, probe accuracy, latent...)."""

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.vector).detach()
        if v.ndim != 1 or v.numel() == 0:
            raise SteeringError(
                f"steering vector for {self.hook!r}: expected a [d] vector, got shape {tuple(v.shape)}"
            )
        if self.kind not in KINDS:
            raise SteeringError(
                f"steering vector for {self.hook!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}"
            )
        self.vector = v.to("cpu", torch.float32).contiguous()
        if not bool(torch.isfinite(self.vector).all()):
            raise SteeringError(f"steering vector for {self.hook!r}: it holds NaN or infinite values")

    @property
    def d(self) -> int:
        """Width of the vector."""
        return int(self.vector.numel())

    @property
    def norm(self) -> float:
        """Euclidean norm of the vector."""
        return float(self.vector.norm())

    def unit(self) -> SteeringVector:
        """The same direction with norm 1 (the original norm kept in ``meta["norm"]``)."""
        n = self.norm
        if n == 0:
            raise SteeringError(f"steering vector for {self.hook!r} is zero; it has no direction")
        return SteeringVector(
            self.hook, self.vector / n, self.description, self.kind, {**self.meta, "norm": n}
        )


def _unit_or_raw(vec: SteeringVector, normalize: bool) -> SteeringVector:
    return vec.unit() if normalize else vec


# ---- from stored activations ---------------------------------------------------------------------------


def _group_mask(
    store: Any, index: pa.Table, conditions: dict[str, Any], name: str, tasks: Any, cache: dict[str, Any]
) -> np.ndarray:
    """Rows of ``index`` matching every condition (index columns, plus colour / output_colour); ``cache``
    keeps the task grids and colours between the two groups."""
    if not isinstance(conditions, dict) or not conditions:
        raise SteeringError(
            f"{store.url}: {name} must be a non-empty dict of index conditions (column=value or list), "
            f"got {conditions!r}"
        )
    cols = [c for c in index.column_names if c not in ("shard", "row_in_shard")]
    mask = np.ones(index.num_rows, dtype=bool)
    for col, value in conditions.items():
        if col in GRID_TARGETS:
            if col not in cache:
                if "grids" not in cache:
                    cache["grids"] = load_task_grids(store, tasks)
                cache[col] = cell_colours(index, cache["grids"], output=col == "output_colour")
            values = cache[col]
        elif col in cols:
            values = np.asarray(index[col].to_numpy(zero_copy_only=False))
        else:
            raise SteeringError(
                f"{store.url}: {name} filters on {col!r}, which is neither an index column ({', '.join(cols)}) "
                f"nor one of {', '.join(GRID_TARGETS)}"
            )
        wanted = list(value) if isinstance(value, list | tuple | set | frozenset | np.ndarray) else [value]
        mask &= np.isin(values, np.asarray(wanted, dtype=values.dtype if values.dtype != object else object))
    return mask


def _mean(store: Any, hook: str, index: pa.Table, rows: np.ndarray) -> tuple[torch.Tensor, float]:
    """Mean row and mean row norm of ``hook`` over ``rows`` of ``index``, read shard by shard in float64."""
    shard = index.column("shard").to_numpy().astype(np.int64)[rows]
    local = index.column("row_in_shard").to_numpy().astype(np.int64)[rows]
    total = torch.zeros(store.hooks[hook][0], dtype=torch.float64)
    norms = 0.0
    for sid in np.unique(shard):
        x = store.read(hook, shard=int(sid), rows=local[shard == sid]).double()
        total += x.sum(0)
        norms += float(x.norm(dim=1).sum())
    return total / len(rows), norms / len(rows)


def mean_difference(
    store: Any,
    hook: str,
    group_a: dict[str, Any],
    group_b: dict[str, Any] | None = None,
    *,
    max_rows: int | None = None,
    seed: int = 0,
    normalize: bool = False,
    tasks: Any = None,
) -> SteeringVector:
    """Mean of ``hook``'s rows in ``group_a`` minus the mean of those in ``group_b`` (None: every other row);
    groups are index conditions (``{"role": "test_input", "colour": 3}``); ``max_rows`` caps each group
    (seeded sample); ``normalize`` returns a unit vector."""
    store = as_store(store)
    if hook not in store.hooks:
        raise SteeringError(f"{store.url}: hook {hook!r} is not in the store; it has {sorted(store.hooks)}")
    index = store.index()
    cache: dict[str, Any] = {}
    a = _group_mask(store, index, group_a, "group_a", tasks, cache)
    b = ~a if group_b is None else _group_mask(store, index, group_b, "group_b", tasks, cache)
    rng = np.random.default_rng(seed)
    picked = []
    for name, mask, cond in (("group_a", a, group_a), ("group_b", b, group_b)):
        rows = np.nonzero(mask)[0]
        if not len(rows):
            what = f"{cond!r}" if cond is not None else f"the rows outside group_a {group_a!r}"
            raise SteeringError(
                f"{store.url}: {name} {what} matches no rows of the store ({store.n_rows} rows); check the "
                "conditions against the index"
            )
        if max_rows is not None and len(rows) > max_rows:
            rows = np.sort(rng.choice(rows, size=max_rows, replace=False))
        picked.append(rows)
    (mean_a, norm_a), (mean_b, norm_b) = (_mean(store, hook, index, r) for r in picked)
    overlap = int(np.intersect1d(picked[0], picked[1]).size)
    b_text = f"{group_b!r}" if group_b is not None else "the other rows"
    vec = SteeringVector(
        hook,
        (mean_a - mean_b).float(),
        f"mean of {hook} on {group_a!r} ({len(picked[0])} rows) minus on {b_text} ({len(picked[1])} rows)",
        "mean_difference",
        {
            "store": store.url,
            "group_a": json_safe(group_a),
            "group_b": json_safe(group_b),
            "n_a": len(picked[0]),
            "n_b": len(picked[1]),
            "overlap": overlap,
            "mean_norm_a": norm_a,
            "mean_norm_b": norm_b,
            "max_rows": max_rows,
            "seed": seed,
        },
    )
    return _unit_or_raw(vec, normalize)


# ---- from a probe or an SAE ----------------------------------------------------------------------------


def probe_direction(result: ProbeResult, layer: str | int, cls: Any) -> SteeringVector:
    """The unit direction of class ``cls`` in the probe of ``layer`` (a hook name or layer number)."""
    hook = result.hook_name(layer)
    code = result.class_code(cls)
    i = result.hooks.index(hook)
    w = result.weights[hook][code]
    if float(w.norm()) == 0.0:
        raise SteeringError(
            f"probe of {result.target!r} at {hook}: class {cls!r} had no training rows, so it has no direction"
        )
    acc = float(result.accuracy[i])
    vec = SteeringVector(
        hook,
        w / w.norm(),
        f"probe direction of {result.target}={result.classes[code]!r} at {hook} (held-out accuracy {acc:.3f})",
        "probe",
        {
            "store": result.store,
            "target": result.target,
            "class": json_safe(result.classes[code]),
            "accuracy": acc if math.isfinite(acc) else None,
            "baseline": result.baseline,
            "norm": float(w.norm()),
        },
    )
    return vec


def sae_direction(
    sae: Any, latent: int, *, hook: str | None = None, normalize: bool = False
) -> SteeringVector:
    """Latent ``latent``'s decoder row ``W_dec[latent]`` (``[d_in]``) of an SAE, at its hook (or ``hook``);
    ``normalize`` returns a unit vector."""
    w_dec = getattr(sae, "W_dec", None)
    if not isinstance(w_dec, torch.Tensor) or w_dec.ndim != 2:
        raise SteeringError(
            f"sae_direction needs an SAE with a [d_sae, d_in] W_dec, got {type(sae).__name__}"
        )
    cfg = getattr(sae, "cfg", None)
    hook = hook or getattr(cfg, "hook", None)
    if not hook:
        raise SteeringError("the SAE names no hook it was trained on; pass hook=")
    n = w_dec.shape[0]
    if not 0 <= int(latent) < n:
        raise SteeringError(
            f"SAE at {hook}: latent {latent} is out of range; it has {n} latents (0..{n - 1})"
        )
    row = w_dec[int(latent)].detach()
    vec = SteeringVector(
        hook,
        row,
        f"decoder direction of SAE latent {int(latent)} at {hook}",
        "sae",
        {
            "latent": int(latent),
            "d_sae": int(n),
            "arch": getattr(cfg, "arch", None),
            "model": getattr(cfg, "model", None),
            "norm": float(row.float().norm()),
        },
    )
    return _unit_or_raw(vec, normalize)


# ---- files ---------------------------------------------------------------------------------------------


def save_vector(vec: SteeringVector, path: str | os.PathLike) -> str:
    """Write ``vec`` as a safetensors file (tensor ``vector``; hook, description, kind and meta as JSON in
    the header's metadata), atomically; return the path."""
    from arcscope.files import save_tensor_file

    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hook": vec.hook,
        "description": vec.description,
        "kind": vec.kind,
        "norm": vec.norm,
        "meta": json_safe(vec.meta),
    }
    return save_tensor_file(
        path, {"vector": vec.vector}, FORMAT, info, what="steering vector", error=SteeringError
    )


def load_vector(path: str | os.PathLike) -> SteeringVector:
    """Read a vector written by :func:`save_vector`."""
    from arcscope.files import load_tensor_file

    info, tensors = load_tensor_file(
        path, FORMAT, FORMAT_VERSION, what="steering vector", error=SteeringError
    )
    if "vector" not in tensors:
        raise SteeringError(f"{os.fspath(path)}: not an arcscope steering vector (it holds no vector)")
    return SteeringVector(
        str(info["hook"]),
        tensors["vector"],
        str(info.get("description", "")),
        str(info.get("kind", "custom")),
        dict(info.get("meta") or {}),
    )


__all__ = [
    "KINDS",
    "SteeringError",
    "SteeringVector",
    "load_vector",
    "mean_difference",
    "probe_direction",
    "sae_direction",
    "save_vector",
]
