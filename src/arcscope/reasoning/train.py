"""Training of HRM and TRM on a dataset in the HRM layout: CPU, one GPU, or several with ``torchrun`` (DDP).

The loop is the original's (sapientinc/HRM ``pretrain.py``): the carry persists across optimiser steps,
each step runs one ACT segment of every sequence in the batch, sequences that halted are refilled from
the next batch, and the loss (summed over the batch) is divided by the global batch size. Two optimisers
run side by side: sign-SGD for the sparse puzzle embeddings and AdamATan2 (or AdamW) for the rest, both on
HRM's warm-up + cosine schedule. Under DDP, gradients are all-reduced by hand like the original (no DDP
wrapper, which would choke on the carry) and the puzzle-embedding gradients are all-gathered.

Checkpoints go to ``checkpoint_path/step_N`` (weights, config and optimiser state, so training resumes
exactly from the step) and the final model to ``checkpoint_path`` itself. ``metrics.jsonl`` holds one line
per logged step and per evaluation; TensorBoard and W&B get the same figures when installed and enabled.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from arcscope.errors import ArcscopeError
from arcscope.files import atomic_path, atomic_write_json
from arcscope.models.device import resolve_device
from arcscope.progress import ProgressFn, emit
from arcscope.puzzles.layout import open_dataset
from arcscope.reasoning.checkpoint import (
    CheckpointError,
    build_model,
    load_state,
    save_checkpoint,
)
from arcscope.reasoning.config import ConfigError, TrainConfig, with_data
from arcscope.reasoning.data import train_batches
from arcscope.reasoning.ema import EMA
from arcscope.reasoning.evaluate import evaluate_split
from arcscope.reasoning.losses import ACTLossHead
from arcscope.reasoning.optim import AdamATan2, SparseEmbeddingSignSGD, cosine_with_warmup

__all__ = ["TrainResult", "train", "total_steps"]


@dataclass
class TrainResult:
    """What a training run produced."""

    checkpoint: Path
    steps: int
    seconds: float
    last_train: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, Any] = field(default_factory=dict)
    examples_per_second: float = 0.0
    model: Any = None
    """The trained model (current weights, not the EMA)."""


def total_steps(cfg: TrainConfig, total_groups: int, mean_puzzle_examples: float) -> int:
    """HRM's step count: ``epochs * groups * mean examples per puzzle / global batch`` (or ``max_steps``)."""
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    return max(1, int(cfg.epochs * total_groups * mean_puzzle_examples / cfg.global_batch_size))


class _Logger:
    """metrics.jsonl, plus TensorBoard / W&B when installed and enabled (rank 0 only)."""

    def __init__(self, folder: Path, cfg: TrainConfig, enabled: bool):
        self.enabled = enabled
        self.tb = self.wb = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.f = open(folder / "metrics.jsonl", "a", encoding="utf-8")
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(folder / "tb"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self.tb = None
        if cfg.wandb:
            try:
                import wandb

                self.wb = wandb.init(project=cfg.project_name or "arcscope-reasoning", config=cfg.to_dict())
            except Exception:  # noqa: BLE001 - wandb is optional
                self.wb = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.f.write(json.dumps(record, default=float) + "\n")
        self.f.flush()
        step = int(record.get("step", 0))
        flat = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for k, v in flat.items():
                self.tb.add_scalar(k, v, step)
        if self.wb is not None:
            self.wb.log(flat, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.f.close()
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


def _dist_setup() -> tuple[int, int, int]:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local


def _optimizer_state(opts: list[torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for i, opt in enumerate(opts):
        sd = opt.state_dict()
        meta[f"opt{i}.param_groups"] = [
            {k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]
        ]
        for pid, st in sd["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"opt{i}.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    meta[f"opt{i}.{pid}.{k}"] = v
    return tensors, meta


def _load_optimizer_state(
    opts: list[torch.optim.Optimizer], tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    for i, opt in enumerate(opts):
        sd = opt.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for key, v in list(tensors.items()) + [
            (k, v) for k, v in meta.items() if not k.endswith("param_groups")
        ]:
            parts = key.split(".")
            if parts[0] != f"opt{i}" or len(parts) != 3:
                continue
            state.setdefault(int(parts[1]), {})[parts[2]] = v
        groups = meta.get(f"opt{i}.param_groups", [])
        for g, saved in zip(sd["param_groups"], groups, strict=False):
            g.update(saved)
        sd["state"] = state
        opt.load_state_dict(sd)


def _latest_step_dir(folder: Path) -> Path | None:
    steps = [
        p
        for p in folder.glob("step_*")
        if p.is_dir() and p.name[5:].isdigit() and (p / "train_state.json").exists()
    ]
    return max(steps, key=lambda p: int(p.name[5:])) if steps else None


def train(
    cfg: TrainConfig,
    *,
    resume: bool | str | os.PathLike[str] = False,
    progress: ProgressFn | None = None,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.data_path``; see the module docstring. ``resume`` takes True (latest) or a step folder.

    ``progress`` gets a "train" event every ``log_every`` steps; ``on_eval`` gets each evaluation's record.
    """
    if not cfg.data_path:
        raise ConfigError("data_path is not set: pass --data DIR (a dataset from `arcscope puzzles build`)")
    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world, local_rank = _dist_setup()
    owns_group = owns_group and world > 1
    device = resolve_device(cfg.device, local_rank=local_rank)
    ds = open_dataset(cfg.data_path)
    train_split = ds["train"]
    test_split = ds.splits.get("test")
    meta = train_split.metadata
    if cfg.global_batch_size % world:
        raise ConfigError(
            f"global_batch_size={cfg.global_batch_size} is not a multiple of the {world} processes"
        )
    if test_split is not None and (test_split.metadata.seq_len, test_split.metadata.vocab_size) != (
        meta.seq_len,
        meta.vocab_size,
    ):
        raise ArcscopeError(f"{ds.path}: train and test splits disagree on seq_len or vocab_size")
    n_ids = max(meta.num_puzzle_identifiers, test_split.metadata.num_puzzle_identifiers if test_split else 0)
    arch = with_data(
        cfg.arch,
        seq_len=meta.seq_len,
        vocab_size=meta.vocab_size,
        num_puzzle_identifiers=n_ids,
        batch_size=cfg.global_batch_size // world,
    )
    cfg = replace(cfg, arch=arch)
    ckpt_dir = Path(cfg.checkpoint_path or Path("runs") / "reasoning" / f"{arch.name}-{ds.path.name}")

    if cfg.threads is not None:
        torch.set_num_threads(max(1, int(cfg.threads)))
    torch.manual_seed(cfg.seed + rank)
    model = build_model(arch, device)
    if world > 1:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t, src=0)
    head = ACTLossHead(model, arch.loss_type)
    runner: Any = torch.compile(head, dynamic=False) if cfg.compile and device.type == "cuda" else head

    opts: list[torch.optim.Optimizer] = []
    base_lrs: list[float] = []
    if model.puzzle_emb is not None:
        opts.append(
            SparseEmbeddingSignSGD(
                model.puzzle_emb, lr=0.0, weight_decay=cfg.puzzle_emb_weight_decay, world_size=world
            )
        )
        base_lrs.append(cfg.puzzle_emb_lr)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam_atan2":
        opts.append(AdamATan2(params, lr=0.0, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay))
    elif cfg.optimizer == "adamw":
        opts.append(
            torch.optim.AdamW(params, lr=0.0, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        )
    else:
        raise ConfigError(f"optimizer must be 'adam_atan2' or 'adamw', got {cfg.optimizer!r}")
    base_lrs.append(cfg.lr)
    ema = EMA(model, cfg.ema_rate) if cfg.ema else None

    n_total = total_steps(cfg, meta.total_groups, meta.mean_puzzle_examples)
    steps_per_epoch = max(1e-9, meta.total_groups * meta.mean_puzzle_examples / cfg.global_batch_size)
    eval_every = max(1, round(cfg.eval_interval * steps_per_epoch)) if cfg.eval_interval else None

    step, start_epoch = 0, 0
    if resume:
        src = _latest_step_dir(ckpt_dir) if resume is True else Path(resume)
        if src is None or not (src / "train_state.json").exists():
            raise CheckpointError(
                f"{src or ckpt_dir}: nothing to resume (no step_N folder with train_state.json)"
            )
        state = json.loads((src / "train_state.json").read_text())
        tensors = load_file(str(src / "train_state.safetensors"))
        raw = {k[4:]: v for k, v in tensors.items() if k.startswith("raw.")}
        load_state(model, raw or load_file(str(src / "model.safetensors")), str(src))
        if ema is not None:
            for k in ema.shadow:
                if f"ema.{k}" in tensors:
                    ema.shadow[k].copy_(tensors[f"ema.{k}"].to(device))
        _load_optimizer_state(
            opts, {k: v.to(device) for k, v in tensors.items() if k.startswith("opt")}, state["optimizers"]
        )
        step, start_epoch = int(state["step"]), int(state["epoch"])

    def checkpoint(folder: Path, epoch: float, final: bool = False) -> None:
        sd = ema.state_dict(model) if ema is not None else None
        extra = {"step": step, "total_steps": n_total, "data_path": str(ds.path), "dataset_kind": ds.kind}
        save_checkpoint(folder, model, train_config=cfg.to_dict(), extra=extra, state_dict=sd)
        if final:
            return
        tensors, opt_meta = _optimizer_state(opts)
        if ema is not None:
            tensors.update({f"raw.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
            tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.shadow.items()})
        with atomic_path(folder / "train_state.safetensors") as tmp:
            save_file(tensors, str(tmp))
        # Written last: resume only picks folders that have it, so it marks a complete checkpoint.
        atomic_write_json(
            folder / "train_state.json",
            {"step": step, "epoch": math.floor(epoch), "optimizers": opt_meta},
            default=float,
        )

    log = _Logger(ckpt_dir, cfg, rank == 0)
    result = TrainResult(ckpt_dir, step, 0.0)

    def run_eval(epoch: float) -> None:
        if test_split is None:
            return
        ctx = ema.applied(model) if ema is not None else _null()
        with ctx:
            res = evaluate_split(
                model,
                test_split,
                global_batch_size=cfg.global_batch_size,
                device=device,
                rank=rank,
                world_size=world,
                max_batches=cfg.eval_max_batches,
            )
        rec = {
            "step": step,
            "epoch": epoch,
            "elapsed_s": time.perf_counter() - t0,
            **{f"eval/{k}": v for k, v in res.metrics.items()},
        }
        rec["eval/halt_histogram"] = res.halt_histogram
        result.last_eval = rec
        log.log(rec)
        if on_eval is not None and rank == 0:
            on_eval(rec)

    model.train()
    carry = None
    t0 = time.perf_counter()
    start_step = step
    epoch = float(start_epoch)
    try:
        for batch in train_batches(
            train_split,
            cfg.global_batch_size,
            seed=cfg.seed,
            rank=rank,
            world_size=world,
            start_epoch=start_epoch,
        ):
            if step >= n_total:
                break
            step += 1
            epoch = batch.epoch
            b = batch.to(device)
            if carry is None:
                carry = head.initial_carry(b)
            carry, loss, metrics, _, _ = runner(carry, b)
            (loss / cfg.global_batch_size).backward()
            if world > 1:
                for p in params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            lr_now = 0.0
            for opt, base in zip(opts, base_lrs, strict=True):
                lr_now = cosine_with_warmup(
                    step,
                    base_lr=base,
                    warmup_steps=cfg.lr_warmup_steps,
                    total_steps=n_total,
                    min_ratio=cfg.lr_min_ratio,
                )
                for g in opt.param_groups:
                    g["lr"] = lr_now
                opt.step()
                opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            if step % cfg.log_every == 0 or step == n_total or step == start_step + 1:
                keys = sorted(metrics)
                vec = torch.stack([metrics[k].detach().double() for k in keys])
                if world > 1:
                    dist.all_reduce(vec)
                vals = dict(zip(keys, vec.cpu().tolist(), strict=True))
                count = max(vals.pop("count"), 1.0)
                rec = {
                    "step": step,
                    "epoch": round(epoch, 4),
                    **{
                        f"train/{k}": v / (cfg.global_batch_size if k.endswith("loss") else count)
                        for k, v in vals.items()
                    },
                    "train/lr": lr_now,
                    "elapsed_s": time.perf_counter() - t0,
                    "train/examples_per_s": (step - start_step)
                    * cfg.global_batch_size
                    / max(1e-9, time.perf_counter() - t0),
                }
                result.last_train = rec
                log.log(rec)
                if rank == 0:
                    emit(
                        progress,
                        "train",
                        step,
                        n_total,
                        loss=rec.get("train/lm_loss", 0.0),
                        acc=rec.get("train/accuracy", 0.0),
                        **{"ex/s": rec["train/examples_per_s"]},
                    )
            if eval_every and step % eval_every == 0 and step < n_total:
                run_eval(epoch)
                if cfg.checkpoint_every_eval and rank == 0:
                    checkpoint(ckpt_dir / f"step_{step}", epoch)
        run_eval(epoch)
        if rank == 0:
            checkpoint(ckpt_dir / f"step_{step}", epoch)
            checkpoint(ckpt_dir, epoch, final=True)
    finally:
        log.close()
    if owns_group:
        # Wait for rank 0's checkpoint, then shut gloo/NCCL down cleanly: a process group left alive at
        # interpreter exit can abort the process ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()
    result.steps = step
    result.model = model
    result.seconds = time.perf_counter() - t0
    result.examples_per_second = (step - start_step) * cfg.global_batch_size / max(1e-9, result.seconds)
    return result


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False
