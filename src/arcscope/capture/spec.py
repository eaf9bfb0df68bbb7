"""Hook sites: which activations to take, named by module pattern or TransformerLens-style alias.

A *site* is one module plus whether we read its input (``pre``) or its output (``post``). Users name sites in
two ways, freely mixed:

* module patterns over ``model.named_modules()`` names: ``model.layers.3.mlp``, ``model.layers.*`` (``*`` stays
  inside one dotted component, ``**`` crosses components), ``model.layers.{0,11,23}.mlp`` (brace lists and
  ranges ``{0..5}``), ``model.layers.-1`` (negative index into a module list). A ``:in`` suffix reads the
  module's input instead of its output (``model.layers.3.mlp.down_proj:in``). The stored name is the module
  name (with ``:in`` if given).
* TransformerLens-style aliases, resolved for the Hugging Face Llama layout that Llama, Qwen2, Qwen3 and
  Mistral share: ``blocks.11.hook_resid_post``, ``blocks.*.hook_resid_pre``, ``blocks.{0,3}.attn_out``,
  ``blocks.-1.mlp_out``, or a bare ``hook_resid_pre`` / ``resid_post`` meaning every layer. The stored name is
  the canonical TransformerLens name, e.g. ``blocks.3.hook_resid_post``.

Alias semantics (layer ``i``; ``x`` is the residual stream):

=========================  ==========================================================================
``hook_resid_pre``         input hidden state of decoder layer i (= HF ``hidden_states[i]``)
``hook_resid_mid``         resid_pre + attention output (= the input of ``post_attention_layernorm``)
``hook_resid_post``        output of decoder layer i (= HF ``hidden_states[i+1]`` except for the last
                           layer, whose HF hidden state has the final norm applied)
``hook_attn_out``          self-attention output after ``o_proj``
``hook_mlp_out``           MLP output (after ``down_proj``)
``ln1.hook_normalized``    output of ``input_layernorm``
``ln2.hook_normalized``    output of ``post_attention_layernorm``
``attn.hook_q``            output of ``q_proj`` (before rotary), ``[heads x d_head]`` per row
``attn.hook_k``            output of ``k_proj`` (before rotary), ``[kv heads x d_head]`` per row
``attn.hook_v``            output of ``v_proj``, ``[kv heads x d_head]`` per row
``attn.hook_z``            input of ``o_proj``: per-head attention results, ``[heads x d_head]`` per row
``attn.hook_pattern``      attention weights after softmax, ``[heads x key positions]`` per query row;
                           the layer runs eager attention while this is captured (SDPA otherwise);
                           the values are those ``output_attentions=True`` gives (bit for bit when every
                           layer's pattern is captured, to float rounding otherwise); prefill only
``mlp.hook_post``          input of ``down_proj``: the MLP neuron activations (act(gate) * up)
``hook_embed``             token embeddings (= blocks.0.hook_resid_pre for these families)
``ln_final.hook_normalized``  output of the final norm (= HF ``hidden_states[-1]``)
=========================  ==========================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from arcscope.errors import CaptureError

Kind = Literal["pre", "post"]

# accepted per-layer hook spelling -> canonical TransformerLens suffix
LAYER_ALIASES: dict[str, str] = {
    "hook_resid_pre": "hook_resid_pre",
    "resid_pre": "hook_resid_pre",
    "hook_resid_mid": "hook_resid_mid",
    "resid_mid": "hook_resid_mid",
    "hook_resid_post": "hook_resid_post",
    "resid_post": "hook_resid_post",
    "hook_attn_out": "hook_attn_out",
    "attn_out": "hook_attn_out",
    "hook_mlp_out": "hook_mlp_out",
    "mlp_out": "hook_mlp_out",
    "ln1.hook_normalized": "ln1.hook_normalized",
    "ln2.hook_normalized": "ln2.hook_normalized",
    "attn.hook_z": "attn.hook_z",
    "hook_z": "attn.hook_z",
    "attn.hook_q": "attn.hook_q",
    "hook_q": "attn.hook_q",
    "attn.hook_k": "attn.hook_k",
    "hook_k": "attn.hook_k",
    "attn.hook_v": "attn.hook_v",
    "hook_v": "attn.hook_v",
    "attn.hook_pattern": "attn.hook_pattern",
    "hook_pattern": "attn.hook_pattern",
    "mlp.hook_post": "mlp.hook_post",
}

# canonical suffix -> (module path relative to the decoder layer, kind)
_LAYER_SITES: dict[str, tuple[str, Kind]] = {
    "hook_resid_pre": ("", "pre"),
    "hook_resid_mid": ("post_attention_layernorm", "pre"),
    "hook_resid_post": ("", "post"),
    "hook_attn_out": ("self_attn", "post"),
    "hook_mlp_out": ("mlp", "post"),
    "ln1.hook_normalized": ("input_layernorm", "post"),
    "ln2.hook_normalized": ("post_attention_layernorm", "post"),
    "attn.hook_z": ("self_attn.o_proj", "pre"),
    "attn.hook_q": ("self_attn.q_proj", "post"),
    "attn.hook_k": ("self_attn.k_proj", "post"),
    "attn.hook_v": ("self_attn.v_proj", "post"),
    "attn.hook_pattern": ("self_attn", "post"),
    "mlp.hook_post": ("mlp.down_proj", "pre"),
}
PATTERN = "attn.hook_pattern"
"""The alias whose rows are attention weights (read from the attention module's second output)."""

GLOBAL_ALIASES: dict[str, str] = {
    "hook_embed": "hook_embed",
    "embed": "hook_embed",
    "ln_final.hook_normalized": "ln_final.hook_normalized",
    "ln_final": "ln_final.hook_normalized",
}

# Families whose decoder layer is pre-norm ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``, so the aliases mean
# what they say. Gemma2/3 and OLMo2 reuse the attribute names with extra or moved norms: not listed on purpose.
KNOWN_FAMILIES = ("llama", "qwen2", "qwen3", "mistral")
_LAYER_ATTRS = ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
_EXTRA_NORMS = ("pre_feedforward_layernorm", "post_feedforward_layernorm")


@dataclass(frozen=True)
class HookSite:
    """One place to read or change an activation."""

    name: str
    """Stored name: the canonical TransformerLens name for aliases, the module name for patterns."""
    module: str
    """Module path in ``model.named_modules()`` ('' is the model itself)."""
    kind: Kind
    """``pre``: the module's first input; ``post``: its output (first element if a tuple)."""
    d: int | None
    """Width of one captured row, when it can be known before running."""
    layer: int | None = None
    """Decoder layer index for per-layer aliases."""
    hook: str | None = None
    """Canonical alias suffix (``hook_resid_mid``, ``hook_embed``...), None for module patterns."""
    heads: int | None = None
    """Per-head sites (q/k/v/z, pattern): the number of heads; a row reshapes to ``[heads, d // heads]``."""

    @property
    def item(self) -> int:
        """Which element of the module's output tuple holds the activation (the pattern is the second)."""
        return 1 if self.hook == PATTERN else 0


@dataclass(frozen=True)
class Layout:
    """Where the Llama-style parts of a model live."""

    layers: str
    embed: str
    final_norm: str
    n_layers: int
    d_model: int


def find_layout(model) -> Layout | None:
    """The Llama-style layout of ``model`` (a causal LM or its base model), or None if it has none."""
    import torch.nn as nn

    mods = dict(model.named_modules())
    for path in ("model.layers", "layers", "model.model.layers"):
        layers = mods.get(path)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            continue
        first = layers[0]
        if not all(hasattr(first, a) for a in _LAYER_ATTRS) or any(hasattr(first, a) for a in _EXTRA_NORMS):
            continue
        base = path[: -len("layers")]
        embed, norm = base + "embed_tokens", base + "norm"
        if embed not in mods or norm not in mods:
            continue
        cfg = getattr(model, "config", None)
        d = getattr(cfg, "hidden_size", None) or mods[embed].embedding_dim
        return Layout(path, embed, norm, len(layers), int(d))
    return None


def _layout_or_fail(model, name: str) -> Layout:
    layout = find_layout(model)
    if layout is None:
        mt = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise CaptureError(
            f"hook name {name!r}: TransformerLens-style aliases are defined for the Hugging Face Llama layout "
            f"({', '.join(KNOWN_FAMILIES)}), and this model ({mt}) does not have it. Name modules instead; "
            f"some of this model's modules: {', '.join(module_name_sample(model))}"
        )
    return layout


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` lists and ``{0..3}`` ranges (several groups allowed, not nested)."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*", body)
    if rng:
        a, b = int(rng.group(1)), int(rng.group(2))
        step = 1 if b >= a else -1
        items = [str(i) for i in range(a, b + step, step)]
    else:
        items = [s.strip() for s in body.split(",")]
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return [out for item in items for out in expand_braces(head + item + tail)]


def split_names(names: str) -> list[str]:
    """Split a comma-separated list of hook names, keeping commas inside braces."""
    parts, depth, cur = [], 0, []
    for ch in names:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def module_name_sample(model, limit: int = 24) -> list[str]:
    """Distinct module names with list indices folded to ``*``: a short map of the model for messages."""
    seen: list[str] = []
    for name, _ in model.named_modules():
        if not name:
            continue
        folded = re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name)
        if folded not in seen:
            seen.append(folded)
        if len(seen) >= limit:
            seen.append("...")
            break
    return seen


def valid_aliases() -> list[str]:
    """Accepted alias spellings, for messages and docs."""
    return [f"blocks.<i>.{a}" for a in LAYER_ALIASES] + list(GLOBAL_ALIASES)


def _glob_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(r"[^.]*")
        elif c == "?":
            out.append(r"[^.]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _fix_negative_indices(model, pattern: str) -> str:
    """Turn ``-1`` components into real indices where the prefix names a module list literally."""
    import torch.nn as nn

    parts = pattern.split(".")
    for k, part in enumerate(parts):
        if not re.fullmatch(r"-\d+", part):
            continue
        prefix = ".".join(parts[:k])
        if any(c in prefix for c in "*?["):
            raise CaptureError(
                f"module pattern {pattern!r}: a negative index needs a literal path before it, not a wildcard"
            )
        try:
            parent = model.get_submodule(prefix)
        except AttributeError:
            return pattern  # no such module: the caller reports "matches nothing"
        if not isinstance(parent, nn.ModuleList | nn.Sequential):
            raise CaptureError(
                f"module pattern {pattern!r}: {prefix!r} is not a module list; {part} means nothing"
            )
        n = len(parent)
        idx = int(part)
        if idx < -n:
            raise CaptureError(
                f"module pattern {pattern!r}: index {idx} out of range for {prefix!r} ({n} entries)"
            )
        parts[k] = str(n + idx)
    return ".".join(parts)


def _module_width(module, kind: Kind, model) -> int | None:
    import torch.nn as nn

    if isinstance(module, nn.Linear):
        return module.in_features if kind == "pre" else module.out_features
    if isinstance(module, nn.Embedding):
        return module.embedding_dim if kind == "post" else None
    weight = getattr(module, "weight", None)
    if weight is not None and getattr(weight, "dim", lambda: 0)() == 1:
        return int(weight.shape[0])  # norms: in and out have the width of the weight
    # Residual-width blocks (decoder layers, attention, MLP) keep the model width on both sides.
    if kind == "post" and hasattr(module, "o_proj"):
        return module.o_proj.out_features
    if kind == "post" and hasattr(module, "down_proj"):
        return module.down_proj.out_features
    if all(hasattr(module, a) for a in ("self_attn", "mlp")):
        return getattr(getattr(model, "config", None), "hidden_size", None)
    return None


def _resolve_pattern(model, pattern: str) -> list[HookSite]:
    kind: Kind = "post"
    base = pattern
    if pattern.endswith(":in"):
        kind, base = "pre", pattern[:-3]
    elif pattern.endswith(":out"):
        base = pattern[:-4]
    fixed = _fix_negative_indices(model, base)
    rx = _glob_regex(fixed)
    sites = []
    for name, module in model.named_modules():
        if name and rx.fullmatch(name):
            stored = name + (":in" if kind == "pre" else "")
            sites.append(HookSite(stored, name, kind, _module_width(module, kind, model)))
    if not sites:
        raise CaptureError(
            f"hook name {pattern!r} matches no module and is not an alias. Aliases: "
            f"{', '.join(valid_aliases())}. Modules: {', '.join(module_name_sample(model))}"
        )
    return sites


def _layer_indices(model, name: str, part: str, layout: Layout) -> list[int]:
    n = layout.n_layers
    if re.fullmatch(r"-?\d+", part):
        i = int(part)
        if not -n <= i < n:
            raise CaptureError(
                f"hook name {name!r}: layer {i} is out of range; the model has {n} layers "
                f"(0..{n - 1}, or -{n}..-1 from the end)"
            )
        return [i % n]
    rx = _glob_regex(part)
    idx = [i for i in range(n) if rx.fullmatch(str(i))]
    if not idx:
        raise CaptureError(f"hook name {name!r}: {part!r} selects no layer of 0..{n - 1}")
    return idx


def _layer_site(model, layout: Layout, i: int, suffix: str) -> HookSite:
    rel, kind = _LAYER_SITES[suffix]
    path = f"{layout.layers}.{i}" + (f".{rel}" if rel else "")
    d: int | None = layout.d_model
    if suffix in ("attn.hook_z", "mlp.hook_post"):
        d = _module_width(model.get_submodule(path), "pre", model)
    elif suffix in ("attn.hook_q", "attn.hook_k", "attn.hook_v"):
        d = _module_width(model.get_submodule(path), "post", model)
    elif suffix == PATTERN:
        d = None  # heads x key positions: depends on the sequence
    heads = None
    if suffix in ("attn.hook_q", "attn.hook_z", PATTERN, "attn.hook_k", "attn.hook_v"):
        cfg = getattr(model, "config", None)
        h = getattr(cfg, "num_attention_heads", None)
        kv = getattr(cfg, "num_key_value_heads", None) or h
        heads = kv if suffix in ("attn.hook_k", "attn.hook_v") else h
    return HookSite(f"blocks.{i}.{suffix}", path, kind, d, layer=i, hook=suffix, heads=heads)


def _resolve_one(model, name: str) -> list[HookSite]:
    if name in GLOBAL_ALIASES:
        canon = GLOBAL_ALIASES[name]
        layout = _layout_or_fail(model, name)
        path = layout.embed if canon == "hook_embed" else layout.final_norm
        return [HookSite(canon, path, "post", layout.d_model, hook=canon)]
    if name in LAYER_ALIASES:
        layout = _layout_or_fail(model, name)
        suffix = LAYER_ALIASES[name]
        return [_layer_site(model, layout, i, suffix) for i in range(layout.n_layers)]
    if name.startswith("blocks."):
        layer_part, _, rest = name[len("blocks.") :].partition(".")
        if rest not in LAYER_ALIASES:
            raise CaptureError(
                f"hook name {name!r}: unknown hook {rest!r}. Per-layer hooks: {', '.join(LAYER_ALIASES)}; "
                f"also {', '.join(GLOBAL_ALIASES)}"
            )
        layout = _layout_or_fail(model, name)
        suffix = LAYER_ALIASES[rest]
        return [
            _layer_site(model, layout, i, suffix) for i in _layer_indices(model, name, layer_part, layout)
        ]
    return _resolve_pattern(model, name)


def resolve_hooks(model, names, *, storable: bool = False) -> list[HookSite]:
    """Resolve hook names (a string, comma-separated string, list, or HookSites) to sites, in order, deduplicated.

    ``storable`` refuses sites whose rows have no fixed width (attention patterns), which a store cannot hold.
    """
    sites = _resolve_all(model, names)
    if storable:
        bad = [s.name for s in sites if s.hook == PATTERN]
        if bad:
            raise CaptureError(
                f"hook {bad[0]!r}: attention patterns have one row of heads x prompt length per query, which "
                "differs from prompt to prompt, so a store cannot hold them. Capture q/k (attn.hook_q, "
                "attn.hook_k) to store, or use `arcscope analyze attention` / arcscope.analysis.attention"
            )
    return sites


def _resolve_all(model, names) -> list[HookSite]:
    if isinstance(names, HookSite):
        names = [names]
    elif isinstance(names, str):
        names = split_names(names)
    out: dict[str, HookSite] = {}
    for item in names:
        if isinstance(item, HookSite):
            out.setdefault(item.name, item)
            continue
        if not isinstance(item, str) or not item.strip():
            raise CaptureError(f"hook name {item!r}: expected a non-empty string")
        for expanded in expand_braces(item.strip()):
            for site in _resolve_one(model, expanded):
                out.setdefault(site.name, site)
    return list(out.values())
