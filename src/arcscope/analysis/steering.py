"""Steering with a dose-response sweep: add ``coefficient x vector`` at a hook and watch the answer change.

A vector comes from :mod:`arcscope.analysis.vectors` (difference of group means, a probe direction, an SAE
decoder row) or is any ``[d]`` tensor. :func:`dose_response` runs one teacher-forced forward per batch of
coefficients (each batch row carries its own coefficient) and reports, per coefficient:

* the answer metric (mean over answer cells and per cell);
* the answer grid the model ranks first among colours at each cell, and how many cells differ from the
  unsteered answer and from the truth;
* how far the output distribution moved: mean KL(steered || unsteered) over answer positions, the mean
  probability of each colour, the fraction of positions whose top token changed.

Calibration, as in dose-response studies: with ``scale="norm"`` (the default) a coefficient is in units of
the mean activation norm at the hook over the steered positions, so 1.0 adds a vector as long as a typical
activation there and doses compare across hooks and models; ``scale="raw"`` uses the vector as given. The
result names the smallest dose that changes the answer grid and the dose at which the metric has moved half
way from its unsteered value to its value at the largest dose (``half_effect``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from arcscope.analysis.subject import AnalysisError, Metric, Subject, as_metric

DEFAULT_DOSES = (-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0)
"""Doses when none are given (norm units: multiples of the mean activation norm at the hook)."""
STEER_AT = ("all", "prompt", "answer", "test-input")
"""Where the vector is added: every position, the prompt before the answer, the answer tokens, the test
input grid's cell tokens."""


@dataclass
class DoseResponse:
    """What :func:`dose_response` measured, one entry per dose."""

    task_id: str
    hook: str
    vector_description: str
    metric: str
    doses: np.ndarray
    """float ``[D]`` as asked (in ``scale`` units)."""
    coefficients: np.ndarray
    """float ``[D]``: dose x unit, the multiple of the direction added (the unit direction for ``norm``, the
    vector as given for ``raw``)."""
    scale: str
    unit: float
    """What one dose unit is in activation units (the mean norm for ``norm``, 1 for ``raw``)."""
    value: np.ndarray
    """float ``[D]``: the metric."""
    per_cell: np.ndarray
    """float ``[D, K]``: the metric per answer cell."""
    grids: np.ndarray
    """int ``[D, h, w]``: the teacher-forced answer ranked first among colours (-1: no own token)."""
    changed_cells: np.ndarray
    """int ``[D]``: cells whose first-ranked colour differs from the unsteered run's."""
    wrong_cells: np.ndarray
    """int ``[D]``: cells that differ from the true answer."""
    kl: np.ndarray
    """float ``[D]``: mean KL(steered || unsteered) of the next-token distribution over answer positions."""
    top1_changed: np.ndarray
    """float ``[D]``: fraction of answer positions whose most likely token changed."""
    colour_probs: np.ndarray
    """float ``[D, 10]``: mean probability of each colour token over answer positions."""
    baseline: float
    """The unsteered metric."""
    answer_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    answer_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    truth: np.ndarray | None = None
    steer_at: str = "all"

    @property
    def first_change(self) -> float | None:
        """The smallest |dose| whose answer grid differs from the unsteered one (None: no dose changes it)."""
        hit = [abs(float(d)) for d, n in zip(self.doses, self.changed_cells, strict=True) if n > 0]
        return min(hit) if hit else None

    @property
    def half_effect(self) -> float | None:
        """The smallest positive dose at which the metric moved half way from the baseline to its value at the
        largest positive dose (linear interpolation between doses); None when there are no positive doses."""
        pos = np.flatnonzero(self.doses > 0)
        if not len(pos):
            return None
        order = pos[np.argsort(self.doses[pos])]
        d = np.concatenate([[0.0], self.doses[order]])
        v = np.concatenate([[self.baseline], self.value[order]])
        target = self.baseline + (v[-1] - self.baseline) / 2
        if v[-1] == self.baseline:
            return None
        sign = np.sign(v[-1] - self.baseline)
        for i in range(1, len(d)):
            if sign * (v[i] - target) >= 0:
                a, b = v[i - 1], v[i]
                t = 0.0 if b == a else (target - a) / (b - a)
                return float(d[i - 1] + t * (d[i] - d[i - 1]))
        return None

    def to_table(self):
        """One row per dose: dose, coefficient, metric, cells changed/wrong, KL, top-1 change, colour probs."""
        import pyarrow as pa

        cols = {
            "dose": self.doses,
            "coefficient": self.coefficients,
            "value": self.value,
            "changed_cells": self.changed_cells,
            "wrong_cells": self.wrong_cells,
            "kl": self.kl,
            "top1_changed": self.top1_changed,
        }
        for c in range(10):
            cols[f"p_colour_{c}"] = self.colour_probs[:, c]
        table = pa.table({k: np.asarray(v) for k, v in cols.items()})
        return table.append_column("hook", pa.array([self.hook] * len(self.doses)))

    def to_json(self) -> dict[str, Any]:
        """JSON-safe summary and arrays."""
        return {
            "kind": "steer",
            "task_id": self.task_id,
            "hook": self.hook,
            "vector": self.vector_description,
            "metric": self.metric,
            "scale": self.scale,
            "unit": self.unit,
            "steer_at": self.steer_at,
            "baseline": self.baseline,
            "first_change": self.first_change,
            "half_effect": self.half_effect,
            "doses": self.doses.tolist(),
            "coefficients": self.coefficients.tolist(),
            "value": self.value.tolist(),
            "per_cell": self.per_cell.tolist(),
            "grids": self.grids.tolist(),
            "truth": None if self.truth is None else np.asarray(self.truth).tolist(),
            "changed_cells": self.changed_cells.tolist(),
            "wrong_cells": self.wrong_cells.tolist(),
            "kl": self.kl.tolist(),
            "top1_changed": self.top1_changed.tolist(),
            "colour_probs": self.colour_probs.tolist(),
            "answer_rows": self.answer_rows.tolist(),
            "answer_cols": self.answer_cols.tolist(),
        }


def _vector(vector: Any, hook: str | None) -> tuple[torch.Tensor, str, str]:
    """(vector [d] float32, hook, description) from a SteeringVector-like object or a tensor."""
    if isinstance(vector, torch.Tensor | np.ndarray):
        if hook is None:
            raise AnalysisError("steering with a bare tensor needs hook=, the site to add it at")
        return torch.as_tensor(vector, dtype=torch.float32).reshape(-1), hook, "given vector"
    v = getattr(vector, "vector", None)
    if v is None:
        raise AnalysisError(
            f"cannot steer with {type(vector).__name__}: expected a SteeringVector or a tensor"
        )
    return (
        torch.as_tensor(v, dtype=torch.float32).reshape(-1),
        hook or vector.hook,
        getattr(vector, "description", "") or "steering vector",
    )


def steer_positions(subject: Subject, where: str) -> torch.Tensor:
    """Bool ``[T]`` mask of the positions a vector is added at (see STEER_AT)."""
    from arcscope.tasks.prompts import Role

    cmap = subject.cell_map
    T = len(cmap.input_ids)
    m = np.zeros(T, dtype=bool)
    if where == "all":
        m[:] = True
    elif where == "prompt":
        m[: subject.n_prompt] = True
    elif where == "answer":
        m[subject.n_prompt :] = True
    elif where == "test-input":
        m = cmap.mask(Role.TEST_INPUT, cells_only=True)
    else:
        raise AnalysisError(f"steer at {where!r}: expected one of {', '.join(STEER_AT)}")
    if not m.any():
        raise AnalysisError(f"task {subject.task_id}: no position to steer at ({where})")
    return torch.as_tensor(m)


@torch.no_grad()
def dose_response(
    subject: Subject,
    vector: Any,
    *,
    hook: str | None = None,
    doses: Sequence[float] = DEFAULT_DOSES,
    scale: str = "norm",
    at: str = "all",
    metric: Metric | str | None = None,
    batch_size: int = 8,
) -> DoseResponse:
    """Add ``dose x unit x direction`` at ``hook`` for each dose and measure the answer (module docstring)."""
    from arcscope.capture import Intervention, capture, intervene, resolve_hooks

    if scale not in ("norm", "raw"):
        raise AnalysisError(f"scale {scale!r}: expected norm or raw")
    if batch_size < 1:
        raise AnalysisError("batch_size must be at least 1")
    met = as_metric(metric)
    vec, hook, desc = _vector(vector, hook)
    model = subject.model
    sites = resolve_hooks(model, hook)
    if len(sites) != 1:
        raise AnalysisError(f"hook {hook!r} names {len(sites)} sites; steer one site at a time")
    site = sites[0]
    if site.d is not None and site.d != vec.numel():
        raise AnalysisError(f"the vector has {vec.numel()} entries but {site.name} is {site.d} wide")
    mask = steer_positions(subject, at)
    doses_a = np.asarray(list(doses), dtype=np.float64)
    if not len(doses_a):
        raise AnalysisError("give at least one dose")
    ids = subject.input_ids
    dev = ids.device

    with capture(model, [site], mask[None].to(dev), record_coords=False) as cap:
        base_logits = subject.logits()
    acts = cap[site.name].float()
    if scale == "norm":
        unit = float(acts.norm(dim=-1).mean())
        direction = vec / vec.norm().clamp(min=1e-12)
    else:
        unit = 1.0
        direction = vec
    coefs = doses_a * unit
    base_lp = torch.log_softmax(base_logits[0].float(), -1)
    base_top = base_lp.argmax(-1)
    base_grid = subject.predicted_grid(base_logits)
    truth = np.asarray(subject.task.test[subject.test_index].output)
    colour_ids = torch.as_tensor(subject.answer.colour_ids, device=dev)

    values, per_cell, grids, kls, top1, cprobs = [], [], [], [], [], []
    T = ids.shape[1]
    for a in range(0, len(coefs), batch_size):
        chunk = coefs[a : a + batch_size]
        B = len(chunk)
        c = torch.as_tensor(chunk, dtype=torch.float32, device=dev)
        add = (c[:, None, None] * direction.to(dev)[None, None, :]).expand(B, T, -1)
        pos = mask[None].expand(B, -1).to(dev)
        iv = Intervention(site, "add", add.to(acts.dtype), positions=pos)
        with intervene(model, [iv]):
            logits = subject.logits(subject.batch(B))
        values.append(met(logits, subject.answer).cpu().numpy())
        per_cell.append(met.per_cell(logits, subject.answer).cpu().numpy())
        lp = torch.log_softmax(logits.float(), -1)
        kls.append((lp.exp() * (lp - base_lp[None])).sum(-1).mean(-1).cpu().numpy())
        top1.append((lp.argmax(-1) != base_top[None]).float().mean(-1).cpu().numpy())
        probs = lp.exp().gather(-1, colour_ids.clamp(min=0)[None].expand(B, -1, -1))
        probs = probs.masked_fill(colour_ids[None] < 0, 0.0)
        cprobs.append(probs.mean(1).cpu().numpy())
        for b in range(B):
            grids.append(subject.predicted_grid(logits[b : b + 1]))
    grids_a = np.stack(grids)
    known = base_grid >= 0
    changed = np.array([int(((g != base_grid) & known).sum()) for g in grids_a])
    wrong = (
        np.array([int(((g != truth) & known).sum()) for g in grids_a])
        if truth.shape == base_grid.shape
        else changed * 0
    )
    return DoseResponse(
        task_id=subject.task_id,
        hook=site.name,
        vector_description=desc,
        metric=met.label,
        doses=doses_a,
        coefficients=coefs,
        scale=scale,
        unit=unit,
        value=np.concatenate(values).astype(np.float64),
        per_cell=np.concatenate(per_cell).astype(np.float64),
        grids=grids_a,
        changed_cells=changed,
        wrong_cells=wrong,
        kl=np.concatenate(kls).astype(np.float64),
        top1_changed=np.concatenate(top1).astype(np.float64),
        colour_probs=np.concatenate(cprobs).astype(np.float64),
        baseline=float(met(base_logits, subject.answer)[0]),
        answer_rows=subject.answer.row,
        answer_cols=subject.answer.col,
        truth=truth,
        steer_at=at,
    )
