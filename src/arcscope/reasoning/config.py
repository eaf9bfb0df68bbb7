"""Configs for HRM, TRM and their training: dataclasses with the original defaults, YAML files, CLI overrides.

The dataclass defaults are the one source of defaults. :class:`HRMConfig` follows sapientinc/HRM
``config/arch/hrm_v1.yaml``, :class:`TRMConfig` SamsungSAILMontreal/TinyRecursiveModels
``config/arch/trm.yaml`` and :class:`TrainConfig` their ``cfg_pretrain.yaml``. Overrides are ``key=value``
strings with dotted keys (``arch.hidden_size=128``, ``lr=3e-4``); values are parsed as YAML scalars and
checked against the field's type; an unknown key raises :class:`ConfigError` with the keys that exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml

from arcscope import config as core
from arcscope.config import Config, ConfigError

__all__ = [
    "ConfigError",
    "HRMConfig",
    "TRMConfig",
    "ArchConfig",
    "TrainConfig",
    "PRESETS",
    "preset",
    "load_config",
    "apply_overrides",
]


@dataclass
class HRMConfig(Config):
    """HRM ACT v1: two recurrent transformer modules (H slow, L fast) with Q-learning halting."""

    config_name = "architecture"

    name: str = "hrm"
    """Architecture: 'hrm' (this class) or 'trm'."""
    # ---- set from the dataset at build time
    seq_len: int = 81
    """Tokens per example (from the dataset's dataset.json)."""
    vocab_size: int = 11
    """Token vocabulary (from the dataset)."""
    num_puzzle_identifiers: int = 1
    """Puzzle embedding rows (from the dataset)."""
    batch_size: int = 768
    """Per-process batch size; the sparse puzzle embedding keeps a gradient buffer of this many rows."""
    # ---- recurrence
    H_cycles: int = 2
    """Slow (H) updates per ACT step."""
    L_cycles: int = 2
    """Fast (L) updates per H update."""
    H_layers: int = 4
    """Transformer blocks of the H module."""
    L_layers: int = 4
    """Transformer blocks of the L module."""
    # ---- transformer
    hidden_size: int = 512
    """Width of every token state."""
    expansion: float = 4.0
    """SwiGLU width factor (inner = 2/3 * expansion * hidden, rounded up to a multiple of 256)."""
    num_heads: int = 8
    """Attention heads (head dim = hidden_size / num_heads)."""
    pos_encodings: str = "rope"
    """'rope' or 'learned' positions."""
    rms_norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    rope_theta: float = 10000.0
    """RoPE base."""
    puzzle_emb_ndim: int | None = None
    """Puzzle embedding width; None means hidden_size, 0 turns puzzle embeddings off."""
    # ---- halting
    halt_max_steps: int = 16
    """ACT steps at most (evaluation always runs this many)."""
    halt_exploration_prob: float = 0.1
    """Chance per sequence of a random minimum number of steps during training."""
    # ---- numerics and loss
    forward_dtype: str = "auto"
    """Compute dtype: 'bfloat16' (the original), 'float32', or 'auto' (bfloat16 on CUDA, float32 on CPU)."""
    loss_type: str = "stablemax_cross_entropy"
    """'stablemax_cross_entropy' (the original) or 'softmax_cross_entropy'."""

    @property
    def puzzle_emb_dim(self) -> int:
        """The puzzle embedding width actually used."""
        return self.hidden_size if self.puzzle_emb_ndim is None else int(self.puzzle_emb_ndim)

    @property
    def puzzle_emb_positions(self) -> int:
        """Sequence positions the puzzle embedding takes in front of the tokens (ceil(ndim / hidden))."""
        d = self.puzzle_emb_dim
        return -(d // -self.hidden_size) if d > 0 else 0

    @property
    def no_act_continue(self) -> bool:
        """HRM trains q_continue with a bootstrapped target."""
        return False

    @classmethod
    def config_variant(cls, data: Mapping[str, Any], where: str) -> type[HRMConfig]:
        """The architecture class that ``data['name']`` names (the config core asks before building)."""
        name = str(data.get("name", cls.name))
        if name not in ARCHS:
            raise ConfigError(
                f"{where}: unknown architecture arch.name={name!r}; choose one of {sorted(ARCHS)}"
            )
        return ARCHS[name]

    @classmethod
    def config_unknown_hint(cls, key: str, where: str, prefix: str) -> None:
        """A TRM-only key given to HRM: say to switch the architecture."""
        if cls is HRMConfig and key in {f.name for f in fields(TRMConfig)}:
            raise ConfigError(
                f"{where}: '{prefix}{key}' is a TRM setting; the architecture is hrm (set arch.name=trm)"
            )


@dataclass
class TRMConfig(HRMConfig):
    """TRM: one small network updating the answer (z_H) and the latent (z_L); full backprop through the last cycle."""

    name: str = "trm"
    H_cycles: int = 3
    """Answer updates per ACT step (all but the last without gradient)."""
    L_cycles: int = 6
    """Latent updates per answer update."""
    H_layers: int = 0
    """Unused by TRM (kept for config compatibility)."""
    L_layers: int = 2
    """Blocks of the single network."""
    mlp_t: bool = False
    """Mix tokens with an MLP over the sequence instead of attention (the Sudoku variant)."""
    puzzle_emb_len: int = 16
    """Positions reserved for the puzzle embedding; 0 means ceil(ndim / hidden)."""
    no_ACT_continue: bool = True
    """Halt on sigmoid(q_halt) > 0.5 alone and train no q_continue (TRM's simplified halting)."""

    @property
    def puzzle_emb_positions(self) -> int:
        """Positions the puzzle embedding takes (puzzle_emb_len unless 0; none without embeddings)."""
        if self.puzzle_emb_dim <= 0:
            return 0
        return self.puzzle_emb_len if self.puzzle_emb_len else -(self.puzzle_emb_dim // -self.hidden_size)

    @property
    def no_act_continue(self) -> bool:
        """Whether q_continue is ignored (TRM default) or trained as in HRM."""
        return bool(self.no_ACT_continue)


ArchConfig = HRMConfig | TRMConfig
ARCHS: dict[str, type[HRMConfig]] = {"hrm": HRMConfig, "trm": TRMConfig}


@dataclass
class TrainConfig(Config):
    """Training settings (defaults: the original cfg_pretrain.yaml) and the architecture under ``arch``."""

    config_name = "config"

    arch: HRMConfig = field(default_factory=HRMConfig)
    """The model: HRMConfig or TRMConfig fields."""
    data_path: str = ""
    """Dataset folder in the HRM layout (`arcscope puzzles build`)."""
    global_batch_size: int = 768
    """Examples per optimiser step over all processes."""
    epochs: int = 100000
    """Passes over the train groups (HRM counts total steps as epochs * groups * mean examples / batch)."""
    max_steps: int | None = None
    """Stop after this many steps (overrides the count from epochs)."""
    eval_interval: float | None = 10000
    """Evaluate every this many epochs (None: only at the end)."""
    eval_max_batches: int | None = None
    """Evaluate on at most this many test batches (None: the whole test split)."""
    checkpoint_every_eval: bool = True
    """Save a checkpoint at every evaluation."""
    checkpoint_path: str | None = None
    """Folder for checkpoints and the metrics log (default: runs/reasoning/ARCH-DATASET)."""
    lr: float = 1e-4
    """Peak learning rate of the model weights."""
    lr_min_ratio: float = 1.0
    """Final learning rate as a fraction of the peak (1.0: constant after warm-up)."""
    lr_warmup_steps: int = 2000
    """Linear warm-up steps."""
    optimizer: str = "adam_atan2"
    """'adam_atan2' (the original) or 'adamw'."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2."""
    weight_decay: float = 0.1
    """Decoupled weight decay of the model weights."""
    grad_clip: float = 0.0
    """Clip the gradient norm to this value (0: off, as in the original)."""
    puzzle_emb_lr: float = 1e-2
    """Learning rate of the sign-SGD puzzle embedding optimiser."""
    puzzle_emb_weight_decay: float = 0.1
    """Weight decay of the puzzle embeddings."""
    ema: bool = False
    """Keep an exponential moving average of the weights and evaluate/save it (TRM)."""
    ema_rate: float = 0.999
    """EMA decay per step."""
    seed: int = 0
    """Seed of the weights, the data order and the halting exploration."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."""
    compile: bool = False
    """torch.compile the model (CUDA only)."""
    threads: int | None = None
    """CPU threads for torch (None: torch's default). 1 is often fastest for tiny models on a busy machine."""
    log_every: int = 10
    """Write a metrics line every this many steps."""
    tensorboard: bool = True
    """Also log to TensorBoard when the tensorboard package is installed."""
    wandb: bool = False
    """Also log to Weights & Biases when installed."""
    project_name: str | None = None
    """W&B project name."""

    def to_yaml(self) -> str:
        """The config as YAML (what `arcscope reasoning config` prints and checkpoints keep)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def config_unknown_hint(cls, key: str, where: str, prefix: str) -> None:
        """An architecture key given at the top level: say where it goes."""
        if not prefix and key in {f.name for f in fields(TRMConfig)}:
            raise ConfigError(f"{where}: '{key}' is an architecture key; write arch.{key}=VALUE")


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str], source: str = "override") -> TrainConfig:
    """A copy of ``cfg`` with ``key=value`` overrides applied (dotted keys reach into ``arch``).

    ``arch.name=trm`` switches architecture: the arch section restarts from that architecture's defaults
    and the other ``arch.*`` overrides apply on top.
    """
    return core.apply_overrides(cfg, overrides, source)


def _sudoku_tiny() -> TrainConfig:
    # The recipe of the bundled checkpoint (`arcscope reasoning train --preset sudoku-tiny`).
    arch = TRMConfig(
        hidden_size=64,
        num_heads=4,
        expansion=2.0,
        L_layers=2,
        H_cycles=2,
        L_cycles=3,
        halt_max_steps=4,
        puzzle_emb_ndim=0,
        puzzle_emb_len=0,
        pos_encodings="learned",
        forward_dtype="float32",
    )
    return TrainConfig(
        arch=arch,
        global_batch_size=64,
        epochs=40,
        eval_interval=10,
        lr=1e-3,
        lr_min_ratio=0.1,
        lr_warmup_steps=100,
        weight_decay=0.1,
        ema=True,
        ema_rate=0.99,
        log_every=20,
        threads=1,
        tensorboard=False,
    )


PRESETS: dict[str, Any] = {
    "hrm": lambda: TrainConfig(arch=HRMConfig()),
    "trm": lambda: TrainConfig(arch=TRMConfig(), ema=True),
    "sudoku-tiny": _sudoku_tiny,
}
"""Named starting configs: the two originals and the bundled model's recipe."""


def preset(name: str) -> TrainConfig:
    """A fresh copy of a named preset config."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a YAML config written by `arcscope reasoning config` (or by hand)."""
    return TrainConfig.from_yaml(path)


def with_data(
    arch: HRMConfig, *, seq_len: int, vocab_size: int, num_puzzle_identifiers: int, batch_size: int
) -> HRMConfig:
    """``arch`` with the dataset-dependent fields set."""
    return replace(
        arch,
        seq_len=seq_len,
        vocab_size=vocab_size,
        num_puzzle_identifiers=num_puzzle_identifiers,
        batch_size=batch_size,
    )


@dataclass
class EvalConfig(Config):
    """Settings of `arcscope reasoning eval` (the library's :func:`~arcscope.reasoning.evaluate.evaluate`)."""

    config_name = "reasoning evaluation"

    split: str = "test"
    """Dataset split to evaluate."""
    batch_size: int = 256
    """Examples per forward pass, over all processes."""
    max_batches: int | None = None
    """Evaluate at most this many batches (None: the whole split)."""
    ks: list[int] = field(default_factory=lambda: [1, 2])
    """ARC: pass@k to report."""
    adaptive: bool = False
    """ARC: vote with the answers at the halting step instead of the last step."""
    device: str = "auto"
    """Where to load the model: auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:N or mps."""

    def validate(self) -> EvalConfig:
        """Check the counts."""
        if self.batch_size < 1 or (self.max_batches is not None and self.max_batches < 1):
            raise ConfigError(f"{self.config_name}: batch_size and max_batches must be >= 1")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"{self.config_name}: ks must be one or more integers >= 1, got {self.ks}")
        return self


@dataclass
class CaptureConfig(Config):
    """Settings of `arcscope reasoning capture` (:func:`~arcscope.reasoning.capture.capture_to_store`)."""

    config_name = "reasoning capture"

    split: str = "test"
    """Dataset split to run."""
    hooks: list[str] | None = None
    """Recurrent states to keep, e.g. z_H.1,z_L.1.1 (None: all)."""
    steps: int | None = None
    """ACT steps to run (None: halt_max_steps)."""
    max_examples: int | None = None
    """Capture at most this many examples (None: the whole split)."""
    positions: str = "tokens"
    """tokens (the puzzle's positions), or all (with the puzzle-embedding prefix)."""
    batch_size: int = 64
    """Examples per forward pass."""
    device: str = "auto"
    """Where to load the model: auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:N or mps."""

    def validate(self) -> CaptureConfig:
        """Check the counts and the positions."""
        for name in ("steps", "max_examples", "batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{self.config_name}: {name} must be >= 1, got {v}")
        if self.positions not in ("tokens", "all"):
            raise ConfigError(f"{self.config_name}: positions must be tokens or all, got {self.positions!r}")
        return self
