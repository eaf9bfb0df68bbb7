"""Training settings of the tiny RNNs: one dataclass, importable without torch (the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from arcscope.config import Config
from arcscope.rnn.errors import RnnError
from arcscope.rnn.tasks import get_task


@dataclass
class TrainConfig(Config):
    """Everything that decides a training run; the same config and seed give the same bytes."""

    config_error = RnnError
    config_name = "RNN training"

    task: str = "second-argmax"
    """Task name: second-argmax, argmax, argmedian or median."""
    hidden_size: int = 4
    """H, the number of hidden neurons."""
    seq_len: int = 3
    """T, the input sequence length."""
    steps: int = 8192
    """Gradient steps per seed (AlgZoo uses 2^20 steps of 1024; a few thousand suffice for small models)."""
    batch_size: int = 1024
    """Fresh sequences per step."""
    lr_base: float = 0.04
    """Base learning rate; the rate used is lr_base / sqrt(H), as in AlgZoo."""
    weight_decay: float = 0.001
    """AdamW weight decay."""
    warmup_steps: int | None = None
    """Linear warmup length; None means steps // 16 (AlgZoo's 2^14 of 2^20)."""
    decay_min_mult: float = 0.01
    """The learning rate decays exponentially to this multiple of its peak, reached at the last step."""
    seed: int = 0
    """First seed; seeds seed .. seed + seeds - 1 are tried."""
    seeds: int = 1
    """Train this many seeds and keep the best on the validation set."""
    discrete: bool = False
    """Integer inputs in 0..T-1 instead of standard normal ones."""
    val_samples: int = 1 << 15
    """Validation sequences used to choose among seeds."""
    test_samples: int = 1 << 17
    """Held-out sequences on which the chosen model's metric is reported."""

    def validate(self) -> TrainConfig:
        """Raise on settings that cannot train; return the config."""
        spec = get_task(self.task)
        if self.hidden_size < 1:
            raise RnnError(f"hidden_size must be >= 1, got {self.hidden_size}")
        spec.check_seq_len(self.seq_len)
        for name in ("steps", "batch_size", "seeds", "val_samples", "test_samples"):
            if getattr(self, name) < 1:
                raise RnnError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_base <= 0:
            raise RnnError(f"lr_base must be > 0, got {self.lr_base}")
        return self
