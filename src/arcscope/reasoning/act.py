"""What HRM and TRM share: the post-norm block, input embeddings, the recurrent carry and the ACT wrapper.

The ACT wrapper follows sapientinc/HRM ``HierarchicalReasoningModel_ACTV1``: a batch of sequences is
processed one *segment* (ACT step) per call; each sequence carries its states ``z_H`` and ``z_L`` to the
next call until it halts, when its slot is reset and refilled with the next example of the batch given.
In training a sequence halts when Q-learning says so (``q_halt > q_continue`` for HRM, ``q_halt > 0`` for
TRM) or at ``halt_max_steps``; with probability ``halt_exploration_prob`` it must first run a random
number of steps in 2..max. In evaluation every sequence runs ``halt_max_steps`` steps, so a batch halts
together. HRM also computes the bootstrapped target for q_continue: sigmoid of the next step's
``q_halt`` at the last step, else of ``max(q_halt, q_continue)`` at the next step (no replay buffer, no
target network: a large batch of parallel episodes stands in for them).

State-dict keys match the original (``inner.H_level.layers.0.self_attn.qkv_proj.weight``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arcscope.models.device import resolve_dtype
from arcscope.reasoning.config import HRMConfig
from arcscope.reasoning.layers import (
    Attention,
    CastedEmbedding,
    CastedLinear,
    CosSin,
    RotaryEmbedding,
    SwiGLU,
    rms_norm,
    trunc_normal_init_,
)
from arcscope.reasoning.optim import CastedSparseEmbedding

Recorder = Callable[[str, int, int, torch.Tensor], None]
"""Called as ``recorder(kind, h, l, state)`` with kind ``z_L`` (after L step ``l`` of H cycle ``h``) or ``z_H``
(after H cycle ``h``, ``l`` = -1); ``state`` is ``[batch, positions, hidden]``."""


@dataclass
class InnerCarry:
    """The recurrent states ``[batch, positions, hidden]``: z_H (HRM's slow state; TRM's answer) and z_L."""

    z_H: torch.Tensor
    z_L: torch.Tensor


@dataclass
class Carry:
    """Everything that persists between ACT steps: states, steps taken, halted flags and the current examples."""

    inner_carry: InnerCarry
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: dict[str, torch.Tensor]


class Block(nn.Module):
    """Post-norm transformer block: ``x = norm(x + attn(x)); x = norm(x + mlp(x))``."""

    def __init__(self, cfg: HRMConfig):
        super().__init__()
        self.self_attn = Attention(
            cfg.hidden_size, cfg.hidden_size // cfg.num_heads, cfg.num_heads, cfg.num_heads, causal=False
        )
        self.mlp = SwiGLU(cfg.hidden_size, cfg.expansion)
        self.norm_eps = cfg.rms_norm_eps

    def forward(self, cos_sin: CosSin | None, hidden_states: torch.Tensor) -> torch.Tensor:
        """One block."""
        h = rms_norm(
            hidden_states + self.self_attn(cos_sin=cos_sin, hidden_states=hidden_states), self.norm_eps
        )
        return rms_norm(h + self.mlp(h), self.norm_eps)


class ReasoningModule(nn.Module):
    """A stack of blocks applied to ``state + injection`` (the input injection of HRM/TRM)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self, hidden_states: torch.Tensor, input_injection: torch.Tensor, cos_sin: CosSin | None = None
    ) -> torch.Tensor:
        """The stack on ``hidden_states + input_injection``."""
        x = hidden_states + input_injection
        for layer in self.layers:
            x = layer(cos_sin=cos_sin, hidden_states=x)
        return x


class InnerBase(nn.Module):
    """Embeddings, heads, initial states and carry handling of one recurrent core (HRM or TRM)."""

    def __init__(self, cfg: HRMConfig, device: torch.device | str | None = None):
        super().__init__()
        self.config = cfg
        self.forward_dtype = resolve_dtype(cfg.forward_dtype, device)
        self.embed_scale = math.sqrt(cfg.hidden_size)
        std = 1.0 / self.embed_scale
        self.embed_tokens = CastedEmbedding(
            cfg.vocab_size, cfg.hidden_size, init_std=std, cast_to=self.forward_dtype
        )
        self.lm_head = CastedLinear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.q_head = CastedLinear(cfg.hidden_size, 2, bias=True)
        self.puzzle_emb_len = cfg.puzzle_emb_positions
        if cfg.puzzle_emb_dim > 0:
            # Zero init: a puzzle starts with no identity of its own.
            self.puzzle_emb = CastedSparseEmbedding(
                cfg.num_puzzle_identifiers,
                cfg.puzzle_emb_dim,
                batch_size=cfg.batch_size,
                init_std=0,
                cast_to=self.forward_dtype,
            )
        n_pos = cfg.seq_len + self.puzzle_emb_len
        if cfg.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(cfg.hidden_size // cfg.num_heads, n_pos, cfg.rope_theta)
        elif cfg.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(n_pos, cfg.hidden_size, init_std=std, cast_to=self.forward_dtype)
        elif cfg.pos_encodings != "none":
            raise ValueError(f"pos_encodings must be 'rope', 'learned' or 'none', got {cfg.pos_encodings!r}")
        self.register_buffer(
            "H_init", trunc_normal_init_(torch.empty(cfg.hidden_size, dtype=self.forward_dtype), std=1)
        )
        self.register_buffer(
            "L_init", trunc_normal_init_(torch.empty(cfg.hidden_size, dtype=self.forward_dtype), std=1)
        )
        with torch.no_grad():
            # Q starts near "do not halt" (sigmoid(-5)), so halting is learnt, not assumed.
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)  # type: ignore[union-attr]

    def cos_sin(self) -> CosSin | None:
        """The RoPE tables, or None with other position encodings."""
        return self.rotary_emb() if hasattr(self, "rotary_emb") else None

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        """Token (+ puzzle, + learned position) embeddings, scaled by sqrt(hidden)."""
        cfg = self.config
        emb = self.embed_tokens(inputs.to(torch.int32))
        if hasattr(self, "puzzle_emb"):
            pe = self.puzzle_emb(puzzle_identifiers)
            pad = self.puzzle_emb_len * cfg.hidden_size - pe.shape[-1]
            if pad > 0:
                pe = F.pad(pe, (0, pad))
            emb = torch.cat((pe.view(-1, self.puzzle_emb_len, cfg.hidden_size), emb), dim=-2)
        if hasattr(self, "embed_pos"):
            # 1/sqrt(2) keeps the variance of the sum of two unit-variance embeddings.
            emb = 0.707106781 * (emb + self.embed_pos.embedding_weight.to(self.forward_dtype))
        return self.embed_scale * emb

    def empty_carry(self, batch_size: int, device: torch.device | None = None) -> InnerCarry:
        """Uninitialised states (every slot starts halted, so the first step resets them)."""
        shape = (batch_size, self.config.seq_len + self.puzzle_emb_len, self.config.hidden_size)
        dev = device if device is not None else self.H_init.device
        return InnerCarry(
            z_H=torch.zeros(shape, dtype=self.forward_dtype, device=dev),
            z_L=torch.zeros(shape, dtype=self.forward_dtype, device=dev),
        )

    def reset_carry(self, reset: torch.Tensor, carry: InnerCarry) -> InnerCarry:
        """Slots flagged in ``reset`` restart from the learnt initial states."""
        flag = reset.view(-1, 1, 1)
        return InnerCarry(
            z_H=torch.where(flag, self.H_init.to(carry.z_H.dtype), carry.z_H),
            z_L=torch.where(flag, self.L_init.to(carry.z_L.dtype), carry.z_L),
        )

    def heads(self, z_H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token logits (puzzle positions dropped) and the (q_halt, q_continue) logits from position 0."""
        logits = self.lm_head(z_H)[:, self.puzzle_emb_len :]
        q = self.q_head(z_H[:, 0]).to(torch.float32)
        return logits, q[..., 0], q[..., 1]

    def recur(
        self, carry: InnerCarry, emb: torch.Tensor, recorder: Recorder | None
    ) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """The recurrence of one ACT step: new (z_H, z_L), with gradient only where the method allows.

        HRM and TRM each define their own; the base class has no recurrence of its own.
        """
        raise TypeError(f"{type(self).__name__} must define recur(): HRM and TRM subclasses do")

    def forward(
        self, carry: InnerCarry, batch: dict[str, torch.Tensor], recorder: Recorder | None = None
    ) -> tuple[InnerCarry, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One ACT step: new carry (detached), logits ``[batch, seq, vocab]``, (q_halt, q_continue)."""
        emb = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        z_H, z_L = self.recur(carry, emb, recorder)
        logits, q_halt, q_continue = self.heads(z_H)
        return InnerCarry(z_H=z_H.detach(), z_L=z_L.detach()), logits, (q_halt, q_continue)


class ACTModel(nn.Module):
    """The ACT wrapper around an inner core (see the module docstring)."""

    inner: InnerBase

    def __init__(self, config: HRMConfig):
        super().__init__()
        self.config = config

    @property
    def puzzle_emb(self) -> CastedSparseEmbedding | None:
        """The sparse puzzle embedding, None when the config has none."""
        return getattr(self.inner, "puzzle_emb", None)

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> Carry:
        """A carry with every slot halted, so the first step loads the batch."""
        n = batch["inputs"].shape[0]
        dev = batch["inputs"].device
        return Carry(
            inner_carry=self.inner.empty_carry(n, dev),
            steps=torch.zeros(n, dtype=torch.int32, device=dev),
            halted=torch.ones(n, dtype=torch.bool, device=dev),
            current_data={k: torch.empty_like(v) for k, v in batch.items()},
        )

    def halt_signal(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        """Where the Q head says stop: HRM compares the two logits, TRM thresholds q_halt at 0."""
        if self.config.no_act_continue:
            return q_halt > 0
        return q_halt > q_continue

    def forward(
        self, carry: Carry, batch: dict[str, torch.Tensor], recorder: Recorder | None = None
    ) -> tuple[Carry, dict[str, torch.Tensor]]:
        """One ACT step for the whole batch: refill halted slots from ``batch``, step, decide who halts."""
        cfg = self.config
        inner_carry = self.inner.reset_carry(carry.halted, carry.inner_carry)
        steps = torch.where(carry.halted, 0, carry.steps)
        data = {
            k: torch.where(carry.halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
            for k, v in carry.current_data.items()
        }
        inner_carry, logits, (q_halt, q_continue) = self.inner(inner_carry, data, recorder)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}
        with torch.no_grad():
            steps = steps + 1
            last = steps >= cfg.halt_max_steps
            halted = last
            if self.training and cfg.halt_max_steps > 1:
                halted = halted | self.halt_signal(q_halt, q_continue)
                explore = torch.rand_like(q_halt) < cfg.halt_exploration_prob
                min_steps = explore * torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_steps)
                if not cfg.no_act_continue:
                    _, _, (next_halt, next_continue) = self.inner(inner_carry, data)
                    target = torch.where(last, next_halt, torch.maximum(next_halt, next_continue))
                    outputs["target_q_continue"] = torch.sigmoid(target)
        return Carry(inner_carry, steps, halted, data), outputs
