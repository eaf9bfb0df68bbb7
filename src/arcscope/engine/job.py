"""The job description: task source x augmentations x encoder x model x capture spec x mode.

One dataclass is the single source of defaults; the CLI's ``arcscope run`` options and YAML job files both
fill it. Every field has a one-line docstring under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arcscope.capture.positions import POSITIONS
from arcscope.config import Config, ConfigError, split_list

MODES = ("prefill", "generate")
RUNNERS = ("local", "ray")


class JobConfigError(ConfigError):
    """A job setting is invalid."""


@dataclass
class JobConfig(Config):
    """Everything that decides what a capture job computes (and so what resume must reproduce)."""

    config_error = JobConfigError
    config_name = "job"
    identity_exclude = ("out", "device", "commit_every", "runner", "workers", "ray_address")

    tasks: str = "arc1:evaluation"
    """Task source spec (see ``arcscope tasks --help``)."""
    model: str | None = None
    """Local HF folder or GGUF file; None for the bundled SmolLM2-135M-Instruct."""
    hooks: list[str] = field(default_factory=lambda: ["blocks.{0,10,20,29}.hook_resid_post"])
    """Hook sites: TransformerLens-style aliases or module-name patterns."""
    positions: list[str] = field(default_factory=lambda: ["cells"])
    """Which token positions to store: any of all, cells, test-input, answer, generated, last (cells: tokens
    of one grid cell, the cells of a generated answer included; generated: every generated token)."""
    mode: str = "generate"
    """prefill: one forward pass (with the gold answer appended); generate: greedy/sampled decoding."""
    encoder: str = "minimal"
    """Grid text encoder (see arcscope.tasks.encoding)."""
    template: str = "default"
    """Prompt template name (see arcscope.tasks.prompts.TEMPLATES)."""
    augmentations: int = 1
    """Augmented copies per task (the first is the identity); >1 enables voting."""
    seed: int = 0
    """Seed for augmentations and sampling."""
    max_tasks: int | None = 20
    """Use at most this many tasks (after ordering); None or 0 for all."""
    order: str = "shortest"
    """Task order: shortest (by prompt length) or source."""
    teacher_forcing: bool = True
    """In prefill mode, append the gold answer to the prompt (needed for answer positions)."""
    max_new_tokens: int | None = None
    """Generation budget; None derives it from the largest train output of each task."""
    do_sample: bool = False
    """Sample instead of greedy decoding."""
    temperature: float = 1.0
    """Sampling temperature."""
    topk_logits: int = 0
    """Store the top-k logits per captured position (0: none)."""
    batch_tokens: int = 8192
    """Upper bound on padded tokens per batch (prompt plus generation budget)."""
    max_batch: int = 16
    """Upper bound on sequences per batch."""
    shard_rows: int = 32768
    """Rows per store shard."""
    commit_every: int = 1
    """Commit the store (rows + progress) every N batches; a crash loses at most that much work."""
    max_prompt_tokens: int | None = None
    """Longest prompt accepted; None uses the model's context length."""
    on_long: str = "skip"
    """A prompt longer than the context: skip (reported) or fail."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    dtype: str = "auto"
    """auto, float32, bfloat16 or float16."""
    store_dtype: str | None = None
    """Store activations in this dtype (default: the model's)."""
    out: str = "runs/latest"
    """Output folder or fsspec URL: the store plus predictions and report."""
    runner: str = "local"
    """local (this process) or ray (model replicas as Ray actors; the same store as local)."""
    workers: int = 2
    """Model replicas with the ray runner."""
    ray_address: str | None = None
    """Ray cluster address for the ray runner (None: $RAY_ADDRESS or a local cluster)."""

    def validate(self) -> JobConfig:
        """Check every field; raise JobConfigError naming the field and the allowed values."""
        if self.mode not in MODES:
            raise JobConfigError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if isinstance(self.positions, str):
            self.positions = [p.strip() for p in self.positions.split(",") if p.strip()]
        if isinstance(self.hooks, str):
            self.hooks = split_hooks(self.hooks)
        if not self.hooks:
            raise JobConfigError("hooks: name at least one hook site, e.g. blocks.3.hook_resid_post")
        for p in self.positions:
            if p not in POSITIONS:
                raise JobConfigError(f"position {p!r} is not one of {', '.join(POSITIONS)}")
        if "generated" in self.positions and self.mode != "generate":
            raise JobConfigError("positions 'generated' needs --mode generate")
        if "answer" in self.positions and not (self.mode == "prefill" and self.teacher_forcing):
            raise JobConfigError("positions 'answer' needs --mode prefill with teacher forcing")
        if self.augmentations < 1:
            raise JobConfigError("augmentations must be >= 1")
        if self.order not in ("shortest", "source"):
            raise JobConfigError(f"order {self.order!r} is not shortest or source")
        if self.on_long not in ("skip", "fail"):
            raise JobConfigError(f"on_long {self.on_long!r} is not skip or fail")
        if self.max_tasks == 0:
            self.max_tasks = None
        if self.max_tasks is not None and self.max_tasks < 1:
            raise JobConfigError("max_tasks must be >= 1 (or 0 / None for all)")
        if self.runner not in RUNNERS:
            raise JobConfigError(f"runner {self.runner!r} is not one of {', '.join(RUNNERS)}")
        if self.workers < 1:
            raise JobConfigError("workers must be >= 1")
        for name in ("batch_tokens", "max_batch", "shard_rows", "commit_every"):
            if getattr(self, name) < 1:
                raise JobConfigError(f"{name} must be >= 1")
        return self


def split_hooks(text: str) -> list[str]:
    """Split a comma-separated hook list, keeping commas inside braces (``blocks.{0,3}.attn_out``)."""
    return split_list(text)
