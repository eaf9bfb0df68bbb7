"""The ARC organism: a grid tokenizer and a small Llama trained from scratch by arcscope to solve tasks in context.

The tokenizer is a standard Hugging Face fast tokenizer (``tokenizer.json`` built with the ``tokenizers``
library, loaded by ``AutoTokenizer``), so the prompt builder, the token-to-cell map, capture, the store and
SAE training work on it unchanged. Its vocabulary, in id order:

- ``<pad>`` ``<s>`` (BOS, added before every text) ``</s>`` (EOS, ends an answer) ``<unk>``;
- the row separator ``\\n`` and the ten colours ``0``..``9`` (ids 4..14), each always its own token, so
  every cell of a grid is exactly one token;
- the other printable ASCII characters, one token each, and the 256 byte tokens ``<0x00>``..``<0xFF>``
  for any other character (byte fallback: every text tokenizes and decodes back to itself);
- marker tokens: the literal text of the prompt templates ``default`` and ``short`` (``"Example "``,
  ``"\\nInput:\\n"``, ``"\\nOutput:\\n"``, ``"Test\\nInput:\\n"``, ``"\\n\\n"`` and the default template's
  whole instruction), so a default-template prompt costs one token per cell plus a few per grid, and a
  pair or role boundary is one token.

There is no chat template: prompts are plain text (``build_prompt`` writes them as is). The model is a
``LlamaForCausalLM`` built from :class:`OrganismConfig` (a few million parameters); :mod:`arcscope.models.
train_lm` trains it. The bundled, trained organism lives in ``arcscope/models/bundled/organism/`` and is
taken everywhere a model is by the name ``organism`` (:func:`organism_path`).
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from arcscope.config import Config, ConfigError
from arcscope.errors import ModelError

__all__ = [
    "AUGMENTATIONS",
    "BUNDLED_DIR",
    "ORGANISM_ALIASES",
    "ORGANISM_NAME",
    "PRESETS",
    "SPECIAL_TOKENS",
    "OrganismConfig",
    "OrganismError",
    "TrainLMConfig",
    "build_model",
    "build_tokenizer",
    "organism_path",
    "save_organism",
    "template_markers",
]

ORGANISM_NAME = "arcscope-organism"
"""The bundled organism's display name (store manifests, reports)."""
ORGANISM_ALIASES = ("organism",)
"""Model arguments that mean the bundled organism (``--model organism``)."""
BUNDLED_DIR = Path(__file__).parent / "bundled" / "organism"
"""Folder of the bundled organism (an HF folder: config.json, model.safetensors, tokenizer files)."""

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
"""pad, BOS, EOS and unknown, ids 0..3."""
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
MARKER_TEMPLATES = ("default", "short")
"""Prompt templates whose literal text becomes marker tokens."""

AUGMENTATIONS = ("dihedral", "colours", "pair_order")
"""Random augmentations the trainer can draw per example (``arcscope.tasks.augment``)."""


class OrganismError(ConfigError, ModelError):
    """An organism setting, folder or training input is invalid; the message names it and the rule."""


# ------------------------------------------------------------------------------------------- tokenizer


def template_markers(templates: tuple[str, ...] = MARKER_TEMPLATES) -> list[str]:
    """The literal text pieces of the named prompt templates (longer than one character), in first-seen order."""
    from arcscope.tasks.prompts import get_template

    out: list[str] = []
    for name in templates:
        tpl = get_template(name)
        for part in (tpl.instruction, tpl.example, tpl.test):
            for literal, _, _, _ in string.Formatter().parse(part):
                if len(literal) > 1 and literal not in out:
                    out.append(literal)
    return out


def _base_vocab() -> dict[str, int]:
    vocab: dict[str, int] = {}
    chars = ["\n", *"0123456789"]
    chars += [c for c in string.printable if c not in chars and c not in "\x0b\x0c"]
    for tok in (*SPECIAL_TOKENS, *chars, *(f"<0x{i:02X}>" for i in range(256))):
        vocab.setdefault(tok, len(vocab))
    return vocab


def build_tokenizer(markers: list[str] | None = None, *, max_len: int = 2048) -> Any:
    """The organism's grid tokenizer (a ``PreTrainedTokenizerFast``); ``markers`` defaults to the templates' text."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = _base_vocab()
    # BPE without merges over single characters: each character is its own token, any character outside the
    # vocabulary falls back to its UTF-8 bytes, so every text round-trips and every digit has its own offsets.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    marks = template_markers() if markers is None else list(markers)
    tok.add_tokens([AddedToken(m, special=False, normalized=False) for m in marks if m not in vocab])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", BOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_len,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer: Any, folder: str | os.PathLike) -> None:
    """``tokenizer.save_pretrained(folder)``, naming the class every transformers version knows."""
    folder = Path(folder)
    tokenizer.save_pretrained(str(folder))
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    # transformers 5 writes "TokenizersBackend", which 4.x cannot resolve; both resolve this one.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------- model


@dataclass
class OrganismConfig(Config):
    """The organism's architecture: a Llama decoder sized for CPU training."""

    config_error = OrganismError
    config_name = "organism"

    layers: int = 4
    """Transformer blocks."""
    d_model: int = 256
    """Residual stream width."""
    heads: int = 8
    """Attention heads (d_model must be a multiple)."""
    kv_heads: int | None = None
    """Key/value heads (grouped-query attention); None: as many as heads."""
    d_ff: int = 768
    """Hidden width of each SwiGLU MLP."""
    max_len: int = 2048
    """Longest sequence (prompt plus answer) in tokens; longer training examples are skipped."""
    rope_theta: float = 10000.0
    """RoPE base."""

    def validate(self):
        """Check the sizes; raise OrganismError naming the field."""
        for name in ("layers", "d_model", "heads", "d_ff", "max_len"):
            if getattr(self, name) < 1:
                raise OrganismError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise OrganismError(f"d_model {self.d_model} is not a multiple of heads {self.heads}")
        kv = self.kv_heads if self.kv_heads is not None else self.heads
        if kv < 1 or self.heads % kv:
            raise OrganismError(f"kv_heads {kv} must be >= 1 and divide heads {self.heads}")
        if self.rope_theta <= 0:
            raise OrganismError(f"rope_theta must be > 0, got {self.rope_theta}")
        return self

    def architecture(self) -> OrganismConfig:
        """Only the architecture fields (a subclass's training settings dropped)."""
        return OrganismConfig(**{f.name: getattr(self, f.name) for f in fields(OrganismConfig)})

    def llama_config(self, vocab_size: int) -> Any:
        """The ``transformers.LlamaConfig`` of this architecture for a vocabulary of ``vocab_size``."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.d_model,
            intermediate_size=self.d_ff,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads if self.kv_heads is not None else self.heads,
            max_position_embeddings=self.max_len,
            rope_parameters={"rope_type": "default", "rope_theta": float(self.rope_theta)},
            tie_word_embeddings=True,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        )

    def n_params(self, vocab_size: int) -> int:
        """Parameter count of the model (tied embeddings counted once)."""
        d, kv = self.d_model, self.kv_heads if self.kv_heads is not None else self.heads
        head = d // self.heads
        attn = 2 * d * d + 2 * d * kv * head
        block = attn + 3 * d * self.d_ff + 2 * d
        return self.layers * block + vocab_size * d + d


PRESETS: dict[str, OrganismConfig] = {
    "tiny": OrganismConfig(layers=2, d_model=32, heads=4, d_ff=64, max_len=1024),
    "small": OrganismConfig(),
}
"""Named architectures: ``tiny`` for tests (~30k parameters), ``small`` the organism (~3.5M)."""


def build_model(cfg: OrganismConfig, vocab_size: int, *, seed: int = 0, device: Any = None) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` (SDPA attention), seeded: the same seed gives the same weights."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = cfg.validate()
    lcfg = cfg.llama_config(vocab_size)
    lcfg._attn_implementation = "sdpa"
    # Weights are drawn from torch's global generator: seed it, then give it back as it was.
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(lcfg)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.bos_token_id = BOS_ID
    return model if device is None else model.to(device)


def save_organism(model: Any, tokenizer: Any, folder: str | os.PathLike) -> Path:
    """Write ``model`` (safetensors) and ``tokenizer`` as a Hugging Face folder that ``load_model`` loads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    save_tokenizer(tokenizer, folder)
    return folder


# ----------------------------------------------------------------------------------------------- names


def organism_path() -> Path:
    """The bundled organism's folder; a clear :class:`ModelError` when this install has none yet."""
    folder = BUNDLED_DIR
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"the bundled organism is not in this install: {folder} holds no trained model (config.json). "
            "Train one with `arcscope train-lm --tasks SOURCE --out DIR` and pass --model DIR, or install "
            "an arcscope wheel that ships it."
        )
    return folder


# ----------------------------------------------------------------------------------------------- training


@dataclass
class TrainLMConfig(OrganismConfig):
    """Everything that decides what an organism training run computes (and so what resume must match)."""

    config_name = "train-lm"
    identity_exclude = ("device", "threads", "checkpoint_every", "keep_checkpoints")

    tasks: str = "arc1:training"
    """Task source spec to train on (a TaskSet or tasks passed from Python take its place)."""
    max_tasks: int | None = None
    """Use at most this many tasks of the training source (None: all)."""
    eval_tasks: str | None = None
    """Held-out task source to evaluate on; None holds out eval_count tasks of the training source."""
    eval_count: int = 32
    """Tasks evaluated (held out of the training source when eval_tasks is None); 0: no evaluation."""
    encoder: str = "minimal"
    """Grid text encoder (see arcscope.tasks.encoding)."""
    template: str = "default"
    """Prompt template (see arcscope.tasks.prompts.TEMPLATES); runs must use the same one."""
    augment: list[str] = field(default_factory=list)
    """Random augmentations drawn per example and epoch: any of dihedral, colours, pair_order (none: as given)."""
    rotate_pairs: bool = False
    """Also train with each demonstration pair as the test and the other pairs as demonstrations."""
    loss_on_outputs: bool = False
    """Also take the loss on the demonstration outputs after the first (False: on the test answer only)."""
    steps: int = 2000
    """Optimizer steps."""
    batch_tokens: int = 8192
    """Upper bound on padded tokens per step (sequences x the longest of them)."""
    sort_window: int = 256
    """Examples read ahead and sorted by length into batches (more: less padding)."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine schedule ends at lr x this."""
    warmup: int = 100
    """Steps of linear learning-rate warmup."""
    weight_decay: float = 0.1
    """AdamW weight decay on weight matrices and embeddings (not on norms)."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """AdamW beta1 and beta2."""
    grad_clip: float | None = 1.0
    """Clip the gradient norm to this value; None does not clip."""
    seed: int = 0
    """Seed for initialisation, held-out split, data order and augmentations."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    dtype: str = "auto"
    """Matmul precision: auto (bfloat16 autocast on CUDA, float32 elsewhere), bfloat16 or float32."""
    threads: int | None = None
    """Torch CPU threads (None: torch's default)."""
    log_every: int = 10
    """Steps between metric records (metrics.jsonl and the progress line)."""
    eval_every: int = 200
    """Steps between evaluations (exact answers, greedy); 0: only at the end."""
    checkpoint_every: int = 200
    """Save a resumable checkpoint every N steps (0: only when stopped early)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (the newest ones)."""

    @classmethod
    def from_preset(cls, preset: str = "small", **settings: Any) -> TrainLMConfig:
        """Training settings over a named architecture (``PRESETS``), with ``settings`` on top, validated."""
        if preset not in PRESETS:
            raise OrganismError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[preset].to_dict(), **settings}, where=f"preset {preset}")

    def validate(self):
        """Check every field; raise OrganismError naming the field and the allowed values."""
        super().validate()
        if isinstance(self.adam_betas, list):
            self.adam_betas = tuple(self.adam_betas)
        if isinstance(self.augment, str):
            self.augment = [a.strip() for a in self.augment.split(",") if a.strip()]
        self.augment = [a for a in self.augment if a != "none"]
        bad = [a for a in self.augment if a not in AUGMENTATIONS]
        if bad:
            raise OrganismError(f"augment {bad[0]!r} is not one of {', '.join(AUGMENTATIONS)} (or none)")
        for name in ("steps", "batch_tokens", "sort_window", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise OrganismError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_count", "warmup", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise OrganismError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise OrganismError(f"max_tasks must be >= 1 (or unset), got {self.max_tasks}")
        if self.threads is not None and self.threads < 1:
            raise OrganismError(f"threads must be >= 1 (or unset), got {self.threads}")
        if self.max_len > self.batch_tokens:
            raise OrganismError(
                f"max_len {self.max_len} exceeds batch_tokens {self.batch_tokens}: the longest example must fit"
            )
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.weight_decay < 0:
            raise OrganismError("lr must be > 0, min_lr_ratio in [0, 1] and weight_decay >= 0")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise OrganismError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise OrganismError(f"grad_clip must be > 0 (or unset), got {self.grad_clip}")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise OrganismError(f"dtype {self.dtype!r} is not one of auto, bfloat16, float32")
        return self
