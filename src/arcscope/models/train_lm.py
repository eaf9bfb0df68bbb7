"""Train the ARC organism (a small Llama, :mod:`arcscope.models.organism`) from scratch on tasks, in context.

Each example is one task written by ``build_prompt`` (train pairs, then the test input) followed by the
test output and EOS; the loss is the cross-entropy of the answer tokens and EOS only (``loss_on_outputs``
adds the demonstration outputs after the first, each predictable from the pairs before it, for more
signal per token of compute). Examples stream in
epochs of a seeded permutation (optionally augmented and with pairs rotated), are read ``sort_window`` at a
time, sorted by length and cut into batches of at most ``batch_tokens`` padded tokens (right padding, no
attention mask: causal attention never looks at the padding after a sequence), whose order is shuffled.

Output folder::

    out/config.json, model.safetensors, tokenizer.json, ...   the trained model: an HF folder (load_model)
    out/training.json     summary: settings, data, steps, tokens, time, last metrics and evaluation
    out/metrics.jsonl     one record every ``log_every`` steps, and one per evaluation
    out/run.json          the run's identity, written first: a run killed before its first checkpoint restarts
    out/checkpoints/step_NNNNNNNN/   an HF folder of the model so far + state.safetensors + state.json

Resume is exact: a checkpoint appears whole or not at all (:func:`arcscope.files.replace_dir`) and holds
the weights, AdamW's moments, torch's RNG state, the data position (chunk and batch) and the metric sums
since the last record; the data stream is a pure function of the seed. A run killed at any moment and
resumed trims ``metrics.jsonl`` back to its checkpoint and ends with the same bytes as an uninterrupted run
(on the same machine and thread count), but for the wall-clock fields ``tokens_per_s`` and ``elapsed_s``.

Evaluation (every ``eval_every`` steps and at the end) decodes greedily on held-out tasks and counts an
answer exact when the model writes EOS within the gold answer's token count plus one and the text before
it parses (``parse_response``) to the gold grid; accuracy is reported per task family when tasks name one
(``meta["family"]``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from arcscope.files import atomic_write_json, atomic_write_text, remove_leftovers, replace_dir, temp_name
from arcscope.models.device import resolve_device, resolve_dtype
from arcscope.models.loading import _offline_env
from arcscope.models.organism import (
    EOS_ID,
    PAD_ID,
    OrganismError,
    TrainLMConfig,
    build_model,
    build_tokenizer,
    save_organism,
    template_markers,
)
from arcscope.progress import ProgressFn, emit
from arcscope.tasks.core import Pair, Task, TaskSet, grids_equal

__all__ = ["TrainLMResult", "encode_examples", "evaluate", "train_lm"]

STATE_VERSION = 1
SUMMARY_FILE = "training.json"
METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"
CKPT_DIR = "checkpoints"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
"""Files of the final HF folder (the ones a fresh start or --overwrite removes)."""


@dataclass
class TrainLMResult:
    """What a training run produced."""

    out: Path
    steps: int
    total_steps: int
    tokens: int
    """Token positions trained on in this session (padding excluded)."""
    seconds: float
    complete: bool
    resumed_from: int | None = None
    already_complete: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    """The last metrics record (loss, lr, tokens_per_s)."""
    evaluation: dict[str, Any] = field(default_factory=dict)
    """The last evaluation: accuracy, correct, n and per-family [correct, n]."""
    skipped_long: int = 0
    """Training examples left out (over the whole run so far) for being longer than max_len."""
    model: Any = None
    """The trained model (on its training device, eval mode) when this call trained, else None."""

    @property
    def tokens_per_s(self) -> float:
        """Token positions trained per second in this session."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------- data


def _known_pairs(task: Task) -> list[Pair]:
    return list(task.train) + [p for p in task.test if p.output is not None]


def _choices(task: Task, rotate: bool) -> list[int]:
    """The examples of a task: indices into its known pairs of the pair used as the test."""
    n_train, known = len(task.train), _known_pairs(task)
    if rotate and len(known) >= 2:
        return list(range(len(known)))
    return list(range(n_train, len(known)))


def _view(task: Task, k: int) -> Task:
    """``task`` with known pair ``k`` as its one test pair and the other known pairs as demonstrations
    (for a test pair: the task's own train pairs)."""
    known = _known_pairs(task)
    if k >= len(task.train):
        return Task(task.id, task.train, (known[k],), dict(task.meta))
    rest = tuple(p for j, p in enumerate(known) if j != k)
    return Task(task.id, rest, (known[k],), dict(task.meta))


def encode_examples(
    tasks: list[Task],
    tokenizer: Any,
    encoder: str = "minimal",
    template: str = "default",
    *,
    outputs: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each task (its test pair 0 as the answer) as ``(ids, target_mask)``: BOS, prompt, answer, EOS.

    The mask marks the tokens the loss is taken on: the answer and EOS, and with ``outputs`` also every
    demonstration output after the first with the token that ends it (each follows from the pairs before).
    """
    from arcscope.tasks.prompts import Role, build_prompt

    prompts = [
        build_prompt(t, encoder, None, 0, include_answer=True, template=template, chat=False) for t in tasks
    ]
    enc = tokenizer([p.text for p in prompts], return_offsets_mapping=True)
    out = []
    for p, ids, offs in zip(prompts, enc["input_ids"], enc["offset_mapping"], strict=True):
        starts = np.fromiter((a for a, _ in offs), dtype=np.int64, count=len(offs))
        ends = np.fromiter((b for _, b in offs), dtype=np.int64, count=len(offs))
        real = ends > starts
        mask = (starts >= p.answer_start) & real
        if outputs:
            for seg in p.segments:
                if seg.role is Role.TRAIN_OUTPUT and seg.pair >= 1:
                    mask |= (starts >= seg.start) & (starts < seg.end) & real
                    after = int(np.searchsorted(starts, seg.end))
                    if after < len(mask):
                        mask[after] = True
        out.append((np.append(np.asarray(ids, dtype=np.int64), EOS_ID), np.append(mask, True)))
    return out


def _augmenter(cfg: TrainLMConfig):
    if not cfg.augment:
        return None
    from arcscope.tasks.augment import random_augmentation

    flags = {a: a in cfg.augment for a in ("dihedral", "colours", "pair_order")}

    def draw(task: Task, epoch: int, i: int) -> Task:
        rng = np.random.default_rng((cfg.seed, 1, epoch, i))
        aug = random_augmentation(rng, keep_background=True, n_train=len(task.train), **flags)
        return aug.apply(task)

    return draw


@dataclass
class _Batch:
    x: np.ndarray
    """int64 [B, L] input ids (right-padded)."""
    y: np.ndarray
    """int64 [B, L] next-token targets, -100 where no loss is taken."""
    tokens: int
    """Real (unpadded) positions."""


class _Stream:
    """The training batches: a pure function of the seed, the tasks and the settings, addressable by chunk."""

    def __init__(self, tasks: list[Task], cfg: TrainLMConfig, tokenizer: Any):
        self.tasks, self.cfg, self.tokenizer = tasks, cfg, tokenizer
        self.examples = [(ti, k) for ti, t in enumerate(tasks) for k in _choices(t, cfg.rotate_pairs)]
        if not self.examples:
            raise OrganismError(
                "no training examples: the training tasks have no test pair with a known output "
                "(set rotate_pairs=true to train on their demonstration pairs)"
            )
        self.augment = _augmenter(cfg)
        self._perm: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng((self.cfg.seed, 0, epoch))
            self._perm = (epoch, rng.permutation(len(self.examples)))
        return self._perm[1]

    def chunk(self, c: int) -> tuple[list[_Batch], int]:
        """The batches of chunk ``c`` in training order, and how many of its examples were too long."""
        w, n = self.cfg.sort_window, len(self.examples)
        views = []
        for g in range(c * w, (c + 1) * w):
            epoch, i = divmod(g, n)
            ti, k = self.examples[int(self._order(epoch)[i])]
            t = _view(self.tasks[ti], k)
            views.append(self.augment(t, epoch, i) if self.augment is not None else t)
        encoded = encode_examples(
            views, self.tokenizer, self.cfg.encoder, self.cfg.template, outputs=self.cfg.loss_on_outputs
        )
        keep = [e for e in encoded if len(e[0]) <= self.cfg.max_len]
        keep.sort(key=lambda e: len(e[0]))  # stable: equal lengths stay in stream order
        groups: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for e in keep:
            length = len(e[0]) - 1
            if groups and (len(groups[-1]) + 1) * length <= self.cfg.batch_tokens:
                groups[-1].append(e)
            else:
                groups.append([e])
        order = np.random.default_rng((self.cfg.seed, 2, c)).permutation(len(groups))
        return [_collate(groups[j]) for j in order], len(encoded) - len(keep)


def _collate(group: list[tuple[np.ndarray, np.ndarray]]) -> _Batch:
    L = max(len(ids) for ids, _ in group) - 1
    x = np.full((len(group), L), PAD_ID, dtype=np.int64)
    y = np.full((len(group), L), -100, dtype=np.int64)
    for r, (ids, mask) in enumerate(group):
        n = len(ids) - 1
        x[r, :n] = ids[:-1]
        y[r, :n] = np.where(mask[1:], ids[1:], -100)
    return _Batch(x, y, sum(len(ids) - 1 for ids, _ in group))


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate(
    model: Any,
    tokenizer: Any,
    tasks: Iterable[Task],
    *,
    encoder: str = "minimal",
    template: str = "default",
    batch_tokens: int = 8192,
    max_batch: int = 64,
) -> dict[str, Any]:
    """Exact-answer accuracy of greedy decoding on every test pair with a known output; per family too."""
    from arcscope.tasks.prompts import build_prompt, parse_response

    items = []
    for t in tasks:
        for j, p in enumerate(t.test):
            if p.output is None:
                continue
            prompt = build_prompt(t, encoder, None, j, template=template, chat=False)
            items.append((t, p.output, prompt))
    if not items:
        return {"accuracy": 0.0, "correct": 0, "n": 0, "families": {}}
    prompt_ids = tokenizer([it[2].prefix for it in items])["input_ids"]
    answer_len = [
        len(a) for a in tokenizer([it[2].answer for it in items], add_special_tokens=False)["input_ids"]
    ]
    order = sorted(range(len(items)), key=lambda i: (len(prompt_ids[i]), i))
    batches: list[list[int]] = []
    rows: list[int] = []
    for i in order:  # by prompt length, so each batch's newest prompt is its longest
        width = len(prompt_ids[i]) + max(answer_len[j] for j in [*rows, i]) + 1
        if rows and (len(rows) >= max_batch or (len(rows) + 1) * width > batch_tokens):
            batches.append(rows)
            rows = []
        rows.append(i)
    batches.append(rows)
    device = next(model.parameters()).device
    correct = [False] * len(items)
    was_training = model.training
    model.eval()
    try:
        for rows in batches:
            width = max(len(prompt_ids[i]) for i in rows)
            x = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):  # left padding: every prompt ends where generation starts
                ids = prompt_ids[i]
                x[r, width - len(ids) :] = torch.tensor(ids)
                mask[r, width - len(ids) :] = 1
            with torch.inference_mode():
                gen = model.generate(
                    input_ids=x.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max(answer_len[i] for i in rows) + 1,
                    do_sample=False,
                    eos_token_id=EOS_ID,
                    pad_token_id=PAD_ID,
                )
            gen = gen[:, width:].cpu().tolist()
            for r, i in enumerate(rows):
                out = gen[r][: answer_len[i] + 1]
                if EOS_ID not in out:
                    continue
                text = tokenizer.decode(out[: out.index(EOS_ID)], skip_special_tokens=False)
                parsed = parse_response(text, encoder)
                correct[i] = parsed.ok and grids_equal(parsed.grid, items[i][1])
    finally:
        model.train(was_training)
    families: dict[str, list[int]] = {}
    for (t, _, _), ok in zip(items, correct, strict=True):
        fam = t.meta.get("family")
        if isinstance(fam, str):
            c = families.setdefault(fam, [0, 0])
            c[0] += int(ok)
            c[1] += 1
    n_ok = sum(correct)
    return {
        "accuracy": n_ok / len(items),
        "correct": n_ok,
        "n": len(items),
        "families": dict(sorted(families.items())),
    }


# ---------------------------------------------------------------------------------------------- inputs


def _as_tasks(source: str | TaskSet | Iterable[Task], limit: int | None) -> tuple[list[Task], str]:
    if isinstance(source, str):
        from arcscope.tasks.sources import load

        return list(load(source, limit=limit)), source
    tasks = list(source)
    if not all(isinstance(t, Task) for t in tasks):
        raise OrganismError("tasks must be a task source spec, a TaskSet or an iterable of Task objects")
    name = source.name if isinstance(source, TaskSet) else "in-memory"
    return (tasks if limit is None else tasks[:limit]), name


def _describe(tasks: list[Task], name: str) -> dict[str, Any]:
    h = hashlib.sha256()
    for t in tasks:
        h.update(t.id.encode() + b"\0" + t.content_hash().encode())
    return {"source": name, "n_tasks": len(tasks), "sha256": h.hexdigest()}


def _split(cfg: TrainLMConfig, tasks: Any, eval_tasks: Any) -> tuple[list[Task], list[Task], dict[str, Any]]:
    train, name = _as_tasks(tasks if tasks is not None else cfg.tasks, cfg.max_tasks)
    if not train:
        raise OrganismError(f"the training source {name} holds no tasks")
    source = eval_tasks if eval_tasks is not None else cfg.eval_tasks
    if cfg.eval_count == 0:
        held: list[Task] = []
        eval_desc: dict[str, Any] = {"source": None}
    elif source is not None:
        held, ename = _as_tasks(source, cfg.eval_count)
        eval_desc = _describe(held, ename)
    else:
        if len(train) <= cfg.eval_count:
            raise OrganismError(
                f"the training source {name} has {len(train)} tasks, too few to hold out eval_count="
                f"{cfg.eval_count} for evaluation; lower eval_count or give eval_tasks"
            )
        perm = np.random.default_rng((cfg.seed, 3)).permutation(len(train))
        out = set(perm[: cfg.eval_count].tolist())
        held = [t for i, t in enumerate(train) if i in out]
        train = [t for i, t in enumerate(train) if i not in out]
        eval_desc = {"source": f"held out of {name}", "n_tasks": len(held)}
    return train, held, {"train": _describe(train, name), "eval": eval_desc}


# ---------------------------------------------------------------------------------------------- training


def _lr_at(cfg: TrainLMConfig, step: int) -> float:
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    low = cfg.lr * cfg.min_lr_ratio
    return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(model: Any, cfg: TrainLMConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.adam_betas, eps=1e-8, foreach=False)


def train_lm(
    cfg: TrainLMConfig,
    out: str | os.PathLike,
    *,
    tasks: str | TaskSet | Iterable[Task] | None = None,
    eval_tasks: str | TaskSet | Iterable[Task] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    stop_at_step: int | None = None,
) -> TrainLMResult:
    """Train the organism on ``tasks`` (default: ``cfg.tasks``) into the folder ``out``.

    ``resume`` continues the run in ``out`` from its newest checkpoint (the settings must match);
    ``overwrite`` discards it. ``stop_at_step`` ends this session after that step with a checkpoint (for
    time-boxed runs and tests). ``progress`` gets a "training" event every ``log_every`` steps with tok/s,
    loss and the last evaluation's accuracy.
    """
    cfg = cfg.validate()
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, Path(out), tasks, eval_tasks, resume, overwrite, progress, stop_at_step)
    finally:
        torch.set_num_threads(threads)


def _train(
    cfg: TrainLMConfig,
    out: Path,
    tasks: Any,
    eval_tasks: Any,
    resume: bool,
    overwrite: bool,
    progress: ProgressFn | None,
    stop_at_step: int | None,
) -> TrainLMResult:
    _offline_env()  # no network, and no per-file progress bars of transformers under ours
    device = resolve_device(cfg.device)
    amp = resolve_dtype(cfg.dtype, device) == torch.bfloat16
    train, held, data = _split(cfg, tasks, eval_tasks)
    markers = template_markers()
    tokenizer = build_tokenizer(markers, max_len=cfg.max_len)
    identity = {"config": cfg.identity(), "data": data, "markers": markers, "vocab_size": len(tokenizer)}

    ckpt = _prepare_out(out, identity, resume=resume, overwrite=overwrite)
    if ckpt == "complete":
        summary = json.loads((out / SUMMARY_FILE).read_text())
        return TrainLMResult(
            out,
            summary["steps"],
            summary["total_steps"],
            0,
            0.0,
            True,
            already_complete=True,
            metrics=summary.get("metrics", {}),
            evaluation=summary.get("evaluation", {}),
            skipped_long=summary.get("skipped_long", 0),
        )

    model = build_model(cfg.architecture(), len(tokenizer), seed=cfg.seed)
    model.to(device).train()
    opt = _optimizer(model, cfg)
    st = {"step": 0, "chunk": 0, "batch": 0, "tokens": 0, "skipped_long": 0, "loss_sum": 0.0, "n_sum": 0}
    st["evaluation"] = {}
    resumed_from = None
    if ckpt is not None:
        st = _load_checkpoint(Path(ckpt), model, opt, device)
        resumed_from = st["step"]

    stream = _Stream(train, cfg, tokenizer)
    total = cfg.steps
    end = total if stop_at_step is None else min(total, stop_at_step)
    metrics_path = out / METRICS_FILE
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    session_tokens, last_t, last_tokens = 0, t0, 0
    batches: list[_Batch] = []
    if st["step"] < end:
        batches, skipped = stream.chunk(st["chunk"])
        if st["batch"] == 0:  # a fresh start; a checkpoint is taken after a batch, so never at batch 0
            st["skipped_long"] += skipped
    empty = 0
    while st["step"] < end:
        if st["batch"] >= len(batches):
            st["chunk"] += 1
            st["batch"] = 0
            batches, skipped = stream.chunk(st["chunk"])
            st["skipped_long"] += skipped
            empty = empty + 1 if not batches else 0
            if empty * cfg.sort_window > len(stream.examples):
                raise OrganismError(
                    f"every training example is longer than max_len={cfg.max_len} tokens; raise max_len "
                    "(and batch_tokens) or train on smaller tasks"
                )
            continue
        b = batches[st["batch"]]
        lr = _lr_at(cfg, st["step"])
        for g in opt.param_groups:
            g["lr"] = lr
        x = torch.from_numpy(b.x).to(device)
        y = torch.from_numpy(b.y).to(device)
        sel = y != -100
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            hidden = model.model(input_ids=x, use_cache=False).last_hidden_state
            logits = model.lm_head(hidden[sel])
        n_ans = int(sel.sum())
        loss = torch.nn.functional.cross_entropy(logits.float(), y[sel])
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        st["step"] += 1
        st["batch"] += 1
        st["tokens"] += b.tokens
        session_tokens += b.tokens
        st["loss_sum"] += float(loss.item()) * n_ans
        st["n_sum"] += n_ans
        step = st["step"]

        if step % cfg.log_every == 0 or step == total:
            now = time.perf_counter()
            rate = (session_tokens - last_tokens) / max(now - last_t, 1e-9)
            last_t, last_tokens = now, session_tokens
            metrics = {
                "loss": st["loss_sum"] / max(st["n_sum"], 1),
                "lr": lr,
                "tokens": st["tokens"],
                "tokens_per_s": rate,
                "elapsed_s": now - t0,
            }
            st["loss_sum"], st["n_sum"] = 0.0, 0
            _append(metrics_path, {"step": step, **metrics})
            figures: dict[str, Any] = {"tok/s": rate, "loss": metrics["loss"]}
            if st["evaluation"]:
                figures["acc"] = st["evaluation"]["accuracy"]
            emit(progress, "training", step, total, **figures)
        at_eval = cfg.eval_every and step % cfg.eval_every == 0
        if held and (at_eval or step == total):
            st["evaluation"] = evaluate(
                model,
                tokenizer,
                held,
                encoder=cfg.encoder,
                template=cfg.template,
                batch_tokens=cfg.batch_tokens,
            )
            _append(metrics_path, _eval_record(step, st["evaluation"]))
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
            _save_checkpoint(out, cfg, model, tokenizer, opt, st, identity)

    seconds = time.perf_counter() - t0
    if st["step"] < total:
        _save_checkpoint(out, cfg, model, tokenizer, opt, st, identity)
        return TrainLMResult(
            out,
            st["step"],
            total,
            session_tokens,
            seconds,
            False,
            resumed_from,
            metrics=metrics,
            evaluation=st["evaluation"],
            skipped_long=st["skipped_long"],
            model=model.eval(),
        )

    model.eval()
    _save_final(out, model, tokenizer)
    summary = {
        "complete": True,
        "steps": st["step"],
        "total_steps": total,
        "tokens": st["tokens"],
        "seconds_last_session": seconds,
        "tokens_per_s_last_session": session_tokens / seconds if seconds else 0.0,
        "device": str(device),
        "autocast_bf16": amp,
        "n_params": sum(p.numel() for p in model.parameters()),
        "config": cfg.to_dict(),
        "data": data,
        "metrics": metrics,
        "evaluation": st["evaluation"],
        "skipped_long": st["skipped_long"],
    }
    atomic_write_json(out / SUMMARY_FILE, summary, indent=1)
    shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
    return TrainLMResult(
        out,
        st["step"],
        total,
        session_tokens,
        seconds,
        True,
        resumed_from,
        metrics=metrics,
        evaluation=st["evaluation"],
        skipped_long=st["skipped_long"],
        model=model,
    )


def _eval_record(step: int, ev: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"step": step, "eval/accuracy": ev["accuracy"], "eval/correct": ev["correct"]}
    rec["eval/n"] = ev["n"]
    for fam, (ok, n) in ev["families"].items():
        rec[f"eval/family/{fam}"] = ok / n
    return rec


def _append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------- folder


def _checkpoints(out: Path) -> list[Path]:
    d = out / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(
        p for p in d.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / "state.json").is_file()
    )


def _clear(out: Path) -> None:
    for name in (*MODEL_FILES, SUMMARY_FILE, METRICS_FILE, RUN_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / CKPT_DIR, ignore_errors=True)


def _prepare_out(out: Path, identity: dict[str, Any], *, resume: bool, overwrite: bool) -> str | None:
    """Make ``out`` ready; return the checkpoint to resume from, "complete", or None for a fresh start."""
    if out.exists() and not out.is_dir():
        raise OrganismError(f"{out} is a file; the training output is a folder")
    remove_leftovers(out)
    ours = (out / RUN_FILE).is_file()
    if out.is_dir() and any(out.iterdir()) and not ours:
        # The final model is written under config.json and model.safetensors: never over another's files.
        raise OrganismError(f"{out} is not empty and holds no train-lm run; choose a new or empty folder")
    if overwrite:
        _clear(out)
    elif (out / SUMMARY_FILE).is_file():
        if not resume:
            raise OrganismError(f"{out} already holds a trained organism; pass --overwrite to train it again")
        _same_run(out, identity, json.loads((out / RUN_FILE).read_text())["identity"])
        return "complete"
    elif ours:
        if not resume:
            raise OrganismError(f"{out} holds an unfinished train-lm run; resume it or pass --overwrite")
        _same_run(out, identity, json.loads((out / RUN_FILE).read_text())["identity"])
        remove_leftovers(out / CKPT_DIR)  # a checkpoint being written when the run was killed
        ckpts = _checkpoints(out)
        if ckpts:
            _trim_metrics(out, int(json.loads((ckpts[-1] / "state.json").read_text())["step"]))
            return str(ckpts[-1])
        # Killed before its first checkpoint: nothing to keep, so the same run starts over.
        _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    # Written before anything else, so a rerun recognises the folder as this run's however early it died.
    atomic_write_json(out / RUN_FILE, {"version": STATE_VERSION, "identity": identity}, indent=1)
    return None


def _same_run(out: Path, identity: dict[str, Any], old: dict[str, Any]) -> None:
    new_cfg, old_cfg = identity["config"], old.get("config", {})
    diff = sorted(
        k for k in new_cfg.keys() | old_cfg.keys() if json.dumps(new_cfg.get(k)) != json.dumps(old_cfg.get(k))
    )
    shown = [f"{k} (saved {old_cfg.get(k)!r}, now {new_cfg.get(k)!r})" for k in diff[:5]]
    for key in ("data", "markers", "vocab_size"):
        if json.dumps(identity[key], sort_keys=True) != json.dumps(old.get(key), sort_keys=True):
            shown.append("training tasks" if key == "data" else f"tokenizer {key}")
    if shown:
        raise OrganismError(
            f"{out} holds a run with other settings: {', '.join(shown)}; resume with the same settings, pass "
            "--overwrite to train again from scratch, or choose another folder"
        )


def _trim_metrics(out: Path, step: int) -> None:
    path = out / METRICS_FILE
    if path.is_file():
        # The killed run may have logged steps (and evaluations) after its checkpoint.
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _save_final(out: Path, model: Any, tokenizer: Any) -> None:
    tmp = out / temp_name("final")
    try:
        save_organism(model, tokenizer, tmp)
        for p in sorted(tmp.iterdir()):
            os.replace(p, out / p.name)  # each file whole; training.json, written last, marks completion
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_checkpoint(
    out: Path,
    cfg: TrainLMConfig,
    model: Any,
    tokenizer: Any,
    opt: torch.optim.Optimizer,
    st: dict[str, Any],
    identity: dict[str, Any],
) -> None:
    sd = opt.state_dict()
    tensors = {"rng.torch": torch.get_rng_state()}
    for pid, s in sd["state"].items():
        for key, v in s.items():
            tensors[f"opt.{pid}.{key}"] = torch.as_tensor(v).detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    state = {"version": STATE_VERSION, **st, "param_groups": groups, "identity": identity}
    root = out / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    with replace_dir(root / f"step_{st['step']:08d}") as tmp:  # a checkpoint appears whole or not at all
        save_organism(model, tokenizer, tmp)
        save_file(tensors, str(tmp / "state.safetensors"), metadata={"format": "pt"})
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for old in _checkpoints(out)[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(
    path: Path, model: Any, opt: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any]:
    state = json.loads((path / "state.json").read_text())
    if state.get("version") != STATE_VERSION:
        raise OrganismError(f"{path}: checkpoint format {state.get('version')} is not {STATE_VERSION}")
    try:
        weights = load_file(str(path / "model.safetensors"))
        tensors = load_file(str(path / "state.safetensors"))
    except Exception as e:  # safetensors raises several kinds; name the folder
        raise OrganismError(f"{path}: unreadable checkpoint ({e})") from None
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # save_pretrained leaves out the tied lm_head; it shares the embedding just loaded.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise OrganismError(f"{path}: the checkpoint does not fit the model ({missing or unexpected})")
    sd = opt.state_dict()
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    for g, saved in zip(sd["param_groups"], state["param_groups"], strict=True):
        g.update({k: tuple(v) if k == "betas" else v for k, v in saved.items()})
    sd["state"] = opt_state
    opt.load_state_dict(sd)  # moves the moments to the parameters' device
    torch.set_rng_state(tensors["rng.torch"])
    keys = ("step", "chunk", "batch", "tokens", "skipped_long", "loss_sum", "n_sum", "evaluation")
    return {k: state[k] for k in keys}
