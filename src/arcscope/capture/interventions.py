"""Interventions: change activations at hook sites while the model runs (zero, replace, add, scale).

``with intervene(model, [Intervention("blocks.3.hook_resid_post", "add", steer)]): model(...)`` steers layer 3.

Where an intervention applies:

* ``positions=None``: every position of every forward pass inside the block (prompt prefill and each
  generation step).
* ``positions`` a bool mask ``[B, T]`` (or ``[T]``, shared by the batch): only the selected positions of a
  forward pass whose input is ``[B, T]``. Decoding steps (one new token per sequence) are left alone, so a
  prompt mask never leaks into generation. The same holds for a value shaped like the whole activation.

Values: a float, a vector ``[d]`` (broadcast over positions), a ``[N, d]`` block of rows with ``N`` the number
of selected positions (rows in (batch, position) order, as :func:`run_prefill` returns them: this is
activation patching), or a full ``[B, T, d]`` tensor. ``zero`` takes no value; ``scale`` multiplies.

Interventions run before any capture hook on the same site, so captured activations are what the model
actually computed. ``hook_resid_mid`` has no module of its own to rewrite: its intervention rewrites the
attention output so that resid_pre + attn_out becomes the wanted value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from arcscope.capture.spec import HookSite, resolve_hooks
from arcscope.errors import CaptureError

Op = Literal["zero", "replace", "add", "scale"]
OPS = ("zero", "replace", "add", "scale")


@dataclass
class Intervention:
    """Change the activation at ``site`` by ``op`` with ``value``, at ``positions`` (None = everywhere)."""

    site: str | HookSite
    """Hook name (alias or module pattern; may select several sites) or a resolved HookSite."""
    op: Op = "add"
    """zero | replace | add | scale."""
    value: float | torch.Tensor | None = None
    """Float, [d], [N, d] (one row per selected position) or [B, T, d]; unused for zero."""
    positions: torch.Tensor | None = None
    """Bool mask [B, T] or [T] of the positions to change; None changes every position."""

    def __post_init__(self):
        if self.op not in OPS:
            raise CaptureError(
                f"intervention on {self.site!r}: unknown op {self.op!r}; use one of {', '.join(OPS)}"
            )
        if self.op != "zero" and self.value is None:
            raise CaptureError(f"intervention on {self.site!r}: op {self.op!r} needs a value")
        if self.positions is not None:
            p = torch.as_tensor(self.positions)
            if p.dtype != torch.bool or p.dim() not in (1, 2):
                raise CaptureError(
                    f"intervention on {self.site!r}: positions must be a bool mask [B, T] or [T]"
                )
            self.positions = p


@dataclass
class _Applier:
    """One intervention bound to one site, with per-device copies of its tensors."""

    iv: Intervention
    site: HookSite
    _cache: dict[Any, Any] = field(default_factory=dict)

    def _on(self, key: str, t: torch.Tensor, device, dtype=None) -> torch.Tensor:
        k = (key, device, dtype)
        if k not in self._cache:
            self._cache[k] = t.to(device=device, dtype=dtype if dtype is not None else t.dtype)
        return self._cache[k]

    def shape(self) -> tuple[int, ...] | None:
        """The [B, T] a forward pass must have for this intervention to apply, None when any will do."""
        if self.iv.positions is not None:
            return tuple(self.iv.positions.shape)
        v = self.iv.value
        if isinstance(v, torch.Tensor) and v.dim() >= 3:
            return tuple(v.shape[:2])
        return None

    def applies(self, x: torch.Tensor, decoding: bool) -> bool:
        """Whether this forward pass is one the intervention targets."""
        shape = self.shape()
        if shape is None:
            return True
        if decoding:
            return False
        if len(shape) == 1:
            if x.shape[1] == shape[0]:
                return True
        elif tuple(x.shape[:2]) == shape:
            return True
        if x.shape[1] == 1:
            return False  # a decoding step of a generate loop we do not run
        raise CaptureError(
            f"intervention on {self.site.name}: its positions/value are for shape {list(shape)} "
            f"but the forward pass has [batch, positions] = {list(x.shape[:2])}"
        )

    def mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The bool mask [B, T] on x's device, or None for every position."""
        p = self.iv.positions
        if p is None:
            return None
        m = self._on("mask", p, x.device)
        return m.unsqueeze(0).expand(x.shape[0], -1) if m.dim() == 1 else m

    def new_rows(self, rows: torch.Tensor, full: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The changed rows: ``rows`` is full[mask] (or full itself when mask is None)."""
        op, v = self.iv.op, self.iv.value
        if op == "zero":
            return torch.zeros_like(rows)
        if isinstance(v, torch.Tensor):
            v = self._on("value", v, rows.device, rows.dtype)
            if v.dim() >= 3 and mask is not None:
                v = v[mask]
            elif v.dim() == 2 and mask is None and v.shape[0] == full.shape[0] * full.shape[1]:
                v = v.reshape(full.shape)
            if v.dim() == 2 and mask is not None and v.shape[0] != rows.shape[0]:
                raise CaptureError(
                    f"intervention on {self.site.name}: value has {v.shape[0]} rows but the positions "
                    f"select {rows.shape[0]}"
                )
        try:
            if op == "replace":
                if isinstance(v, torch.Tensor):
                    return torch.broadcast_to(v, rows.shape).clone()
                return torch.full_like(rows, float(v))
            if op == "add":
                return rows + v
            return rows * v
        except RuntimeError as e:
            raise CaptureError(
                f"intervention on {self.site.name}: value of shape {list(getattr(v, 'shape', []))} does not fit "
                f"the activation rows {list(rows.shape)}"
            ) from e

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x with the intervention applied (a new tensor; x itself is left alone)."""
        mask = self.mask(x)
        if mask is None:
            return self.new_rows(x, x, None)
        out = x.clone()
        out[mask] = self.new_rows(x[mask], x, mask)
        return out

    def apply_mid(self, attn: torch.Tensor, resid_pre: torch.Tensor) -> torch.Tensor:
        """New attention output so that resid_pre + attn equals the intervened resid_mid."""
        if self.iv.op == "add":
            return self.apply(attn)  # adding to attn adds to resid_mid, with no rounding detour
        mid = resid_pre + attn
        return self.apply(mid) - resid_pre


def _first(out):
    return out[0] if isinstance(out, tuple | list) else out


def _with_first(out, new):
    if isinstance(out, tuple):
        return (new,) + tuple(out[1:])
    if isinstance(out, list):
        return [new] + list(out[1:])
    return new


def _pre_input(args, kwargs):
    if args:
        return args[0], True
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"], False
    raise CaptureError(
        "cannot find the input tensor of a hooked module (no positional or hidden_states argument)"
    )


class Intervened:
    """Live interventions on a model; remove() (or leaving the with-block) takes every hook off."""

    def __init__(self, model, interventions):
        self.model = model
        self.decoding = False
        """Set by generate loops between steps: masked/shaped interventions then skip the forward pass."""
        self.appliers: list[_Applier] = []
        for iv in interventions or []:
            sites = [iv.site] if isinstance(iv.site, HookSite) else resolve_hooks(model, iv.site)
            for s in sites:
                if s.hook == "attn.hook_pattern":
                    raise CaptureError(
                        f"intervention on {s.name}: attention patterns are changed with a knockout "
                        "(arcscope.capture.attention.Knockout), not an intervention"
                    )
            self.appliers.extend(_Applier(iv, s) for s in sites)
        self.handles: list[Any] = []
        try:
            self._install()
        except Exception:
            self.remove()
            raise

    def _install(self) -> None:
        # prepend=True puts interventions ahead of capture hooks (and HF's own output recorders) on the same
        # module; registering in reverse keeps several interventions on one site in list order.
        for ap in reversed(self.appliers):
            if ap.site.hook == "hook_resid_mid":
                self._install_mid(ap)
                continue
            module = self.model.get_submodule(ap.site.module)
            if ap.site.kind == "pre":
                self.handles.append(
                    module.register_forward_pre_hook(self._pre_hook(ap), with_kwargs=True, prepend=True)
                )
            else:
                self.handles.append(module.register_forward_hook(self._post_hook(ap), prepend=True))

    def _pre_hook(self, ap: _Applier):
        def hook(module, args, kwargs):
            x, positional = _pre_input(args, kwargs)
            if not ap.applies(x, self.decoding):
                return None
            new = ap.apply(x)
            if positional:
                return (new,) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        return hook

    def _post_hook(self, ap: _Applier):
        def hook(module, args, out):
            x = _first(out)
            if not ap.applies(x, self.decoding):
                return None
            return _with_first(out, ap.apply(x))

        return hook

    def _install_mid(self, ap: _Applier) -> None:
        layer_path = ap.site.module.rsplit(".", 1)[0]
        layer = self.model.get_submodule(layer_path)
        attn = layer.self_attn
        stash: dict[str, torch.Tensor] = {}

        # Appended (not prepended) so it sees resid_pre after any resid_pre intervention on this layer.
        def keep_pre(module, args, kwargs):
            stash["x"], _ = _pre_input(args, kwargs)

        def change_attn(module, args, out):
            a = _first(out)
            if not ap.applies(a, self.decoding):
                return None
            return _with_first(out, ap.apply_mid(a, stash["x"]))

        self.handles.append(layer.register_forward_pre_hook(keep_pre, with_kwargs=True))
        self.handles.append(attn.register_forward_hook(change_attn, prepend=True))

    def remove(self) -> None:
        """Take every hook off the model."""
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __enter__(self) -> Intervened:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def intervene(model, interventions: list[Intervention] | Intervention | None) -> Intervened:
    """Install interventions on ``model``; use as a context manager (hooks are removed on exit, even on errors)."""
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    return Intervened(model, interventions)
