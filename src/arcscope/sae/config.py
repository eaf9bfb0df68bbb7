"""Training settings: one dataclass, one source of defaults, one line of help under every field.

The CLI's options and ``KEY=VALUE`` overrides, YAML files and Python callers all fill :class:`TrainConfig`
through the config core (:mod:`arcscope.config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from arcscope.config import Config
from arcscope.errors import ArcscopeError

ARCHS = ("relu", "topk", "batchtopk", "jumprelu")
"""Architectures: ReLU + L1, TopK (+AuxK), BatchTopK (+AuxK), JumpReLU (L0 with straight-through estimator)."""


class SAEError(ArcscopeError, ValueError):
    """A sparse-autoencoder file, setting or input is invalid; the message names it and the rule."""


@dataclass
class TrainConfig(Config):
    """Everything that decides what an SAE training run computes (and so what resume must match)."""

    config_error = SAEError
    config_name = "SAE training"
    identity_exclude = ("prefetch", "verify", "on_damaged", "device", "checkpoint_every")
    identity_exclude += ("keep_checkpoints", "log_every")  # how a run is watched, not what it computes

    arch: str = "topk"
    """Architecture: relu (ReLU + L1), topk, batchtopk or jumprelu."""
    latents: int | None = None
    """Number of latents; None uses expansion x the hook width."""
    expansion: int = 16
    """Latents per input dimension when ``latents`` is not given."""
    k: int = 32
    """Active latents per row for topk and batchtopk (batchtopk: on average over the batch)."""
    batch_size: int = 4096
    """Rows per optimizer step, over all ranks together."""
    tokens: int | None = None
    """Rows to train on; None trains for ``epochs`` passes over the store."""
    epochs: float = 1.0
    """Passes over the store when ``tokens`` is not given."""
    lr: float | None = None
    """Adam learning rate; None uses 2e-4 / sqrt(latents / 2^14) (the sparsify/OpenAI scaling)."""
    lr_warmup: int = 1000
    """Steps of linear learning-rate warmup."""
    lr_decay: float = 0.2
    """Fraction of the run at its end over which the learning rate decays linearly to 0."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam beta1 and beta2."""
    max_grad_norm: float | None = None
    """Clip the gradient norm to this value; None does not clip."""
    normalize: str = "mean_norm"
    """Input scaling: mean_norm (scale rows to mean norm sqrt(d), folded into the saved weights) or none."""
    b_dec_init: str = "geometric_median"
    """Decoder bias initialisation: geometric_median, mean or zeros."""
    init_rows: int = 16384
    """Rows used to estimate the input scale and the decoder bias."""
    decoder_init_norm: float | None = None
    """Norm of the initial decoder rows; None: 0.1 for relu, 1 otherwise."""
    aux_k: int | None = None
    """AuxK: dead latents used to model the residual (topk, batchtopk); None uses d_in / 2."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss (0 turns it off)."""
    dead_tokens: int = 1_000_000
    """A latent that has not fired for this many rows is dead (AuxK revives it; eval counts it)."""
    l1_coefficient: float = 5.0
    """relu: weight of the decoder-norm-scaled L1 penalty."""
    l0_coefficient: float = 0.002
    """jumprelu: weight of the L0 penalty."""
    sparsity_warmup: int = 1000
    """relu, jumprelu: steps over which the sparsity penalty ramps up linearly from 0."""
    jumprelu_init_threshold: float = 0.01
    """jumprelu: initial threshold (in units of the scaled input)."""
    jumprelu_bandwidth: float = 0.05
    """jumprelu: width of the straight-through estimator's rectangle kernel."""
    batchtopk_threshold_lr: float = 0.01
    """batchtopk: EMA rate of the inference threshold (the smallest kept activation per batch)."""
    shuffle_buffer: int = 262144
    """Rows held in the shuffle buffer (0: no shuffle, store order)."""
    prefetch: int = 4
    """Shards read ahead on background threads."""
    verify: str = "sha256"
    """Check each shard before use: sha256 (size, hash and header) or size (size and header only)."""
    on_damaged: str = "error"
    """A damaged or unreadable shard: error (stop and name it) or skip (train on the rest, report it)."""
    seed: int = 0
    """Seed for initialisation and data order; the same seed gives the same bytes on the same machine."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N (torchrun ranks use cuda:LOCAL_RANK)."""
    dtype: str = "auto"
    """Matmul precision: auto (bfloat16 autocast on CUDA, float32 elsewhere), bfloat16 or float32."""
    checkpoint_every: int = 1000
    """Save a resumable checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (the newest ones)."""
    log_every: int = 20
    """Steps between metric records (metrics.jsonl and the progress line)."""

    def validate(self) -> TrainConfig:
        """Check every field; raise SAEError naming the field and the allowed values."""
        if isinstance(self.adam_betas, list):
            self.adam_betas = tuple(self.adam_betas)
        choices = {
            "arch": ARCHS,
            "normalize": ("mean_norm", "none"),
            "b_dec_init": ("geometric_median", "mean", "zeros"),
            "verify": ("sha256", "size"),
            "on_damaged": ("error", "skip"),
            "dtype": ("auto", "bfloat16", "float32"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SAEError(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        positive = ["expansion", "k", "batch_size", "init_rows", "log_every", "keep_checkpoints"]
        for name in positive:
            if getattr(self, name) < 1:
                raise SAEError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("latents", "tokens", "aux_k"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise SAEError(f"{name} must be >= 1 (or unset), got {v}")
        nonneg = ["lr_warmup", "aux_coefficient", "dead_tokens", "l1_coefficient", "l0_coefficient"]
        nonneg += ["sparsity_warmup", "shuffle_buffer", "prefetch", "checkpoint_every"]
        for name in nonneg:
            if getattr(self, name) < 0:
                raise SAEError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.lr_decay <= 1:
            raise SAEError(f"lr_decay must be in [0, 1], got {self.lr_decay}")
        if self.epochs <= 0:
            raise SAEError(f"epochs must be > 0, got {self.epochs}")
        if self.lr is not None and self.lr <= 0:
            raise SAEError(f"lr must be > 0, got {self.lr}")
        if self.jumprelu_init_threshold <= 0 or self.jumprelu_bandwidth <= 0:
            raise SAEError("jumprelu_init_threshold and jumprelu_bandwidth must be > 0")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise SAEError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        return self

    def n_latents(self, d_in: int) -> int:
        """The latent count for an input width ``d_in``."""
        return self.latents if self.latents is not None else self.expansion * d_in

    def learning_rate(self, d_sae: int) -> float:
        """The Adam learning rate for ``d_sae`` latents."""
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(d_sae / 2**14)


@dataclass
class EvalConfig(Config):
    """Settings of an SAE evaluation (`arcscope sae eval`)."""

    config_error = SAEError
    config_name = "SAE evaluation"

    rows: int | None = 65536
    """Rows to measure reconstruction on (None or 0: all)."""
    batch_size: int = 4096
    """Rows per forward pass of the SAE."""
    downstream: bool = True
    """Also splice the SAE into the model: cross-entropy increase, CE recovered and KL."""
    prompts: int = 4
    """Prompts for the downstream loss."""
    device: str = "auto"
    """Device for the model and the SAE: auto, cpu, cuda, cuda:N or mps."""

    def validate(self) -> EvalConfig:
        """Check the counts."""
        if self.rows == 0:
            self.rows = None
        for name in ("rows", "batch_size", "prompts"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise SAEError(f"{name} must be >= 1, got {v}")
        return self


@dataclass
class DashboardConfig(Config):
    """What an SAE dashboard measures and shows (`arcscope sae dashboard`)."""

    config_error = SAEError
    config_name = "SAE dashboard"

    top: int = 32
    """Top-activating rows kept per latent."""
    examples: int = 6
    """Example grids per latent page."""
    rows: int | None = None
    """Rows of the store to scan (None or 0: all)."""
    max_pages: int | None = None
    """Latent pages at most, for the most often firing latents (None or 0: every latent that fired)."""
    logits: bool = True
    """Compute each latent's logit effects through the model's unembedding."""

    def validate(self) -> DashboardConfig:
        """Check the counts (0 means no limit for rows and max_pages)."""
        self.rows = self.rows or None
        self.max_pages = self.max_pages or None
        for name in ("top", "examples", "rows", "max_pages"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise SAEError(f"{name} must be >= 1, got {v}")
        return self
