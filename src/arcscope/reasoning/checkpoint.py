"""Checkpoints: a folder with ``model.safetensors`` and ``config.json``; loading the original code's checkpoints too.

arcscope writes::

    CKPT/config.json              {"format": "arcscope.reasoning", "arch": {...}, "train": {...}, "step": N, ...}
    CKPT/model.safetensors        state dict of the ACT model, keys as the original (``inner.H_level...``)
    CKPT/train_state.safetensors  raw weights, EMA, optimiser moments, ACT carry and torch RNG state of
                                  every process, the data stream's group order (resume only)
    CKPT/train_state.json         step, epoch, data stream position, optimiser scalars (resume only)

The original HRM / TRM training scripts save ``torch.save(model.state_dict())`` of the compiled loss head,
so their keys read ``_orig_mod.model.inner...``, with ``all_config.yaml`` beside them. :func:`load_model`
accepts those files (read with ``torch.load(weights_only=True)``, which unpickles tensors only), safetensors
files with either key layout, and arcscope folders. Dataset-dependent sizes missing from the original
config (vocabulary, puzzle identifiers) are read off the weights' shapes; ``seq_len`` comes from the
learned position table, a dataset, or the caller.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from arcscope.errors import ModelError
from arcscope.files import atomic_path, atomic_write_json
from arcscope.reasoning.act import ACTModel
from arcscope.reasoning.config import ARCHS, HRMConfig, TRMConfig

FORMAT = "arcscope.reasoning"

__all__ = [
    "CheckpointError",
    "build_model",
    "save_checkpoint",
    "load_model",
    "load_state",
    "normalize_keys",
    "read_config",
]


class CheckpointError(ModelError):
    """A checkpoint is missing, unreadable, or does not fit the model (names the key and the shapes)."""


def build_model(cfg: HRMConfig, device: torch.device | str | None = None) -> ACTModel:
    """A fresh HRM or TRM for ``cfg``, built directly on ``device``."""
    from arcscope.reasoning.hrm import HRM
    from arcscope.reasoning.trm import TRM

    dev = torch.device(device) if device is not None else torch.device("cpu")
    # Building on the device (not moving afterwards) keeps the sparse embedding's gradient buffer a leaf.
    with dev:
        if isinstance(cfg, TRMConfig):
            return TRM(cfg, dev)
        return HRM(cfg, dev)


def normalize_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the wrappers of the original checkpoints (``_orig_mod.`` of torch.compile, ``model.`` of the loss head)."""
    out = {}
    for k, v in sd.items():
        key = k
        for prefix in ("_orig_mod.", "module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = v
    return out


def load_state(model: ACTModel, sd: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``sd`` (either key layout) into ``model``; a missing, unknown or wrongly shaped key raises :class:`CheckpointError`."""
    sd = normalize_keys(sd)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing:
        raise CheckpointError(
            f"{source}: the checkpoint lacks {len(missing)} tensor(s) the {model.config.name} model needs, e.g. "
            f"'{missing[0]}'; was it saved from another architecture or config?"
        )
    if unexpected:
        raise CheckpointError(
            f"{source}: the checkpoint holds {len(unexpected)} tensor(s) the {model.config.name} model does not have, "
            f"e.g. '{unexpected[0]}'; check arch.name and the layer counts"
        )
    for k, t in own.items():
        if tuple(sd[k].shape) != tuple(t.shape):
            raise CheckpointError(
                f"{source}: tensor '{k}' has shape {list(sd[k].shape)} but the model expects {list(t.shape)}; "
                "the config (hidden_size, layers, vocab_size, seq_len, puzzle identifiers) does not match the weights"
            )
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(sd[k].to(device=t.device, dtype=t.dtype))


def save_checkpoint(
    path: str | os.PathLike[str],
    model: ACTModel,
    *,
    train_config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into the folder ``path`` (``state_dict`` overrides the model's)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    with atomic_path(p / "model.safetensors") as tmp:
        # One metadata entry: safetensors writes several in hash order, which changes from run to run, and
        # the same training must give the same bytes. The architecture is in config.json.
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    cfg = {"format": FORMAT, "arch": asdict(model.config), "train": train_config or {}, **(extra or {})}
    atomic_write_json(p / "config.json", cfg, indent=1, default=str)
    return p


def _arch_from_dict(obj: dict[str, Any], source: str) -> HRMConfig:
    name = str(obj.get("name", "hrm"))
    # The originals name the class ("hrm.hrm_act_v1@...", "recursive_reasoning.trm@..."); arcscope names the arch.
    arch = "trm" if "trm" in name.lower() or "recursive" in name.lower() else "hrm"
    cls = ARCHS[arch]
    known = {f.name for f in fields(cls)}
    kw = {k: v for k, v in obj.items() if k in known and k != "name"}
    loss = obj.get("loss")
    if isinstance(loss, dict) and loss.get("loss_type") and "loss_type" not in kw:
        kw["loss_type"] = loss["loss_type"]
    try:
        return cls(**kw, name=arch)
    except TypeError as e:
        raise CheckpointError(f"{source}: bad architecture config ({e})") from None


def read_config(path: str | os.PathLike[str]) -> tuple[HRMConfig, dict[str, Any]]:
    """The architecture and the rest of ``config.json`` (arcscope) or ``all_config.yaml`` (original) in a folder."""
    p = Path(path)
    if (p / "config.json").exists():
        obj = json.loads((p / "config.json").read_text())
        return _arch_from_dict(obj.get("arch", {}), str(p / "config.json")), obj
    if (p / "all_config.yaml").exists():
        obj = yaml.safe_load((p / "all_config.yaml").read_text()) or {}
        arch = dict(obj.get("arch", {}))
        return _arch_from_dict(arch, str(p / "all_config.yaml")), obj
    raise CheckpointError(f"{p}: no config.json (arcscope) or all_config.yaml (original) beside the weights")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read failure is the same user-facing problem
        raise CheckpointError(f"{path}: cannot read the weights ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return obj


def _fill_from_weights(
    cfg: HRMConfig, sd: dict[str, torch.Tensor], seq_len: int | None, source: str
) -> HRMConfig:
    sd = normalize_keys(sd)
    changes: dict[str, Any] = {}
    if "inner.embed_tokens.embedding_weight" in sd:
        vocab, hidden = sd["inner.embed_tokens.embedding_weight"].shape
        changes.update(vocab_size=int(vocab), hidden_size=int(hidden))
    if "inner.puzzle_emb.weights" in sd:
        n, d = sd["inner.puzzle_emb.weights"].shape
        changes.update(num_puzzle_identifiers=int(n), puzzle_emb_ndim=int(d))
    else:
        changes.update(puzzle_emb_ndim=0)
    cfg = type(cfg)(**{**asdict(cfg), **changes})
    if "inner.embed_pos.embedding_weight" in sd:
        changes["seq_len"] = int(sd["inner.embed_pos.embedding_weight"].shape[0]) - cfg.puzzle_emb_positions
    elif seq_len is not None:
        changes["seq_len"] = int(seq_len)
    return type(cfg)(**{**asdict(cfg), **changes})


def load_model(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    seq_len: int | None = None,
    config: HRMConfig | None = None,
) -> tuple[ACTModel, dict[str, Any]]:
    """Load a checkpoint (arcscope folder, original ``step_N`` file, or a safetensors file); returns (model, config dict).

    ``seq_len`` is needed for original RoPE checkpoints when no dataset says it (arcscope checkpoints know
    theirs and ignore it); ``config`` replaces the config found beside the weights.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file or folder")
    folder = p if p.is_dir() else p.parent
    if p.is_dir():
        if (p / "model.safetensors").exists():
            weights = p / "model.safetensors"
        else:
            steps = sorted(
                p.glob("step_*"),
                key=lambda q: int(q.name.split("_")[1]) if q.name.split("_")[1].isdigit() else -1,
            )
            steps = [s for s in steps if s.is_file() and s.name.split("_")[1].isdigit()]
            if not steps:
                raise CheckpointError(
                    f"{p}: holds neither model.safetensors nor an original step_N checkpoint"
                )
            weights = steps[-1]
    else:
        weights = p
    sd = _read_weights(weights)
    extra: dict[str, Any] = {}
    if config is None:
        config, extra = read_config(folder)
    if extra.get("format") != FORMAT:
        # Only the original checkpoints lack sizes; an arcscope config is complete, so a dataset that does
        # not fit it is reported by evaluate() rather than silently resized here.
        if seq_len is None:
            data_path = extra.get("data_path")
            meta = Path(str(data_path)) / "train" / "dataset.json" if data_path else None
            if meta is not None and meta.exists():
                seq_len = int(json.loads(meta.read_text())["seq_len"])
        config = _fill_from_weights(config, sd, seq_len, str(weights))
    model = build_model(config, device)
    load_state(model, sd, str(weights))
    model.eval()
    return model, extra
