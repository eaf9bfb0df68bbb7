"""Train an SAE: seeded, checkpointed and resumable, one process or several under ``torchrun``.

Output folder::

    out/cfg.json, sae_weights.safetensors, sparsity.safetensors   the trained SAE (SAELens layout)
    out/training.json       summary: settings, data, tokens, time, final metrics, skipped shards
    out/metrics.jsonl       one record every ``log_every`` steps
    out/run.json            the run's identity, written first: a run killed before its first checkpoint restarts
    out/checkpoints/step_NNNNNNNN/   state.safetensors + state.json (exact resume) and the SAE so far

Resume is exact: the data stream is a pure function of the seed, a checkpoint holds the parameters,
Adam's moments, the dead-latent counters and the metric sums since the last log line, and a resumed run
replays the stream past the batches it has seen and trims ``metrics.jsonl`` back to its checkpoint. On one
machine the same seed gives the same bytes and the same metrics lines (but for ``tokens_per_s``),
interrupted or not.

Several processes (``torchrun --nproc_per_node N -m arcscope sae train ...``): each rank reads its own
stride of shards, gradients are averaged with ``all_reduce`` (NCCL on GPUs, gloo on CPU), rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from arcscope.files import atomic_write_json, atomic_write_text, remove_leftovers, replace_dir
from arcscope.models import resolve_device, resolve_dtype
from arcscope.progress import ProgressFn, emit
from arcscope.sae import io
from arcscope.sae.config import SAEError, TrainConfig
from arcscope.sae.data import StoreSource, batches
from arcscope.sae.model import SAEConfig, SparseAutoencoder, geometric_median

STATE_VERSION = 1
SUMMARY_FILE = "training.json"
METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"
CKPT_DIR = "checkpoints"
NO_MPS = "the SAE trainer's sparse kernels (CSR products, SDDMM) need CPU or CUDA"


@dataclass
class TrainResult:
    """What a training run produced."""

    out: Path
    sae: SparseAutoencoder | None
    """The trained SAE (reading raw activations) when the run completed in this call, else None."""
    steps: int
    total_steps: int
    tokens: int
    seconds: float
    complete: bool
    resumed_from: int | None = None
    already_complete: bool = False
    skipped_shards: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        """Rows trained per second in this session."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """Whether this call created the process group (and so destroys it at the end)."""

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_dist(device: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    return _Dist(rank, world, local, owns)


def _lr_factor(step: int, total: int, warmup: int, decay: float) -> float:
    f = min(1.0, (step + 1) / warmup) if warmup else 1.0
    decay_steps = int(total * decay)
    if decay_steps and step >= total - decay_steps:
        f *= max(0.0, (total - step) / decay_steps)
    return f


def train_sae(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    store: str | None = None,
    hook: str | None = None,
    storage_options: dict | None = None,
    source: Any = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Train an SAE on ``hook`` of ``store`` (or on ``source``, e.g. a :class:`ModelSource`) into ``out``.

    ``resume`` continues from the newest checkpoint in ``out``; ``stop_at_step`` ends this session after that
    step with a checkpoint, so a later call resumes (used for time-boxed jobs and tests). ``progress`` gets
    a "training" event every ``log_every`` steps with tokens/s, loss, FVU, L0 and the dead fraction.
    """
    cfg = cfg.validate()
    dist_ = _setup_dist(str(resolve_device(cfg.device, no_mps=NO_MPS)))
    try:
        return _train(
            cfg,
            Path(out),
            dist_,
            store=store,
            hook=hook,
            storage_options=storage_options,
            source=source,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            stop_at_step=stop_at_step,
        )
    finally:
        if dist_.owns_group:
            # A gloo/NCCL group left alive at interpreter exit can abort the process. Every normal return of
            # _train comes after a barrier or broadcast that all ranks pass (summary, checkpoint, "complete").
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(
    cfg: TrainConfig,
    out: Path,
    dist_: _Dist,
    *,
    store: str | None,
    hook: str | None,
    storage_options: dict | None,
    source: Any,
    resume: bool,
    overwrite: bool,
    progress: ProgressFn | None,
    stop_at_step: int | None,
) -> TrainResult:
    device = resolve_device(cfg.device, local_rank=dist_.local_rank, no_mps=NO_MPS)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    autocast = resolve_dtype(cfg.dtype, device) == torch.bfloat16
    if cfg.batch_size % dist_.world:
        raise SAEError(f"batch_size {cfg.batch_size} must be divisible by the {dist_.world} ranks")

    if source is None:
        if store is None or hook is None:
            raise SAEError("give a store and a hook to train on (or a source)")
        from arcscope.store import open_store

        st = open_store(store, storage_options)
        source = StoreSource(st, hook, verify=cfg.verify, on_damaged=cfg.on_damaged, prefetch=cfg.prefetch)
    d_in = int(source.d)
    d_sae = cfg.n_latents(d_in)
    if cfg.arch in ("topk", "batchtopk") and cfg.k > d_sae:
        raise SAEError(f"k={cfg.k} exceeds the {d_sae} latents")
    if cfg.tokens is not None:
        total_tokens = cfg.tokens
    elif source.rows:
        total_tokens = math.ceil(cfg.epochs * source.rows)
    else:
        raise SAEError("training on the fly needs tokens= (the number of rows to train on)")
    total_steps = max(1, math.ceil(total_tokens / cfg.batch_size))
    described = source.describe()
    identity = {"config": cfg.identity(), "source": described, "d_in": d_in, "d_sae": d_sae}

    # ---- output folder and resume ------------------------------------------------------------------
    ckpt = None
    if dist_.main:
        ckpt = _prepare_out(out, identity, resume=resume, overwrite=overwrite)
    if dist_.world > 1:
        import torch.distributed as dist

        ckpt = _broadcast_text(ckpt, dist_)
    if ckpt == "complete":
        summary = json.loads((out / SUMMARY_FILE).read_text())
        return TrainResult(
            out,
            None,
            summary["steps"],
            summary["total_steps"],
            0,
            0.0,
            True,
            already_complete=True,
            metrics=summary.get("metrics", {}),
        )

    sae_cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        arch=cfg.arch,
        k=cfg.k if cfg.arch in ("topk", "batchtopk") else None,
        hook=getattr(source, "hook", hook),
        model=_model_name(source),
        meta={"source": described, "train": cfg.to_dict()},
    )
    sae = SparseAutoencoder(sae_cfg, device=device)
    unit_decoder = cfg.arch != "relu"
    pin = device.type == "cuda"

    step, tokens_done, scale = 0, 0, 1.0
    since_fired = torch.zeros(d_sae, dtype=torch.int64, device=device)
    fire_count = torch.zeros(d_sae, dtype=torch.float64, device=device)
    fire_rows = 0
    lr = cfg.learning_rate(d_sae)
    params = [p for p in sae.parameters()]
    fused = device.type in ("cuda", "cpu")
    opt = torch.optim.Adam(params, lr=lr, betas=cfg.adam_betas, fused=fused)
    resumed_from = None

    dead_idx: torch.Tensor | None = None
    acc_t: dict[str, torch.Tensor] = {}
    acc_n = 0
    if ckpt:
        step, tokens_done, scale, fire_rows, dead_idx, acc_t, acc_n = _load_checkpoint(
            Path(ckpt), sae, opt, since_fired, fire_count
        )
        dead_idx = dead_idx.to(device) if dead_idx is not None else None
        acc_t = {k: v.to(device) for k, v in acc_t.items()}
        resumed_from = step
    else:
        scale = _initialize(sae, source, cfg, device, dist_)
    if dist_.world > 1:
        import torch.distributed as dist

        for p in list(sae.parameters()) + list(sae.buffers()):
            dist.broadcast(p.data, src=0)

    stream = batches(
        source,
        cfg.batch_size // dist_.world,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed,
        rank=dist_.rank,
        world=dist_.world,
        skip=step,
        pin=pin,
    )
    sparsity_coef = cfg.l1_coefficient if cfg.arch == "relu" else cfg.l0_coefficient
    acc = {"loss": 0.0, "fvu": 0.0, "l0": 0.0, "aux": 0.0, "sparsity": 0.0}
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    session_tokens = 0
    last_log_t, last_log_tokens = t0, 0
    metrics_path = out / METRICS_FILE
    end = total_steps if stop_at_step is None else min(total_steps, stop_at_step)
    try:
        while step < end:
            x = next(stream).to(device, non_blocking=True)
            if scale != 1.0:
                x = x * scale
            f = _lr_factor(step, total_steps, cfg.lr_warmup, cfg.lr_decay)
            for g in opt.param_groups:
                g["lr"] = lr * f
            warm = min(1.0, (step + 1) / cfg.sparsity_warmup) if cfg.sparsity_warmup else 1.0
            res = sae.training_loss(
                x,
                dead=dead_idx if cfg.aux_coefficient > 0 else None,
                aux_k=cfg.aux_k,
                aux_coefficient=cfg.aux_coefficient,
                sparsity_coefficient=sparsity_coef * warm,
                bandwidth=cfg.jumprelu_bandwidth,
                autocast=autocast,
            )
            res.loss.backward()
            counts = res.counts
            if dist_.world > 1:
                counts = _all_reduce_grads(sae, counts, dist_.world)
            fired = counts > 0
            if unit_decoder:
                sae.remove_parallel_grad()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if unit_decoder:
                sae.normalize_decoder()
            if cfg.arch == "jumprelu":
                with torch.no_grad():
                    sae.threshold.clamp_(min=1e-6)
            if cfg.arch == "batchtopk":
                m = getattr(sae, "_last_min", None)
                if dist_.world > 1 and m is not None:
                    import torch.distributed as dist

                    m = m.clone()
                    dist.all_reduce(m)
                    m /= dist_.world
                sae.update_threshold(cfg.batchtopk_threshold_lr, m)
            with torch.no_grad():
                since_fired += cfg.batch_size
                since_fired[fired] = 0
                fire_count += counts.double()
            fire_rows += cfg.batch_size
            step += 1
            tokens_done += cfg.batch_size
            session_tokens += cfg.batch_size
            for key in acc:
                v = getattr(res, key).detach()
                acc_t[key] = acc_t[key] + v if key in acc_t else v.clone()
            acc_n += 1

            regular = step % cfg.log_every == 0
            if regular:
                # State that training reads changes only at regular log steps, never at a session's end:
                # that keeps an interrupted-and-resumed run identical to an uninterrupted one.
                dead_mask = since_fired >= cfg.dead_tokens
                dead_idx = dead_mask.nonzero().squeeze(1) if cfg.arch in ("topk", "batchtopk") else None
                if fire_rows >= 4 * cfg.dead_tokens:
                    # Density is measured over a recent window, not since the untrained start.
                    fire_count.mul_(0.5)
                    fire_rows //= 2
            if regular or step == total_steps:
                # One device sync per log record, not per step. A session that stops early writes no
                # line of its own: its sums go into the checkpoint, so the resumed run's lines are the same.
                now = time.perf_counter()
                rate = (session_tokens - last_log_tokens) / max(now - last_log_t, 1e-9)
                last_log_t, last_log_tokens = now, session_tokens
                metrics = {k: float(v) / acc_n for k, v in acc_t.items()}
                metrics.update(
                    {
                        "dead_fraction": float((since_fired >= cfg.dead_tokens).float().mean()),
                        "lr": lr * f,
                        "tokens_per_s": rate,
                    }
                )
                acc_t, acc_n = {}, 0
                if dist_.main:
                    with open(metrics_path, "a") as fh:
                        fh.write(json.dumps({"step": step, "tokens": tokens_done, **metrics}) + "\n")
                if dist_.main:
                    emit(
                        progress,
                        "training",
                        step,
                        total_steps,
                        **{
                            "tok/s": rate,
                            "loss": metrics.get("loss", 0.0),
                            "fvu": metrics.get("fvu", 0.0),
                            "L0": metrics.get("l0", 0.0),
                            "dead %": 100 * metrics["dead_fraction"],
                        },
                    )
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
                _save_checkpoint(
                    out,
                    cfg,
                    sae,
                    opt,
                    step,
                    tokens_done,
                    scale,
                    (since_fired, fire_count, fire_rows, dead_idx),
                    identity,
                    dist_,
                    (acc_t, acc_n),
                )
    finally:
        stream.close()
    seconds = time.perf_counter() - t0
    complete = step >= total_steps
    skipped = dict(getattr(source, "skipped", {}))
    if not complete:
        if acc_n:
            metrics = {k: float(v) / acc_n for k, v in acc_t.items()}
        _save_checkpoint(
            out,
            cfg,
            sae,
            opt,
            step,
            tokens_done,
            scale,
            (since_fired, fire_count, fire_rows, dead_idx),
            identity,
            dist_,
            (acc_t, acc_n),
        )
        return TrainResult(
            out,
            None,
            step,
            total_steps,
            session_tokens,
            seconds,
            False,
            resumed_from,
            False,
            skipped,
            metrics,
        )

    final = _inference_copy(sae, scale)
    density = (fire_count / max(fire_rows, 1)).float().cpu()
    if dist_.main:
        final.cfg.meta["input_scale"] = scale
        final.cfg.meta["skipped_shards"] = skipped
        io.save_sae(final, out, sparsity=torch.log10(density + 1e-10))
        summary = {
            "complete": True,
            "steps": step,
            "total_steps": total_steps,
            "tokens": tokens_done,
            "seconds_last_session": seconds,
            "tokens_per_s_last_session": session_tokens / seconds if seconds else 0.0,
            "world_size": dist_.world,
            "device": str(device),
            "autocast_bf16": autocast,
            "input_scale": scale,
            "config": cfg.to_dict(),
            "source": described,
            "d_in": d_in,
            "d_sae": d_sae,
            "metrics": metrics,
            "skipped_shards": skipped,
        }
        atomic_write_json(out / SUMMARY_FILE, summary, indent=1)
        shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
    if dist_.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(
        out, final, step, total_steps, session_tokens, seconds, True, resumed_from, False, skipped, metrics
    )


def _model_name(source: Any) -> str | None:
    d = source.describe()
    if d.get("kind") == "model":
        return d["model"].get("name")
    model = (getattr(getattr(source, "store", None), "meta", {}) or {}).get("model") or {}
    return model.get("name") if isinstance(model, dict) else None


def _inference_copy(sae: SparseAutoencoder, scale: float) -> SparseAutoencoder:
    final = SparseAutoencoder(sae.cfg, device="cpu")
    final.load_state_dict({k: v.detach().cpu() for k, v in sae.state_dict().items()})
    if scale != 1.0:
        final.fold_input_scale(scale)
    return final


def _initialize(sae: SparseAutoencoder, source: Any, cfg: TrainConfig, device, dist_: _Dist) -> float:
    """Estimate the input scale and the decoder bias from the first rows of the stream, then init weights."""
    n_batches = max(1, math.ceil(cfg.init_rows / cfg.batch_size))
    stream = batches(source, cfg.batch_size, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed)
    try:
        x = torch.cat([next(stream) for _ in range(n_batches)])[: cfg.init_rows]
    finally:
        stream.close()
    scale = 1.0
    if cfg.normalize == "mean_norm":
        mean_norm = float(x.norm(dim=1).mean())
        if mean_norm <= 0:
            raise SAEError("the training rows are all zero; nothing to learn")
        scale = math.sqrt(x.shape[1]) / mean_norm
    xs = x * scale
    if cfg.b_dec_init == "geometric_median":
        b = geometric_median(xs)
    elif cfg.b_dec_init == "mean":
        b = xs.mean(0)
    else:
        b = torch.zeros(x.shape[1])
    norm = (
        cfg.decoder_init_norm if cfg.decoder_init_norm is not None else (0.1 if cfg.arch == "relu" else 1.0)
    )
    g = torch.Generator().manual_seed(cfg.seed)
    cpu = SparseAutoencoder(sae.cfg)
    cpu.initialize(g, b_dec=b, decoder_norm=norm, threshold=cfg.jumprelu_init_threshold)
    sae.load_state_dict(cpu.state_dict())
    return scale


def _broadcast_text(text: str | None, dist_: _Dist) -> str | None:
    """Rank 0's string (or None) on every rank, sent as bytes in a tensor (no pickling)."""
    import torch.distributed as dist

    dev = torch.device(f"cuda:{dist_.local_rank}") if dist.get_backend() == "nccl" else torch.device("cpu")
    data = b"\x00" if text is None else b"\x01" + text.encode()
    n = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    dist.broadcast(n, src=0)
    buf = torch.zeros(int(n), dtype=torch.uint8, device=dev)
    if dist_.main:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buf, src=0)
    raw = bytes(buf.cpu().tolist())
    return None if raw[:1] == b"\x00" else raw[1:].decode()


def _all_reduce_grads(sae: SparseAutoencoder, counts: torch.Tensor, world: int) -> torch.Tensor:
    """Average the gradients over ranks; return the per-latent firing counts summed over ranks."""
    import torch.distributed as dist

    for p in sae.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)
    total = counts.to(torch.int64).clone()
    dist.all_reduce(total)
    return total


# ---- folder, checkpoints -------------------------------------------------------------------------------


def _checkpoints(out: Path) -> list[Path]:
    d = out / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(
        p for p in d.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / "state.json").is_file()
    )


def _prepare_out(out: Path, identity: dict[str, Any], *, resume: bool, overwrite: bool) -> str | None:
    """Make ``out`` ready; return the checkpoint to resume from, "complete", or None for a fresh start."""
    if out.exists() and not out.is_dir():
        raise SAEError(f"{out} is a file; the SAE output is a folder")
    summary = out / SUMMARY_FILE
    ckpts = _checkpoints(out)
    if overwrite and out.exists():
        for name in (io.CFG_FILE, io.WEIGHTS_FILE, io.SPARSITY_FILE, SUMMARY_FILE, METRICS_FILE, RUN_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
        ckpts = []
    elif summary.is_file():
        done = json.loads(summary.read_text())
        if not resume:
            raise SAEError(f"{out} already holds a trained SAE; pass --overwrite to train it again")
        _same_run(out, identity, {"config": done["config"], "source": done["source"]}, done)
        return "complete"
    elif ckpts:
        if not resume:
            raise SAEError(f"{out} holds checkpoints of an unfinished run; resume it or pass --overwrite")
        state = json.loads((ckpts[-1] / "state.json").read_text())
        _same_run(out, identity, state["identity"], state)
        # A checkpoint being written when the run was killed leaves a hidden temporary folder.
        remove_leftovers(out / CKPT_DIR)
        return str(ckpts[-1])
    elif (out / RUN_FILE).is_file():
        # Killed before its first checkpoint: nothing to keep, so the same run starts over.
        run = json.loads((out / RUN_FILE).read_text())
        if not resume:
            raise SAEError(
                f"{out} holds an unfinished run with no checkpoint yet; resume it or pass --overwrite"
            )
        _same_run(out, identity, run["identity"], run)
        shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
    elif out.is_dir() and any(out.iterdir()):
        raise SAEError(f"{out} is not empty and holds no SAE run; choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).unlink(missing_ok=True)
    # Written before anything else, so a rerun recognises the folder as this run's however early it died.
    atomic_write_json(out / RUN_FILE, {"version": STATE_VERSION, "identity": identity}, indent=1)
    return None


def _same_run(out: Path, identity: dict[str, Any], old: dict[str, Any], extra: dict[str, Any]) -> None:
    new_cfg, old_cfg = identity["config"], dict(old["config"])
    if "config" in extra and "identity" not in extra:
        old_cfg = {k: v for k, v in old_cfg.items() if k in new_cfg}
    diff = sorted(k for k in new_cfg if json.dumps(new_cfg[k]) != json.dumps(old_cfg.get(k)))
    src_new = {k: v for k, v in identity["source"].items() if k != "rows"}
    src_old = {k: v for k, v in old["source"].items() if k != "rows"}
    if src_new != src_old:
        diff.append("source")
    if diff:
        raise SAEError(
            f"{out} holds a run with other settings ({', '.join(diff)}); use the same settings to resume, "
            "--overwrite to start again, or another output folder"
        )


def _save_checkpoint(out, cfg, sae, opt, step, tokens, scale, counters, identity, dist_, sums) -> None:
    since_fired, fire_count, fire_rows, dead_idx = counters
    acc_t, acc_n = sums
    if not dist_.main:
        if dist_.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return
    tensors = {f"sae.{k}": v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    names = {id(p): n for n, p in sae.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for key, val in st.items():
                tensors[f"opt.{names[id(p)]}.{key}"] = torch.as_tensor(val).detach().cpu().contiguous()
    tensors["since_fired"] = since_fired.cpu()
    tensors["fire_count"] = fire_count.cpu()
    # AuxK's dead set is refreshed only at log steps: a resumed run must start from the same set
    if dead_idx is not None:
        tensors["dead_idx"] = dead_idx.cpu().contiguous()
    # The metric sums since the last log line: the next line averages over steps on both sides of a resume.
    tensors.update({f"acc.{k}": v.detach().cpu().reshape(()).contiguous() for k, v in acc_t.items()})
    state = {
        "version": STATE_VERSION,
        "step": step,
        "tokens": tokens,
        "scale": scale,
        "fire_rows": fire_rows,
        "acc_n": acc_n,
        "identity": identity,
    }
    root = out / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    with replace_dir(root / f"step_{step:08d}") as tmp:  # a checkpoint appears whole or not at all
        save_file(tensors, str(tmp / "state.safetensors"))
        io.save_sae(_inference_copy(sae, scale), tmp)
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for old in _checkpoints(out)[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    if dist_.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _load_checkpoint(path: Path, sae, opt, since_fired, fire_count) -> tuple[Any, ...]:
    state = json.loads((path / "state.json").read_text())
    if state.get("version") != STATE_VERSION:
        raise SAEError(f"{path}: checkpoint format {state.get('version')} is not {STATE_VERSION}")
    try:
        with safe_open(str(path / "state.safetensors"), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises several kinds; name the file
        raise SAEError(f"{path}/state.safetensors: unreadable checkpoint ({e})") from None
    sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
    names = [n for n, _ in sae.named_parameters()]
    osd = opt.state_dict()
    osd["state"] = {}
    for i, n in enumerate(names):
        st = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"opt.{n}.")}
        if st:
            osd["state"][i] = st
    opt.load_state_dict(osd)
    since_fired.copy_(tensors["since_fired"])
    fire_count.copy_(tensors["fire_count"])
    # metrics.jsonl may hold records written after this checkpoint by the interrupted run
    mpath = path.parent.parent / METRICS_FILE
    if mpath.is_file():
        keep = [ln for ln in mpath.read_text().splitlines() if ln and json.loads(ln)["step"] <= state["step"]]
        atomic_write_text(mpath, "".join(ln + "\n" for ln in keep))
    dead_idx = tensors.get("dead_idx")
    acc_t = {k[4:]: v for k, v in tensors.items() if k.startswith("acc.")}
    return (
        int(state["step"]),
        int(state["tokens"]),
        float(state["scale"]),
        int(state["fire_rows"]),
        dead_idx,
        acc_t,
        int(state.get("acc_n", 0)),
    )
