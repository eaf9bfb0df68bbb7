"""Settings of the `arcscope analyze` commands: one dataclass per analysis, the single source of defaults.

Every analysis looks at one task of a task source through one model (:class:`SubjectConfig`); each command
adds its own fields. Torch-free, so the CLI builds its options without importing the models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from arcscope.config import Config, ConfigError
from arcscope.errors import ArcscopeError

METRICS = ("logprob", "prob", "logit_diff")
"""Answer metrics: log-probability or probability of the correct colour token, or its logit minus the best
other colour's."""
CORRUPTIONS = ("cell", "swap-pair", "colours", "dihedral")
"""Corruption kinds for patching (see arcscope.analysis.corrupt)."""


class AnalysisError(ArcscopeError, ValueError):
    """An analysis cannot run as asked: bad task, cell, layer, head or setting; the message says which."""


class AnalysisConfigError(ConfigError):
    """An analysis setting is invalid."""


SPLITS = ("tasks", "rows")
"""Held-out split of probes: by task (no task on both sides) or by row."""
"""Held-out split: by task (no task on both sides) or by row."""


class ProbeError(AnalysisError):
    """A probe's store, hook, target, labels or setting is unusable; the message names it and the rule."""


@dataclass
class ProbeConfig(Config):
    """How probes are trained: which rows, which split, which penalty."""

    config_error = ProbeError
    config_name = "probe"

    max_rows: int | None = 20000
    """Rows to train and test on, drawn at random with ``seed`` (None: every labelled row)."""
    test_fraction: float = 0.25
    """Share of rows (whole tasks with split=tasks) held out for testing."""
    split: str = "tasks"
    """Held-out split: tasks (no task in both train and test) or rows."""
    l2: float = 1e-3
    """L2 penalty on the weights of the standardised features."""
    max_iter: int = 200
    """L-BFGS iterations per probe."""
    seed: int = 0
    """Seed for the row sample and the split; the same seed gives the same result."""
    device: str = "cpu"
    """Where probes are fitted: cpu (bit-reproducible), auto, cuda or cuda:N."""

    def validate(self) -> ProbeConfig:
        """Check every field; raise ProbeError naming the field and the rule."""
        if self.split not in SPLITS:
            raise ProbeError(f"probe: split {self.split!r} is not one of {', '.join(SPLITS)}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ProbeError(
                f"probe: test_fraction must lie strictly between 0 and 1, got {self.test_fraction}"
            )
        if self.max_rows is not None and self.max_rows < 2:
            raise ProbeError(f"probe: max_rows must be at least 2 (or None for all), got {self.max_rows}")
        if self.l2 < 0:
            raise ProbeError(f"probe: l2 must be >= 0, got {self.l2}")
        if self.max_iter < 1:
            raise ProbeError(f"probe: max_iter must be at least 1, got {self.max_iter}")
        return self


@dataclass
class SubjectConfig(Config):
    """Which task, which model, and how the prompt is written."""

    config_error = AnalysisConfigError
    config_name = "analysis"

    tasks: str = "arc1:evaluation"
    """Task source spec (see `arcscope tasks --help`)."""
    task: str | None = None
    """Task id; None picks the task with the shortest prompt in the source."""
    test_index: int = 0
    """Which test input of the task."""
    model: str | None = None
    """Local HF folder or GGUF file; None for the bundled SmolLM2-135M-Instruct."""
    encoder: str = "minimal"
    """Grid text encoder (see arcscope.tasks.encoding)."""
    template: str = "default"
    """Prompt template name."""
    metric: str = "logprob"
    """Answer metric: logprob, prob or logit_diff (of the correct colour at each answer cell)."""
    cells: str | None = None
    """Answer cells to measure: None for all, or 'r,c' / 'r,c;r,c'."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    dtype: str = "float32"
    """Model dtype: float32 (exact analyses), bfloat16, float16 or auto."""
    out: str = "runs/analysis"
    """Output folder: report.html, result.json and Parquet tables."""

    def validate(self) -> SubjectConfig:
        """Check the metric, the cells spec and the test index."""
        if self.metric not in METRICS:
            raise AnalysisConfigError(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.test_index < 0:
            raise AnalysisConfigError("test_index must be >= 0")
        parse_cells(self.cells)
        return self


def parse_cells(spec: str | None) -> list[tuple[int, int]] | None:
    """'r,c;r,c' -> [(r, c), ...]; None or '' or 'all' -> None."""
    if spec is None or not str(spec).strip() or str(spec).strip() == "all":
        return None
    out = []
    for part in str(spec).split(";"):
        bits = [b.strip() for b in part.split(",")]
        if len(bits) != 2 or not all(b.lstrip("-").isdigit() for b in bits):
            raise AnalysisConfigError(f"cells {spec!r}: expected 'row,col' or 'row,col;row,col;...'")
        out.append((int(bits[0]), int(bits[1])))
    return out


def parse_ints(spec: str | None, what: str) -> list[int] | None:
    """'0,3,5' or '0-5' or '0..5' -> ints; None/''/'all' -> None."""
    if spec is None or not str(spec).strip() or str(spec).strip() == "all":
        return None
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        rng = re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", part)
        if rng:
            out.extend(range(int(rng.group(1)), int(rng.group(2)) + 1))
        elif re.fullmatch(r"-?\d+", part):
            out.append(int(part))
        else:
            raise AnalysisConfigError(f"{what} {spec!r}: expected numbers like '0,3,5' or a range '0-5'")
    return out


@dataclass
class LensConfig(SubjectConfig):
    """`arcscope analyze lens`: at which layer each answer cell is decided."""

    config_name = "lens"

    layers: str | None = None
    """Layers to read ('0,5,10', '0-29'); None for all."""
    site: str = "hook_resid_post"
    """Residual site projected: hook_resid_pre, hook_resid_mid or hook_resid_post."""
    tuned: str | None = None
    """A tuned lens file to use as well (see `arcscope.analysis.lens`)."""
    average: int = 0
    """Also average the curve over the N smallest tasks of the source (0: this task only)."""


@dataclass
class AttentionConfig(SubjectConfig):
    """`arcscope analyze attention`: which input cells each head reads for an answer cell."""

    config_name = "attention"

    layers: str | None = None
    """Layers ('0,5' or '0-29'); None for all."""
    heads: str | None = None
    """Heads ('0,3'); None for all."""
    aggregate: str = "mean"
    """How heads and layers are combined for the grid heat map: mean, max or sum."""


@dataclass
class KnockoutConfig(SubjectConfig):
    """`arcscope analyze knockout`: cut attention from one set of positions to another."""

    config_name = "knockout"

    source: str = "answer"
    """Query positions whose attention is cut (answer, test_input, train:1, cell:test_input:2,3, ...)."""
    target: str = "test_input"
    """Key positions they may no longer read (same forms)."""
    layers: str | None = None
    """Layers; None for all."""
    heads: str | None = None
    """Heads; None for all."""
    sweep: str | None = None
    """Also sweep the knockout over 'layers' or 'heads' (one effect per layer or per layer x head)."""


@dataclass
class PatchConfig(SubjectConfig):
    """`arcscope analyze patch`: activation (and attribution) patching from a clean into a corrupted prompt."""

    config_name = "patch"

    corruption: str = "cell"
    """cell[:r,c=colour], swap-pair[:i], colours, dihedral[:dK] (applied to the prompt; the answer stays)."""
    site: str = "hook_resid_pre"
    """Residual site swept over layers x positions (hook_resid_pre/mid/post, attn_out, mlp_out)."""
    positions: str = "cells"
    """Positions swept: cells (every input-grid cell), all, test_input."""
    heads: bool = False
    """Also sweep layers x heads (attn.hook_z per head, all positions)."""
    method: str = "both"
    """exact, attribution, or both (reports their agreement)."""
    batch_size: int = 32
    """Patched runs per forward pass."""
    seed: int = 0
    """Seed for random corruptions."""
    sae: str | None = None
    """Also patch the latents of this SAE (folder; arcscope or SAELens), spliced in at its hook."""
    sae_mode: str = "patch"
    """patch (clean latent values into the corrupted run) or ablate (zero latents in the clean run)."""
    latents: str | None = None
    """SAE latents to edit ('3,17,40'); None: the latents the edit changes most (up to 256)."""

    def validate(self) -> PatchConfig:
        """Check the method and batch size, then the shared settings."""
        super().validate()
        if self.method not in ("exact", "attribution", "both"):
            raise AnalysisConfigError(f"method {self.method!r} is not exact, attribution or both")
        if self.batch_size < 1:
            raise AnalysisConfigError("batch_size must be >= 1")
        if self.sae_mode not in ("patch", "ablate"):
            raise AnalysisConfigError(f"sae_mode {self.sae_mode!r} is not patch or ablate")
        parse_ints(self.latents, "latents")
        kind = self.corruption.split(":", 1)[0]
        if kind not in CORRUPTIONS:
            raise AnalysisConfigError(
                f"corruption {self.corruption!r}: kind is one of {', '.join(CORRUPTIONS)}"
            )
        return self


@dataclass
class SteerConfig(SubjectConfig):
    """`arcscope analyze steer`: add a vector at a hook over a range of doses."""

    config_name = "steer"

    hook: str = "blocks.15.hook_resid_post"
    """Hook the vector is added at."""
    vector: str | None = None
    """A saved steering vector (.safetensors from arcscope.analysis.vectors); None builds one from --store."""
    store: str | None = None
    """Activation store to build the vector from (difference of means of two groups)."""
    group_a: str = "role=test_input"
    """Group A as index conditions 'col=value,col=value' (values may be a|b lists)."""
    group_b: str | None = None
    """Group B (None: every other row)."""
    doses: list[float] = field(default_factory=lambda: [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    """Doses (multiples of the mean activation norm at the hook with scale=norm)."""
    scale: str = "norm"
    """norm (doses in units of the mean activation norm) or raw (the vector as given)."""
    at: str = "all"
    """Where the vector is added: all, prompt, answer or test-input."""


@dataclass
class ProbeRunConfig(ProbeConfig):
    """`arcscope analyze probe`: linear probes per layer from a store."""

    config_name = "probe"

    store: str = "runs/latest"
    """Activation store folder or URL."""
    hooks: str = "blocks.*.hook_resid_post"
    """Hooks to probe (one probe per hook), a pattern or a comma-separated list."""
    target: str = "colour"
    """colour, output_colour, row, col, role or any index column."""
    out: str = "runs/probe"
    """Output folder: report.html, result.json and Parquet tables."""
    model: str | None = None
    """An HRM/TRM checkpoint: probe its states step by step on --tasks instead of reading a store."""
    tasks: str | None = None
    """Puzzle dataset folder for an HRM/TRM probe (None: generated Sudoku for a Sudoku model)."""


class LensError(AnalysisError):
    """A lens cannot run or load as asked: model, layer, site, tuned lens, store or setting; the message
    says which and the rule broken."""


LENS_POSITIONS = ("all", "answer")
"""Which positions of a Subject give tuned-lens training rows: every prompt token, or the answer's
predicting positions."""


@dataclass
class TunedLensConfig(Config):
    """How a tuned lens is trained: rows, split, optimiser."""

    config_error = LensError
    config_name = "tuned lens"
    identity_exclude = ("device",)

    steps: int = 250
    """Adam steps per hook."""
    batch_size: int = 256
    """Rows per step."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) on the maps' deviation from the identity."""
    max_rows: int | None = 16384
    """Rows to train and test on, drawn with ``seed`` (None: all)."""
    test_fraction: float = 0.2
    """Share of rows (whole tasks with split=tasks) held out to report the fit."""
    split: str = "tasks"
    """Held-out split: tasks (no task in both train and test) or rows."""
    positions: str = "all"
    """Training from Subjects: all (every prompt token) or answer (the answer's predicting positions)."""
    seed: int = 0
    """Seed for the rows, the split and the batches; the same seed gives the same lens."""
    device: str | None = None
    """Where to train (auto, cpu, cuda, cuda:N); None: the model's device."""

    def validate(self) -> TunedLensConfig:
        """Check every field; raise LensError naming the field and the rule."""
        if self.steps < 0:
            raise LensError(f"tuned lens: steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise LensError(f"tuned lens: batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise LensError(f"tuned lens: lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise LensError(f"tuned lens: weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_rows is not None and self.max_rows < 2:
            raise LensError(f"tuned lens: max_rows must be at least 2 (or None for all), got {self.max_rows}")
        if not 0.0 < self.test_fraction < 1.0:
            raise LensError(
                f"tuned lens: test_fraction must lie strictly between 0 and 1, got {self.test_fraction}"
            )
        if self.split not in SPLITS:
            raise LensError(f"tuned lens: split {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.positions not in LENS_POSITIONS:
            raise LensError(
                f"tuned lens: positions {self.positions!r} is not one of {', '.join(LENS_POSITIONS)}"
            )
        return self


@dataclass
class TunedLensRunConfig(TunedLensConfig):
    """`arcscope analyze train-lens`: fit a tuned lens from a store and report its fit per layer."""

    config_name = "train-lens"

    store: str = "runs/latest"
    """Activation store with residual-stream hooks (and the last layer's, the target)."""
    model: str | None = None
    """The model that wrote the store (None: the one the store's manifest names)."""
    hooks: str | None = None
    """Hooks to fit (None: every residual hook in the store)."""
    out: str = "runs/tuned-lens"
    """Output folder: tuned_lens.safetensors, report.html, result.json and the fit table."""
