"""Attention under control: patterns where they are asked for, knockout of chosen (query, key) pairs, SDPA
everywhere else.

Hugging Face attention modules pick their kernel per call from ``config._attn_implementation``. Inside
:func:`attention_control` the model uses one registered implementation, ``"arcscope"``, that decides per
layer:

* a layer whose pattern is wanted runs the model family's own eager attention function (the one
  ``output_attentions=True`` runs), and the attention module returns the pattern as the second element of
  its output (where ``attn.hook_pattern`` reads it). With patterns asked for in every layer the values are
  bit for bit those of ``output_attentions=True``; with some layers on SDPA, the inputs of later layers
  differ from an all-eager run by float rounding (about 1e-6 in float32), and so do their patterns;
* every other layer runs SDPA, as it would outside the block;
* a knockout adds ``-inf`` before the softmax at chosen (head, query, key) entries, in SDPA or eager alike,
  so the blocked keys get exactly zero weight and the rest renormalise.

The mask the model builds for this implementation is the eager (additive float) mask, which both kernels
take. Outside the block nothing is changed: the model runs as loaded.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from arcscope.errors import CaptureError

IMPL = "arcscope"
_registered = False
_active: weakref.WeakSet = weakref.WeakSet()  # models inside an attention_control block


@dataclass
class Knockout:
    """Block attention from ``queries`` to ``keys`` in ``layers`` x ``heads`` (None: all of them)."""

    queries: torch.Tensor
    """Bool mask ``[T]`` or ``[B, T]`` of query positions (columns of input_ids) whose attention is cut."""
    keys: torch.Tensor
    """Bool mask ``[T]`` or ``[B, T]`` of key positions they may no longer read."""
    layers: Sequence[int] | None = None
    """Decoder layers (None: every layer)."""
    heads: Sequence[int] | None = None
    """Query heads (None: every head)."""

    def __post_init__(self):
        for name in ("queries", "keys"):
            m = torch.as_tensor(getattr(self, name))
            if m.dtype != torch.bool or m.dim() not in (1, 2):
                raise CaptureError(
                    f"knockout {name} must be a bool mask [T] or [B, T], got {m.dtype} {list(m.shape)}"
                )
            setattr(self, name, m)

    def applies_to(self, layer: int) -> bool:
        """Whether this knockout touches ``layer``."""
        return self.layers is None or layer in self.layers

    def bias(self, batch: int, n_heads: int, q_len: int, k_len: int, dtype, device) -> torch.Tensor | None:
        """Additive ``[B, H or 1, Tq, Tk]`` bias (0 or the dtype's minimum), or None when shapes do not fit
        (a decoding step, where a prompt knockout does not apply)."""
        qm, km = self.queries.to(device), self.keys.to(device)
        if qm.shape[-1] != q_len or km.shape[-1] != k_len:
            return None
        qm = qm.expand(batch, -1) if qm.dim() == 1 else qm
        km = km.expand(batch, -1) if km.dim() == 1 else km
        block = qm[:, :, None] & km[:, None, :]  # [B, Tq, Tk]
        if self.heads is None:  # every head: one [B, 1, Tq, Tk] bias broadcast over heads
            full = block[:, None]
        else:
            heads = torch.zeros(n_heads, dtype=torch.bool, device=device)
            for h in self.heads:
                if not 0 <= int(h) < n_heads:
                    raise CaptureError(f"knockout head {h} is out of range; the model has {n_heads} heads")
                heads[int(h)] = True
            full = block[:, None] & heads[None, :, None, None]
        out = torch.zeros(full.shape, dtype=dtype, device=device)
        return out.masked_fill(full, torch.finfo(dtype).min)


def _family_eager(module) -> Any:
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        raise CaptureError(
            f"attention patterns need the model family's eager attention; {type(module).__module__} has none"
        )
    return fn


def _controlled(module, query, key, value, attention_mask, *args, **kwargs):
    """The registered attention function: eager with the pattern where asked, SDPA elsewhere."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ctl = getattr(module, "_arcscope_attention", None)
    mask = attention_mask
    want_pattern = False
    if ctl is not None:
        want_pattern = ctl["pattern"]
        B, H, Tq, _ = query.shape
        Tk = key.shape[2]
        for ko in ctl["knockouts"]:
            bias = ko.bias(B, H, Tq, Tk, query.dtype if mask is None else mask.dtype, query.device)
            if bias is None:
                continue
            if mask is None:
                mask = bias
            else:
                mask = (mask + bias).clamp(min=torch.finfo(mask.dtype).min)
    if want_pattern:
        return _family_eager(module)(module, query, key, value, mask, *args, **kwargs)
    return sdpa_attention_forward(module, query, key, value, mask, *args, **kwargs)


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPL, _controlled)
    AttentionMaskInterface.register(IMPL, eager_mask)
    _registered = True


def attention_modules(model) -> list[tuple[int, torch.nn.Module]]:
    """(layer index, self-attention module) of every decoder layer of a Llama-layout model."""
    from arcscope.capture.spec import find_layout

    layout = find_layout(model)
    if layout is None:
        raise CaptureError(
            "attention patterns and knockout need the Hugging Face Llama layout (llama, qwen2, qwen3, mistral)"
        )
    layers = model.get_submodule(layout.layers)
    return [(i, layer.self_attn) for i, layer in enumerate(layers)]


def n_heads(model) -> tuple[int, int, int]:
    """(query heads, key/value heads, head width) of a Llama-layout model."""
    cfg = model.config
    h = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or h)
    dh = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // h)
    return h, kv, dh


@contextmanager
def attention_control(model, *, patterns: Iterable[int] = (), knockouts: Sequence[Knockout] = ()):
    """Within the block, layers in ``patterns`` return their attention pattern (eager) and ``knockouts`` cut
    attention; the model's implementation and every module are restored on exit, even on errors."""
    patterns = set(int(i) for i in patterns)
    knockouts = list(knockouts)
    if not patterns and not knockouts:
        yield model
        return
    _register()
    mods = attention_modules(model)
    n = len(mods)
    for i in patterns:
        if not 0 <= i < n:
            raise CaptureError(f"attention pattern for layer {i}: the model has {n} layers (0..{n - 1})")
    for ko in knockouts:
        for i in ko.layers or ():
            if not 0 <= int(i) < n:
                raise CaptureError(f"knockout layer {i}: the model has {n} layers (0..{n - 1})")
    cfg = model.config
    outer = model not in _active
    old_impl = cfg._attn_implementation
    saved = {i: getattr(m, "_arcscope_attention", None) for i, m in mods}
    try:
        # A block inside another adds its patterns and knockouts to the outer block's, and gives them back.
        for i, m in mods:
            prev = saved[i] or {"pattern": False, "knockouts": []}
            m._arcscope_attention = {
                "pattern": prev["pattern"] or i in patterns,
                "knockouts": prev["knockouts"] + [k for k in knockouts if k.applies_to(i)],
            }
        if outer:
            _active.add(model)
            cfg._attn_implementation = IMPL
        yield model
    finally:
        if outer:
            cfg._attn_implementation = old_impl
            _active.discard(model)
        for i, m in mods:
            if saved[i] is None:
                if hasattr(m, "_arcscope_attention"):
                    del m._arcscope_attention
            else:
                m._arcscope_attention = saved[i]
