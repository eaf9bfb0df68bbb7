"""Training of HRM and TRM on a dataset in the HRM layout: CPU, one GPU, or several with ``torchrun`` (DDP).

The loop is the original's (sapientinc/HRM ``pretrain.py``): the carry persists across optimiser steps,
each step runs one ACT segment of every sequence in the batch, sequences that halted are refilled from
the next batch, and the loss (summed over the batch) is divided by the global batch size. Two optimisers
run side by side: sign-SGD for the sparse puzzle embeddings and AdamATan2 (or AdamW) for the rest, both on
HRM's warm-up + cosine schedule. Under DDP, gradients are all-reduced by hand like the original (no DDP
wrapper, which would choke on the carry) and the puzzle-embedding gradients are all-gathered.

Checkpoints go to ``checkpoint_path/step_N`` and the final model to ``checkpoint_path`` itself.
``metrics.jsonl`` holds one line per logged step and per evaluation; TensorBoard and W&B get the same
figures when installed and enabled. ``run.json``, written first, names the run's settings.

Resume is exact: a checkpoint folder appears whole or not at all (:func:`arcscope.files.replace_dir`) and
holds the weights, the EMA, the optimisers, the ACT carry (states, step counts, halted flags and the
examples in flight), the torch RNG state (halting exploration; numpy and ``random`` are not used) and the
data stream's position. A run resumed after a SIGKILL at any moment trims ``metrics.jsonl`` back to its
checkpoint and ends with the same weights, EMA, metrics (but for the wall-clock fields ``elapsed_s`` and
``train/examples_per_s``) and evaluations as an uninterrupted run with the same seed. A folder that holds
a run is trained again only with ``overwrite``; ``resume`` refuses other settings, naming them (``max_steps``
and ``epochs`` may change, to extend a run; device, threads and logging settings may too).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from arcscope.errors import ArcscopeError
from arcscope.files import atomic_write_json, atomic_write_text, remove_leftovers, replace_dir
from arcscope.models.device import resolve_device
from arcscope.progress import ProgressFn, emit
from arcscope.puzzles.layout import open_dataset
from arcscope.reasoning.act import Carry, InnerCarry
from arcscope.reasoning.checkpoint import (
    FORMAT,
    CheckpointError,
    build_model,
    load_state,
    save_checkpoint,
)
from arcscope.reasoning.config import ConfigError, TrainConfig, with_data
from arcscope.reasoning.data import TrainStream
from arcscope.reasoning.ema import EMA
from arcscope.reasoning.evaluate import evaluate_split
from arcscope.reasoning.losses import ACTLossHead
from arcscope.reasoning.optim import AdamATan2, SparseEmbeddingSignSGD, cosine_with_warmup

__all__ = ["TrainResult", "train", "total_steps"]

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
STATE_VERSION = 2
_FREE = {"device", "compile", "threads", "log_every", "tensorboard", "wandb", "project_name"}
_FREE |= {"checkpoint_path", "checkpoint_every_eval", "max_steps", "epochs"}
"""Settings a resumed run may change: where and how it runs and logs, and how long it trains."""


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
        self.f = open(folder / METRICS_FILE, "a", encoding="utf-8")
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


def _identity(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that decide a run's weights and evaluations, flat with dotted keys (``arch.hidden_size``)."""
    d = cfg.to_dict()
    arch = d.pop("arch")
    out = {k: v for k, v in d.items() if k not in _FREE}
    out.update({f"arch.{k}": v for k, v in arch.items()})
    return out


def _saved_identity(folder: Path, step_dir: Path | None) -> dict[str, Any] | None:
    """The identity a run in ``folder`` was started with: run.json, else the newest checkpoint's config."""
    if (folder / RUN_FILE).is_file():
        return dict(json.loads((folder / RUN_FILE).read_text())["identity"])
    for where in (step_dir, folder):
        if where is not None and (where / "config.json").is_file():
            obj = json.loads((where / "config.json").read_text())
            if obj.get("format") == FORMAT and isinstance(obj.get("train"), dict):
                return _identity(TrainConfig.from_dict(obj["train"], where=str(where / "config.json")))
    return None


def _ours(path: Path) -> bool:
    """Whether ``path`` (a config.json) was written by this trainer."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def _holds_run(folder: Path) -> bool:
    if (folder / RUN_FILE).is_file() or (folder / METRICS_FILE).is_file() or _latest_step_dir(folder):
        return True
    return (folder / "config.json").is_file() and _ours(folder / "config.json")


def _plan(folder: Path, identity: dict[str, Any], resume: Any, overwrite: bool) -> Path | None:
    """Check ``folder`` against the request; return the checkpoint to resume from, None for a fresh start."""
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; the training output (--out) is a folder")
    if overwrite and resume:
        raise CheckpointError("give --resume (continue the run) or --overwrite (start again), not both")
    foreign = [n for n in ("config.json", "model.safetensors") if (folder / n).exists()]
    if foreign and not ((folder / "config.json").is_file() and _ours(folder / "config.json")):
        # The final model is written under these names: never over another program's files.
        raise CheckpointError(
            f"{folder} holds {' and '.join(foreign)} not written by `arcscope reasoning train`; "
            "choose another --out"
        )
    if overwrite:
        return None
    if resume not in (True, False):
        src = Path(resume)
        if not (src / "train_state.json").is_file():
            raise CheckpointError(f"{src}: nothing to resume (no train_state.json in this step_N folder)")
        _same_settings(src, identity, _saved_identity(src.parent, src))
        return src
    if not (folder.is_dir() and _holds_run(folder)):
        if resume:
            raise CheckpointError(f"{folder}: nothing to resume (no step_N folder with train_state.json)")
        return None
    if not resume:
        raise CheckpointError(
            f"{folder} already holds a training run; pass --resume to continue it, --overwrite to train "
            "again from scratch, or choose another --out"
        )
    latest = _latest_step_dir(folder)
    _same_settings(folder, identity, _saved_identity(folder, latest))
    return latest  # None: killed before its first checkpoint, so it starts over


def _same_settings(where: Path, identity: dict[str, Any], saved: dict[str, Any] | None) -> None:
    if saved is None:
        return
    diff = sorted(
        k for k in identity.keys() | saved.keys() if json.dumps(identity.get(k)) != json.dumps(saved.get(k))
    )
    if diff:
        shown = ", ".join(f"{k} (saved {saved.get(k)!r}, now {identity.get(k)!r})" for k in diff[:5])
        raise CheckpointError(
            f"{where} holds a run with other settings: {shown}; resume with the same settings, pass "
            "--overwrite to train again from scratch, or choose another --out"
        )


def _prepare(folder: Path, identity: dict[str, Any], src: Path | None, overwrite: bool) -> None:
    """Rank 0's side of :func:`_plan`: clear what a fresh start replaces, trim metrics to the checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)
    if src is None:
        ours = [folder / n for n in (RUN_FILE, METRICS_FILE, "model.safetensors", "config.json")]
        ours += [p for p in folder.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
        if overwrite:
            ours.append(folder / "tb")
        for p in ours:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    if src is None:
        atomic_write_json(folder / RUN_FILE, {"format": FORMAT, "identity": identity}, indent=1)
        return
    step = int(json.loads((src / "train_state.json").read_text())["step"])
    metrics = folder / METRICS_FILE
    if metrics.is_file():
        # The killed run may have logged steps (and evaluations) after its checkpoint.
        keep = [
            ln for ln in metrics.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step
        ]
        atomic_write_text(metrics, "".join(ln + "\n" for ln in keep))


def _gathered(t: torch.Tensor, world: int, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of ``t`` (same shape everywhere), on the CPU."""
    if world == 1:
        return [t.detach().cpu()]
    x = t.detach().to(device).contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return [p.cpu() for p in parts]


def _carry_and_rng(carry: Carry | None, world: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The ACT carry and the torch RNG state of every rank, as tensors ``carry.R.*`` and ``rng.R.*``."""
    local: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        local["rng.cuda"] = torch.cuda.get_rng_state(device)
    if carry is not None:
        local["carry.z_H"] = carry.inner_carry.z_H
        local["carry.z_L"] = carry.inner_carry.z_L
        local["carry.steps"] = carry.steps
        local["carry.halted"] = carry.halted.to(torch.uint8)  # NCCL gathers no bool
        local.update({f"carry.data.{k}": v for k, v in carry.current_data.items()})
    out = {}
    for key, t in sorted(local.items()):
        kind, _, rest = key.partition(".")
        for r, part in enumerate(_gathered(t, world, device)):
            out[f"{kind}.{r}.{rest}"] = part.contiguous()
    return out


def _restore_carry_and_rng(tensors: dict[str, torch.Tensor], rank: int, device: torch.device) -> Carry | None:
    pre = f"carry.{rank}."
    if f"rng.{rank}.torch" in tensors:
        torch.set_rng_state(tensors[f"rng.{rank}.torch"])
    if device.type == "cuda" and f"rng.{rank}.cuda" in tensors:
        torch.cuda.set_rng_state(tensors[f"rng.{rank}.cuda"], device)
    if pre + "z_H" not in tensors:
        return None
    get = {k[len(pre) :]: v.to(device) for k, v in tensors.items() if k.startswith(pre)}
    data = {k[5:]: v for k, v in get.items() if k.startswith("data.")}
    return Carry(InnerCarry(get["z_H"], get["z_L"]), get["steps"], get["halted"].bool(), data)


def train(
    cfg: TrainConfig,
    *,
    resume: bool | str | os.PathLike[str] = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.data_path``; see the module docstring. ``resume`` takes True (latest) or a step folder.

    A folder that already holds a run needs ``resume`` (continue it exactly; the settings must match) or
    ``overwrite`` (remove the run's files and train from scratch).
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
    identity = _identity(cfg)
    src = _plan(ckpt_dir, identity, resume, overwrite)  # every rank reads the folder; rank 0 alone changes it
    if world > 1:
        dist.barrier()
    if rank == 0:
        _prepare(ckpt_dir, identity, src, overwrite)
    if world > 1:
        dist.barrier()

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

    stream = TrainStream(train_split, cfg.global_batch_size, seed=cfg.seed, rank=rank, world_size=world)
    step, epoch, carry = 0, 0.0, None
    if src is not None:
        state = json.loads((src / "train_state.json").read_text())
        if state.get("version") != STATE_VERSION or int(state.get("world_size", 1)) != world:
            raise CheckpointError(
                f"{src}: this checkpoint (format {state.get('version')}, {state.get('world_size', 1)} "
                f"process(es)) cannot resume exactly here (format {STATE_VERSION}, {world} process(es)); "
                "resume with the same number of processes or pass --overwrite to train again"
            )
        try:
            tensors = load_file(str(src / "train_state.safetensors"))
        except Exception as e:  # noqa: BLE001 - safetensors raises several kinds; name the file
            raise CheckpointError(f"{src}/train_state.safetensors: unreadable checkpoint ({e})") from None
        raw = {k[4:]: v for k, v in tensors.items() if k.startswith("raw.")}
        load_state(model, raw, str(src))
        if ema is not None:
            for k in ema.shadow:
                ema.shadow[k].copy_(tensors[f"ema.{k}"].to(device))
        _load_optimizer_state(
            opts, {k: v.to(device) for k, v in tensors.items() if k.startswith("opt")}, state["optimizers"]
        )
        stream.load_state(
            state["data"], {k[5:]: v.numpy() for k, v in tensors.items() if k.startswith("data.")}
        )
        carry = _restore_carry_and_rng(tensors, rank, device)
        step, epoch = int(state["step"]), float(state["epoch"])

    def checkpoint(folder: Path, final: bool = False) -> None:
        # Every rank calls this (the carries and RNG states are gathered); rank 0 writes.
        sd = ema.state_dict(model) if ema is not None else None
        extra = {"step": step, "total_steps": n_total, "data_path": str(ds.path), "dataset_kind": ds.kind}
        if final:
            if rank == 0:
                save_checkpoint(folder, model, train_config=cfg.to_dict(), extra=extra, state_dict=sd)
            return
        gathered = _carry_and_rng(carry, world, device)
        if rank != 0:
            return
        tensors, opt_meta = _optimizer_state(opts)
        tensors.update({f"raw.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
        if ema is not None:
            tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.shadow.items()})
        data_meta, data_arrays = stream.state()
        tensors.update({f"data.{k}": torch.from_numpy(v.copy()) for k, v in data_arrays.items()})
        tensors.update(gathered)
        state = {
            "version": STATE_VERSION,
            "step": step,
            "epoch": epoch,
            "world_size": world,
            "optimizers": opt_meta,
            "data": data_meta,
        }
        with replace_dir(folder) as tmp:  # a checkpoint appears whole or not at all
            save_checkpoint(tmp, model, train_config=cfg.to_dict(), extra=extra, state_dict=sd)
            save_file(tensors, str(tmp / "train_state.safetensors"))
            (tmp / "train_state.json").write_text(json.dumps(state, default=float))

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
    t0 = time.perf_counter()
    start_step = step
    try:
        # A checkpoint at the last step is written after the final evaluation: resuming from it only
        # writes the final model.
        finished = src is not None and step >= n_total
        while step < n_total:
            batch = next(stream)
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
            # Step 1 of the run, not of this session: a resumed run logs the lines an uninterrupted one does.
            if step % cfg.log_every == 0 or step == n_total or step == 1:
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
                if cfg.checkpoint_every_eval:
                    checkpoint(ckpt_dir / f"step_{step}")
        if finished:
            result.last_eval = _last_eval(ckpt_dir / METRICS_FILE)
        else:
            run_eval(epoch)
            checkpoint(ckpt_dir / f"step_{step}")
        checkpoint(ckpt_dir, final=True)
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


def _last_eval(path: Path) -> dict[str, Any]:
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []
    evals = [r for r in recs if any(k.startswith("eval/") for k in r)]
    return evals[-1] if evals else {}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False
