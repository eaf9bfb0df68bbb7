"""Training M_{H,T} on a task, AlgZoo's recipe scaled down: AdamW, lr = lr_base / sqrt(H), linear warmup then
exponential decay to a floor, fresh random batches every step, best of N seeds on a validation set, and the
chosen model's metric measured on a separate held-out test set."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import numpy as np
import torch

import arcscope
from arcscope.progress import Progress, ProgressFn, emit
from arcscope.rnn.config import TrainConfig
from arcscope.rnn.model import ReluRNN, evaluate
from arcscope.rnn.tasks import get_task, make_dataset, sample_inputs
from arcscope.rnn.zoo import zoo_name

# Fixed data seeds for the validation and test sets: disjoint from every training stream (which use
# SeedSequence([seed, step-stream])) and the same for every seed tried, so the seeds compete on equal terms.
VAL_SEED = 2**40 + 1
TEST_SEED = 2**40 + 2


@dataclass
class TrainResult:
    """The chosen model, its card, and every seed's validation score."""

    model: ReluRNN
    card: dict
    val_scores: dict[int, float] = field(default_factory=dict)


def lr_multiplier(step: int, steps: int, warmup: int, floor: float) -> float:
    """Warmup to 1 over ``warmup`` steps, times an exponential decay reaching ``floor`` at the last step."""
    warm = min((step + 1) / max(warmup, 1), 1.0)
    return warm * max(floor ** (step / max(steps - 1, 1)), floor)


def train_command(cfg: TrainConfig) -> str:
    """The `arcscope rnn train` command line that runs ``cfg`` (non-default options only, besides the basics)."""
    import shlex

    default = TrainConfig()
    cmd = ["arcscope", "rnn", "train", "--task", get_task(cfg.task).name, "--hidden", str(cfg.hidden_size)]
    cmd += [
        "--seq-len",
        str(cfg.seq_len),
        "--seeds",
        str(cfg.seeds),
        "--seed",
        str(cfg.seed),
        "--steps",
        str(cfg.steps),
    ]
    for flag, name in (
        ("--batch-size", "batch_size"),
        ("--lr-base", "lr_base"),
        ("--weight-decay", "weight_decay"),
        ("--test-samples", "test_samples"),
    ):
        if getattr(cfg, name) != getattr(default, name):
            cmd += [flag, str(getattr(cfg, name))]
    if cfg.discrete:
        cmd.append("--discrete")
    return shlex.join(cmd)


PROGRESS_EVERY = 64
"""Training steps between progress events (reading the loss costs a sync, so not every step)."""


def train_seed(cfg: TrainConfig, seed: int, *, progress: ProgressFn | None = None) -> ReluRNN:
    """Train one model with ``seed`` (weights init and the training data stream) on one CPU thread.

    ``progress`` gets "train seed N" events (steps done, with the loss) every ``PROGRESS_EVERY`` steps.
    """
    threads = torch.get_num_threads()
    # One thread: tiny matmuls gain nothing from more, and a fixed thread count keeps the bytes reproducible.
    torch.set_num_threads(1)
    try:
        return _train_seed(cfg, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _train_seed(cfg: TrainConfig, seed: int, progress: ProgressFn | None) -> ReluRNN:
    spec = get_task(cfg.task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ReluRNN(cfg.hidden_size, spec.output_size(cfg.seq_len), seq_len=cfg.seq_len, task=spec.name)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr_base / cfg.hidden_size**0.5, weight_decay=cfg.weight_decay
    )
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(cfg.steps // 16, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_multiplier(s, cfg.steps, warmup, cfg.decay_min_mult)
    )
    stream = np.random.SeedSequence([seed, 0]).generate_state(1, np.uint64)[0]
    rng = np.random.Generator(np.random.PCG64(int(stream)))
    high = cfg.seq_len
    for step in range(cfg.steps):
        if cfg.discrete:
            x = rng.integers(0, high, size=(cfg.batch_size, cfg.seq_len)).astype(np.float32)
        else:
            x = rng.standard_normal((cfg.batch_size, cfg.seq_len), dtype=np.float32)
        y = spec.target(x)
        out = model(torch.from_numpy(x))
        if spec.kind == "classification":
            loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(np.ascontiguousarray(y)))
        else:
            loss = torch.mean((out[:, 0] - torch.from_numpy(y.astype(np.float32))) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and ((step + 1) % PROGRESS_EVERY == 0 or step == cfg.steps - 1):
            emit(progress, f"train seed {seed}", step + 1, cfg.steps, seed=seed, loss=float(loss.detach()))
    model.eval()
    return model


def _shift(progress: ProgressFn, label: str, offset: int, total: int, ev: Progress) -> None:
    progress(replace(ev, label=label, done=offset + ev.done, total=total))


def train(cfg: TrainConfig, *, progress: ProgressFn | None = None) -> TrainResult:
    """Train ``cfg.seeds`` seeds, keep the best on validation, and write its card (held-out metric included).

    ``progress`` gets "train NAME" events (steps over all seeds, with the seed and its loss).
    """
    cfg.validate()
    spec = get_task(cfg.task)
    x_val, y_val = make_dataset(spec, cfg.val_samples, cfg.seq_len, seed=VAL_SEED, discrete=cfg.discrete)
    better = max if spec.kind == "classification" else min
    scores: dict[int, float] = {}
    models: dict[int, ReluRNN] = {}
    label = f"train {zoo_name(spec.name, cfg.hidden_size, cfg.seq_len)}"
    for i in range(cfg.seeds):
        seed = cfg.seed + i
        # One bar over all seeds: steps of earlier seeds count towards this one's.
        shifted = None
        if progress is not None:
            shifted = partial(_shift, progress, label, i * cfg.steps, cfg.seeds * cfg.steps)
        models[seed] = train_seed(cfg, seed, progress=shifted)
        scores[seed] = evaluate(models[seed], x_val, y_val)
    best = better(scores, key=lambda s: (scores[s], -s))
    model = models[best]
    x_test = sample_inputs(cfg.test_samples, cfg.seq_len, seed=TEST_SEED, discrete=cfg.discrete)
    score = evaluate(model, x_test, spec.target(x_test))
    name = zoo_name(spec.name, cfg.hidden_size, cfg.seq_len)
    card = {
        "format": "arcscope.rnn/1",
        "name": name,
        "task": spec.name,
        "hidden_size": cfg.hidden_size,
        "seq_len": cfg.seq_len,
        "output_size": model.output_size,
        "params": model.n_params,
        "input": "discrete" if cfg.discrete else "continuous",
        "metric": spec.metric,
        spec.metric: round(score, 6),
        "test_samples": cfg.test_samples,
        "train_samples": cfg.steps * cfg.batch_size,
        "seed": best,
        "seeds_tried": sorted(scores),
        "val_" + spec.metric: {str(s): round(v, 6) for s, v in sorted(scores.items())},
        "val_samples": cfg.val_samples,
        "config": asdict(cfg),
        "trained_with": {
            "arcscope": arcscope.__version__,
            "torch": torch.__version__.split("+")[0],
            "python": platform.python_version(),
        },
    }
    card["command"] = train_command(cfg)
    model.card = card
    return TrainResult(model, card, scores)
