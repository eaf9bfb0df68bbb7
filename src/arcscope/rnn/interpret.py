"""Standardisation, neuron ablation and neuron probing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from arcscope.progress import ProgressFn, emit
from arcscope.rnn.errors import RnnError
from arcscope.rnn.model import ReluRNN, as_inputs, forward, trace
from arcscope.rnn.tasks import Task, get_task, sample_inputs

# ----------------------------------------------------------------------------------------------------------
# Standardisation
# ----------------------------------------------------------------------------------------------------------


def standardize(model: ReluRNN) -> ReluRNN:
    """An equivalent model with |W_ih[j]| = 1 for every neuron (the sign says excited or inhibited by x_t).

    Neuron j is rescaled by s_j = |W_ih[j]| > 0: W_ih[j] /= s_j, W_hh[j, k] *= s_k / s_j, W_out[:, j] *= s_j.
    ReLU commutes with positive scaling, so every hidden state is divided by s_j and the output is unchanged
    (exactly in real arithmetic; float32 storage rounds each weight once). The scales go into the card.
    """
    w = model.weights()
    s = np.abs(w.w_ih)
    dead = np.flatnonzero(s == 0)
    if len(dead):
        raise RnnError(
            f"{model.name}: neuron(s) {', '.join(map(str, dead))} have W_ih = 0 (no direct input); "
            "standardisation rescales by |W_ih[j]| and cannot divide by zero"
        )
    card = dict(model.card)
    card["standardized"] = True
    card["scales"] = [float(v) for v in s]
    if "name" in card:
        card["name"] = f"{card['name']}-std"
    return ReluRNN.from_weights(
        w.w_ih / s,
        w.w_hh * s[None, :] / s[:, None],
        w.w_out * s[None, :],
        seq_len=model.seq_len,
        task=model.task,
        card=card,
    )


def standardization_quality(model: ReluRNN) -> float:
    """Largest deviation of |W_ih[j]| from 1 (0.0 for a standardised model)."""
    return float(np.max(np.abs(np.abs(model.weights().w_ih) - 1.0)))


# ----------------------------------------------------------------------------------------------------------
# Ablation
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ablation:
    """One ablation: the neurons zeroed, the metric with them zeroed, and how much worse that is."""

    neurons: tuple[int, ...]
    score: float
    drop: float
    """Damage: accuracy lost (classification) or RMSE gained (median); negative means it helped."""
    interaction: float | None = None
    """For pairs: drop(pair) - drop(a) - drop(b). > 0: both together hurt more than the two alone add up to
    (each backs the other up); < 0: the damage overlaps or saturates."""


@dataclass
class AblationReport:
    """Baseline metric and every single-neuron (and pair) ablation, most damaging first."""

    task: str
    metric: str
    n_inputs: int
    baseline: float
    singles: list[Ablation] = field(default_factory=list)
    pairs: list[Ablation] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form."""

        def row(a: Ablation) -> dict:
            d = {"neurons": list(a.neurons), self.metric: a.score, "drop": a.drop}
            if a.interaction is not None:
                d["interaction"] = a.interaction
            return d

        return {
            "task": self.task,
            "metric": self.metric,
            "n_inputs": self.n_inputs,
            "baseline": self.baseline,
            "singles": [row(a) for a in self.singles],
            "pairs": [row(a) for a in self.pairs],
        }


def _task_of(model: ReluRNN, task: str | Task | None) -> Task:
    t = get_task(task) if task else model.task_spec
    if t is None:
        raise RnnError(f"{model.name}: the task is unknown (no card); pass task= (CLI: --task)")
    return t


def ablate(
    model: ReluRNN,
    inputs: Any = None,
    *,
    task: str | Task | None = None,
    n: int = 100_000,
    seed: int = 0,
    pairs: bool = True,
    sets: Sequence[Sequence[int]] | None = None,
    progress: ProgressFn | None = None,
) -> AblationReport:
    """Zero each neuron (its hidden state at every step), then each pair, and measure the metric's drop.

    ``inputs`` default to ``n`` seeded standard-normal sequences; the targets come from the task's ground
    truth. ``sets`` replaces the singles and pairs with the given neuron sets. ``progress`` gets an
    "ablate" event after each ablation.
    """
    spec = _task_of(model, task)
    steps = model.require_seq_len()
    x = as_inputs(model, sample_inputs(n, steps, seed=seed) if inputs is None else inputs)
    y = spec.target(x)
    baseline = spec.score(forward(model, x), y)
    report = AblationReport(spec.name, spec.metric, len(x), baseline)

    hid = model.hidden_size
    total = len(sets) if sets is not None else hid + (hid * (hid - 1) // 2 if pairs else 0)
    done = [0]

    def run(neurons: Sequence[int]) -> Ablation:
        score = spec.score(forward(model, x, zero=neurons), y)
        done[0] += 1
        emit(progress, "ablate", done[0], total)
        return Ablation(tuple(int(j) for j in neurons), score, spec.worse(baseline, score))

    if sets is not None:
        report.singles = sorted((run(s) for s in sets), key=lambda a: (-a.drop, a.neurons))
        return report
    singles = {j: run([j]) for j in range(model.hidden_size)}
    report.singles = sorted(singles.values(), key=lambda a: (-a.drop, a.neurons))
    if pairs:
        rows = []
        for a, b in combinations(range(model.hidden_size), 2):
            r = run([a, b])
            rows.append(Ablation(r.neurons, r.score, r.drop, r.drop - singles[a].drop - singles[b].drop))
        report.pairs = sorted(rows, key=lambda a: (-a.drop, a.neurons))
    return report


def ablated(model: ReluRNN, neurons: Sequence[int]) -> ReluRNN:
    """A copy of the model whose listed neurons are removed (their in, recurrent and out weights zeroed)."""
    w = model.weights()
    ih, hh, out = w.w_ih.copy(), w.w_hh.copy(), w.w_out.copy()
    for j in neurons:
        if not 0 <= j < model.hidden_size:
            raise RnnError(f"neuron {j} does not exist in {model.name} (H={model.hidden_size})")
        ih[j] = 0
        hh[j, :] = 0
        hh[:, j] = 0
        out[:, j] = 0
    return ReluRNN.from_weights(ih, hh, out, seq_len=model.seq_len, task=model.task, card=dict(model.card))


# ----------------------------------------------------------------------------------------------------------
# Probing
# ----------------------------------------------------------------------------------------------------------


def probe_features(x: np.ndarray) -> dict[str, tuple[str, np.ndarray]]:
    """Candidate features of the prefix x[0..t] at each step: name -> (role, values ``[n, T]``)."""
    n, steps = x.shape
    run_max = np.maximum.accumulate(x, axis=1)
    run_min = np.minimum.accumulate(x, axis=1)
    prev = np.concatenate([np.zeros((n, 1)), x[:, :-1]], axis=1)
    prev_max = np.concatenate([np.full((n, 1), -np.inf), run_max[:, :-1]], axis=1)
    # Second-largest of the prefix; at t = 0 there is none, so use x_0 (step 0 is left out of the scores).
    second = np.empty_like(x)
    second[:, 0] = x[:, 0]
    if steps > 1:
        top2 = np.sort(x[:, :2], axis=1)
        second[:, 1] = top2[:, 0]
        best, nxt = top2[:, 1].copy(), top2[:, 0].copy()
        for t in range(2, steps):
            v = x[:, t]
            nxt = np.where(v > best, best, np.maximum(nxt, v))
            best = np.maximum(best, v)
            second[:, t] = nxt
    base = {
        "max(x[0..t])": ("running-max", run_max),
        "min(x[0..t])": ("running-min", run_min),
        "x[t]": ("recent-input", x),
        "x[t-1]": ("previous-input", prev),
        "second-max(x[0..t])": ("running-second-max", second),
        "x[t] - max(x[0..t-1])": ("max-increment", np.where(np.isfinite(prev_max), x - prev_max, 0.0)),
        "max(x[0..t]) - x[t]": ("comparator", run_max - x),
        "x[t] - x[t-1]": ("comparator", x - prev),
        "max - second-max(x[0..t])": ("comparator", run_max - second),
        "mean(x[0..t])": ("running-mean", np.cumsum(x, axis=1) / np.arange(1, steps + 1)),
    }
    feats = {}
    for name, (role, v) in base.items():
        feats[name] = (role, v)
        feats[f"relu({name})"] = (role, np.maximum(v, 0))
        feats[f"relu(-({name}))"] = (role, np.maximum(-v, 0))
    return feats


@dataclass(frozen=True)
class NeuronProbe:
    """What one neuron tracks: the best-correlated feature, its role, the signed correlation and |r|."""

    neuron: int
    role: str
    feature: str
    correlation: float
    score: float
    active_fraction: float
    runner_up: tuple[str, float] | None = None


@dataclass
class ProbeReport:
    """Per-neuron probe results (ordered by neuron), from ``n_inputs`` sequences."""

    n_inputs: int
    threshold: float
    neurons: list[NeuronProbe]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "n_inputs": self.n_inputs,
            "threshold": self.threshold,
            "neurons": [
                {
                    "neuron": p.neuron,
                    "role": p.role,
                    "feature": p.feature,
                    "correlation": p.correlation,
                    "score": p.score,
                    "active_fraction": p.active_fraction,
                    "runner_up": list(p.runner_up) if p.runner_up else None,
                }
                for p in self.neurons
            ],
        }


def probe(
    model: ReluRNN, inputs: Any = None, *, n: int = 20_000, seed: int = 0, threshold: float = 0.8
) -> ProbeReport:
    """Classify each neuron by the candidate feature its hidden state correlates with best (Pearson |r|).

    Hidden states at steps 1..T-1 of every input are pooled (step 0 is relu(W_ih x_0) for every model);
    below ``threshold`` the role is ``unknown``, and a neuron that never varies is ``dead``.
    """
    steps = model.require_seq_len()
    x = as_inputs(model, sample_inputs(n, steps, seed=seed) if inputs is None else inputs)
    hidden = trace(model, x).hidden
    lo = 1 if steps > 1 else 0
    feats = probe_features(x)
    names = list(feats)
    f = np.stack([feats[k][1][:, lo:].reshape(-1) for k in names])
    h = hidden[:, lo:].reshape(-1, model.hidden_size).T
    fc = f - f.mean(axis=1, keepdims=True)
    hc = h - h.mean(axis=1, keepdims=True)
    fs = np.sqrt((fc**2).sum(axis=1))
    hs = np.sqrt((hc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (hc @ fc.T) / (hs[:, None] * fs[None, :])
    corr = np.nan_to_num(corr)
    out = []
    for j in range(model.hidden_size):
        active = float((hidden[:, :, j] > 0).mean())
        if hs[j] <= 1e-12 * max(1.0, float(np.abs(h[j]).max())):
            out.append(NeuronProbe(j, "dead", "-", 0.0, 0.0, active))
            continue
        order = np.argsort(-np.abs(corr[j]), kind="stable")
        best = names[order[0]]
        score = float(abs(corr[j, order[0]]))
        # The runner-up is the best feature of a different role, so the margin between explanations shows.
        runner = next(
            ((names[i], float(corr[j, i])) for i in order[1:] if feats[names[i]][0] != feats[best][0]), None
        )
        role = feats[best][0] if score >= threshold else "unknown"
        out.append(NeuronProbe(j, role, best, float(corr[j, order[0]]), score, active, runner))
    return ProbeReport(len(x), threshold, out)
