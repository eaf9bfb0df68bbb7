"""Evaluation: token and exact accuracy, halting, and for ARC the full protocol (invert, vote, pass@k, submission).

Every test sequence runs ``halt_max_steps`` ACT steps, as in the original evaluation. Two answers are kept
per sequence: the one after the last step (what the original reports) and the one at the step where the
Q head first said "halt" (what an adaptive run would answer); the step itself goes into the halting
histogram.

For ARC (a dataset built by :func:`arcscope.puzzles.build_arc`), each test prediction is decoded from its
30x30 canvas, mapped back through the inverse of its puzzle's augmentation (from the identifier name),
and the candidates for one test input are ranked by :func:`arcscope.tasks.vote`: most votes first, ties
broken by the mean halting confidence ``sigmoid(q_halt)``. pass@1/2/k and the official score come from
:func:`arcscope.tasks.score`; the top two attempts make a Kaggle ``submission.json``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from arcscope.errors import ArcscopeError, DecodeError
from arcscope.files import atomic_write_json
from arcscope.puzzles.layout import PuzzleDataset, PuzzleSplit
from arcscope.reasoning.act import ACTModel
from arcscope.reasoning.data import eval_batches
from arcscope.reasoning.losses import IGNORE_LABEL_ID

__all__ = ["Predictions", "EvalResult", "evaluate_split", "arc_report", "evaluate"]


@dataclass
class Predictions:
    """Per test example (file order): answers, halting logits and halting step."""

    set_names: list[str]
    examples: np.ndarray
    final: np.ndarray
    """[N, seq_len] predicted token ids after the last ACT step."""
    adaptive: np.ndarray
    """[N, seq_len] predicted token ids at the first halt signal (the last step when it never came)."""
    q_halt: np.ndarray
    """[N] q_halt logit after the last step."""
    q_halt_adaptive: np.ndarray
    """[N] q_halt logit at the halting step."""
    halt_step: np.ndarray
    """[N] ACT step (1-based) of the first halt signal, ``halt_max_steps`` when it never came."""


@dataclass
class EvalResult:
    """Figures of one evaluation (``metrics``), the halting histogram and, when kept, the predictions."""

    metrics: dict[str, float]
    halt_histogram: dict[int, int]
    predictions: Predictions | None = None
    arc: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (no predictions)."""
        d: dict[str, Any] = {
            "metrics": self.metrics,
            "halt_histogram": {str(k): v for k, v in self.halt_histogram.items()},
        }
        if self.arc is not None:
            d["arc"] = self.arc
        d.update(self.extras)
        return d


def _dist_ready(world_size: int) -> bool:
    return world_size > 1 and dist.is_available() and dist.is_initialized()


@torch.inference_mode()
def evaluate_split(
    model: ACTModel,
    split: PuzzleSplit,
    *,
    global_batch_size: int = 256,
    device: torch.device | str | None = None,
    rank: int = 0,
    world_size: int = 1,
    max_batches: int | None = None,
    keep_predictions: bool = False,
) -> EvalResult:
    """Run every test example for ``halt_max_steps`` ACT steps; token/exact accuracy, halting figures.

    ``device`` (where batches go) defaults to the model's own device."""
    device = next(model.parameters()).device if device is None else device
    was_training = model.training
    model.eval()
    max_steps = model.config.halt_max_steps
    sums = defaultdict(float)
    hist = np.zeros(max_steps + 1, dtype=np.int64)
    keep: dict[str, list[np.ndarray]] = defaultdict(list)
    set_names: list[str] = []
    for batch in eval_batches(
        split, global_batch_size, rank=rank, world_size=world_size, max_batches=max_batches
    ):
        t = batch.to(device)
        carry = model.initial_carry(t)
        n = t["inputs"].shape[0]
        halt_step = torch.full((n,), max_steps, dtype=torch.long, device=device)
        seen = torch.zeros(n, dtype=torch.bool, device=device)
        adaptive = None
        q_adapt = torch.zeros(n, device=device)
        for step in range(1, max_steps + 1):
            carry, out = model(carry, t)
            preds = out["logits"].argmax(-1)
            if adaptive is None:
                adaptive = preds.clone()
            fire = model.halt_signal(out["q_halt_logits"], out["q_continue_logits"]) & ~seen
            if step == max_steps:
                fire = ~seen
            adaptive[fire] = preds[fire]
            q_adapt[fire] = out["q_halt_logits"][fire].float()
            halt_step[fire] = step
            seen |= fire
            if bool(carry.halted.all()):
                break
        labels = carry.current_data["labels"]
        real = torch.from_numpy(batch.examples >= 0).to(device)
        mask = labels != IGNORE_LABEL_ID
        counts = mask.sum(-1)
        valid = real & (counts > 0)
        div = counts.clamp_min(1)
        for tag, p, q in (("", preds, out["q_halt_logits"]), ("adaptive_", adaptive, q_adapt)):
            correct = mask & (p == labels)
            exact = correct.sum(-1) == counts
            sums[tag + "accuracy"] += float(torch.where(valid, correct.sum(-1) / div, 0).sum())
            sums[tag + "exact_accuracy"] += float((valid & exact).sum())
            sums[tag + "q_halt_accuracy"] += float((valid & ((q >= 0) == exact)).sum())
        sums["steps"] += float(torch.where(valid, halt_step, 0).sum())
        sums["count"] += float(valid.sum())
        hs = halt_step[valid].cpu().numpy()
        hist += np.bincount(hs, minlength=max_steps + 1)[: max_steps + 1]
        if keep_predictions:
            r = batch.examples >= 0
            keep["examples"].append(batch.examples[r])
            keep["final"].append(preds[real].cpu().numpy().astype(np.uint8))
            keep["adaptive"].append(adaptive[real].cpu().numpy().astype(np.uint8))
            keep["q_halt"].append(out["q_halt_logits"][real].float().cpu().numpy())
            keep["q_halt_adaptive"].append(q_adapt[real].cpu().numpy())
            keep["halt_step"].append(halt_step[real].cpu().numpy())
            set_names += [batch.set_name] * int(r.sum())
    if _dist_ready(world_size):
        keys = sorted(sums)
        vec = torch.tensor([sums[k] for k in keys] + hist.tolist(), dtype=torch.float64, device=device)
        dist.all_reduce(vec)
        sums = defaultdict(float, dict(zip(keys, vec[: len(keys)].tolist(), strict=True)))
        hist = vec[len(keys) :].cpu().numpy().astype(np.int64)
    count = max(sums.pop("count", 0.0), 1.0)
    metrics = {k: v / count for k, v in sums.items()}
    metrics["count"] = int(count)
    preds_out = None
    if keep_predictions:
        cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in keep.items()}
        if _dist_ready(world_size):
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, (cat, set_names))
            cat = {k: np.concatenate([g[0][k] for g in gathered]) for k in cat}
            set_names = [s for g in gathered for s in g[1]]
        order = np.argsort(cat.get("examples", np.zeros(0)), kind="stable")
        preds_out = Predictions(
            set_names=[set_names[i] for i in order],
            **{k: v[order] for k, v in cat.items()},
        )
    if was_training:
        model.train()
    return EvalResult(metrics, {s: int(c) for s, c in enumerate(hist.tolist()) if s > 0}, preds_out)


def arc_report(
    dataset: PuzzleDataset,
    preds: Predictions,
    *,
    ks: tuple[int, ...] = (1, 2),
    adaptive: bool = False,
    tasks: Any = None,
    submission: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Invert, vote, score (official metric, pass@k) and optionally write ``submission.json`` for an ARC test split."""
    from arcscope.puzzles.arc import parse_puzzle_name
    from arcscope.tasks import (
        Pair,
        Task,
        TaskSet,
        load,
        predictions_from_votes,
        score,
        vote,
        write_submission,
    )
    from arcscope.tasks.hrm import hrm_decode

    if dataset.identifiers is None:
        raise ArcscopeError(
            f"{dataset.path}: ARC evaluation needs identifiers.json to map puzzles back to tasks"
        )
    split = dataset["test"]
    s = split.sets["all"]
    owner = s.puzzle_of_examples()
    pi = np.asarray(s.puzzle_indices)
    answers = preds.adaptive if adaptive else preds.final
    qs = preds.q_halt_adaptive if adaptive else preds.q_halt
    cands: dict[tuple[str, int], list[tuple[Any, Any, float]]] = defaultdict(list)
    gold: dict[str, dict[int, Pair]] = defaultdict(dict)
    undecodable = 0
    for row, ex in enumerate(preds.examples.tolist()):
        p = int(owner[ex])
        name = dataset.identifier_name(int(s.puzzle_identifiers[p]))
        task_id, aug = parse_puzzle_name(name)
        test_index = ex - int(pi[p])
        try:
            grid = hrm_decode(answers[row], strict=False)
        except DecodeError:
            grid = None
            undecodable += 1
        conf = float(1.0 / (1.0 + np.exp(-float(qs[row]))))
        cands[(task_id, test_index)].append((aug, grid, conf))
        if aug.canonical().name == "id" and tasks is None:
            inp = hrm_decode(np.asarray(s.inputs[ex]))
            lab = np.asarray(s.labels[ex])
            out = hrm_decode(lab) if lab.any() else None
            gold[task_id][test_index] = Pair(inp, out)
    if tasks is not None:
        task_set = load(tasks) if not isinstance(tasks, TaskSet) else tasks
    else:
        task_set = TaskSet(
            [Task(tid, (), tuple(pairs[i] for i in sorted(pairs))) for tid, pairs in gold.items()],
            name=str(dataset.path),
        )
    votes: dict[str, list[list[Any]]] = {}
    n_tests: dict[str, int] = defaultdict(int)
    for tid, i in cands:
        n_tests[tid] = max(n_tests[tid], i + 1)
    for tid, n in n_tests.items():
        votes[tid] = [vote(cands.get((tid, i), [])) for i in range(n)]
    k_max = max(max(ks), 2)
    predictions = predictions_from_votes(votes, attempts=k_max)
    report = score(task_set, predictions, max_attempts=2, ks=ks, only_predicted=True)
    out = {
        "score": report.score,
        "pass_at_k": {str(k): v for k, v in report.pass_at.items()},
        "task_accuracy": report.task_accuracy,
        "output_accuracy": report.output_accuracy,
        "tasks": report.n_tasks,
        "test_outputs": report.n_outputs,
        "candidates": int(len(preds.examples)),
        "undecodable": undecodable,
        "mean_votes_top": float(np.mean([v[0].votes for per in votes.values() for v in per if v]))
        if votes
        else 0.0,
        "answers": "adaptive" if adaptive else "final",
    }
    if submission is not None:
        path = write_submission(submission, predictions_from_votes(votes, attempts=2), attempts=2)
        out["submission"] = str(path)
    return out


def evaluate(
    model: ACTModel,
    dataset: PuzzleDataset | str | os.PathLike[str],
    *,
    split: str = "test",
    global_batch_size: int = 256,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
    ks: tuple[int, ...] = (1, 2),
    adaptive: bool = False,
    tasks: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> EvalResult:
    """Evaluate ``model`` on a dataset split; ARC datasets also get the voting protocol and a submission."""
    from arcscope.puzzles.layout import open_dataset

    ds = dataset if isinstance(dataset, PuzzleDataset) else open_dataset(dataset)
    sp = ds[split]
    meta = sp.metadata
    cfg = model.config
    too_many_ids = cfg.puzzle_emb_dim > 0 and meta.num_puzzle_identifiers > cfg.num_puzzle_identifiers
    if (meta.seq_len, meta.vocab_size) != (cfg.seq_len, cfg.vocab_size) or too_many_ids:
        raise ArcscopeError(
            f"{sp.path}: the dataset (seq_len {meta.seq_len}, vocab {meta.vocab_size}, "
            f"{meta.num_puzzle_identifiers} identifiers) does not fit the model (seq_len {cfg.seq_len}, "
            f"vocab {cfg.vocab_size}, {cfg.num_puzzle_identifiers} identifiers)"
        )
    is_arc = ds.kind == "arc" and split == "test"
    res = evaluate_split(
        model,
        sp,
        global_batch_size=global_batch_size,
        device=device,
        rank=rank,
        world_size=world_size,
        max_batches=max_batches,
        keep_predictions=is_arc,
    )
    if is_arc and rank == 0 and res.predictions is not None:
        sub = Path(out_dir) / "submission.json" if out_dir is not None else None
        res.arc = arc_report(ds, res.predictions, ks=ks, adaptive=adaptive, tasks=tasks, submission=sub)
    if out_dir is not None and rank == 0:
        p = Path(out_dir)
        p.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p / "eval.json", res.to_dict(), indent=1)
    return res
