"""Capture activations during a forward pass (prefill) and during generation with the KV cache.

Rows, positions and dtypes, for every result here:

* One row per kept token position. Each hook's tensor is ``[N, d]``; row ``r`` belongs to sequence
  ``batch_index[r]`` (the row of ``input_ids``) at ``position[r]``, the token's index among the *real*
  tokens of that sequence (padding never counts and is never stored). Rows are sorted by (batch, position).
* Activations are gathered inside the hook (``acts[mask]``), so memory grows with what is kept, not with
  batch x length, and moved to the CPU as they arrive (asynchronously on CUDA; we synchronize before
  returning).
* Activations keep the model's dtype (bf16 stays bf16) unless ``dtype=`` asks for another. Top-k logits are
  float32 values with int64 token ids.
* Padding can be left or right. Position ids are always passed as ``cumsum(attention_mask) - 1``, so a padded
  sequence sees the same rotary positions as it would alone.

Generation (:func:`run_generate`) captures, for each generated token, the activations at that token's
position when it is fed back as input: exactly what a prefill over prompt + generated tokens would give at
those positions. The last generated token is never fed by a plain decoding loop, so when sites or top-k
logits are asked for we run one extra step to feed it. A token stopped at EOS is included (it is generated).
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from arcscope.capture.attention import attention_control
from arcscope.capture.interventions import Intervened, Intervention, intervene
from arcscope.capture.spec import PATTERN, HookSite, find_layout, resolve_hooks
from arcscope.errors import CaptureError


def _first(out, item: int = 0):
    if isinstance(out, tuple | list):
        return out[item]
    if item:
        raise CaptureError("the module returned one tensor; the attention pattern is its second output")
    return out


def _pre_input(args, kwargs):
    if args:
        return args[0]
    return kwargs.get("hidden_states")


class Capture:
    """Live capture hooks on a model: rows of each forward pass are appended per site.

    Use through :func:`capture`. ``set_positions(mask)`` changes the kept positions between forward passes
    (a generate loop does this each step).
    """

    def __init__(
        self,
        model,
        sites,
        positions: torch.Tensor | None = None,
        *,
        interventions: list[Intervention] | None = None,
        dtype: torch.dtype | None = None,
        offload: bool = True,
        record_coords: bool = True,
    ):
        self.model = model
        self.record_coords = record_coords
        self.sites: list[HookSite] = resolve_hooks(model, sites) if sites else []
        self.dtype = dtype
        self.offload = offload
        self.chunks: dict[str, list[torch.Tensor]] = {s.name: [] for s in self.sites}
        self._coords: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._mask: torch.Tensor | None = None
        self._mask_dev: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}
        self._async_devices: set[torch.device] = set()
        self._interventions = interventions
        self.intervened: Intervened | None = None
        self._handles: list[Any] = []
        self._attention: Any = None
        self.set_positions(positions)

    def set_positions(self, mask: torch.Tensor | None) -> None:
        """Keep only the True positions of a bool mask [B, T] in the next forward passes (None keeps all)."""
        if mask is not None:
            mask = torch.as_tensor(mask)
            if mask.dtype != torch.bool or mask.dim() != 2:
                raise CaptureError(
                    f"positions must be a bool mask [batch, positions], got {mask.dtype} {list(mask.shape)}"
                )
        self._mask = mask
        self._mask_dev = {}

    def _index_on(self, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        # (batch, position) indices of the kept rows, found once per mask and device: gathering with them
        # avoids a device sync in every hook that boolean indexing would cost.
        if self._mask is None:
            return None
        if device not in self._mask_dev:
            self._mask_dev[device] = self._mask.to(device).nonzero(as_tuple=True)
        return self._mask_dev[device]

    def _take(self, site: HookSite, x) -> None:
        if site.hook == PATTERN and x is None:
            raise CaptureError(f"hook {site.name}: the attention module returned no pattern")
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise CaptureError(f"hook {site.name}: the activation is not a [batch, positions, ...] tensor")
        x = x.detach()
        if site.hook == PATTERN:
            x = x.transpose(1, 2)  # [B, H, Tq, Tk] -> [B, Tq, H, Tk]: one row per query position
        if self._mask is None:
            rows = x.flatten(0, 1)
            copied = False
        else:
            if tuple(x.shape[:2]) != tuple(self._mask.shape):
                raise CaptureError(
                    f"hook {site.name}: the positions mask is {list(self._mask.shape)} but the activation is "
                    f"{list(x.shape[:2])} [batch, positions]"
                )
            bi, ti = self._index_on(x.device)
            rows = x[bi, ti]
            copied = True
        # One row per position: heads or other trailing axes are flattened into the row.
        rows = rows.flatten(1) if rows.dim() > 2 else rows.unsqueeze(1) if rows.dim() == 1 else rows
        if self.dtype is not None and rows.dtype != self.dtype:
            rows, copied = rows.to(self.dtype), True
        if self.offload and rows.device.type != "cpu":
            # non_blocking lands in pinned memory without stalling the GPU; we synchronize before reading.
            rows, copied = rows.to("cpu", non_blocking=True), True
            self._async_devices.add(x.device)
        if not copied:
            rows = rows.clone()  # a view would change if the model (or an intervention) reuses the buffer
        self.chunks[site.name].append(rows)

    def _hook(self, site: HookSite):
        if site.kind == "pre":

            def pre(module, args, kwargs):
                self._take(site, _pre_input(args, kwargs))

            return pre

        def post(module, args, out):
            self._take(site, _first(out, site.item))

        return post

    def _record_coords(self, module, args, kwargs):
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            return
        b, t = x.shape[:2]
        m = self._mask if self._mask is not None else torch.ones(b, t, dtype=torch.bool)
        bi, col = m.nonzero(as_tuple=True)
        self._coords.append((bi.cpu(), col.cpu()))

    def install(self) -> Capture:
        """Register the hooks (interventions first, then capture); pattern sites switch their layers to eager."""
        try:
            layers = {s.layer for s in self.sites if s.hook == PATTERN}
            if layers:
                self._attention = attention_control(self.model, patterns=layers)
                self._attention.__enter__()
            if self._interventions:
                self.intervened = intervene(self.model, self._interventions)
            for site in self.sites:
                module = self.model.get_submodule(site.module)
                if site.kind == "pre":
                    h = module.register_forward_pre_hook(self._hook(site), with_kwargs=True)
                else:
                    h = module.register_forward_hook(self._hook(site))
                self._handles.append(h)
            if self.record_coords:
                self._handles.append(
                    self.model.register_forward_pre_hook(self._record_coords, with_kwargs=True)
                )
        except Exception:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Take every hook off (capture and interventions) and wait for pending copies."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self.intervened is not None:
            self.intervened.remove()
        if self._attention is not None:
            self._attention.__exit__(None, None, None)
            self._attention = None
        self.synchronize()

    def synchronize(self) -> None:
        """Wait for asynchronous device-to-CPU copies, so the captured rows can be read."""
        for dev in self._async_devices:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        self._async_devices.clear()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Captured rows per site, all forward passes concatenated: {name: [N, d]}."""
        self.synchronize()
        return {name: _cat(chunks) for name, chunks in self.chunks.items()}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.chunks:
            raise CaptureError(f"no captured site {name!r}; captured: {', '.join(self.chunks)}")
        self.synchronize()
        return _cat(self.chunks[name])

    @property
    def batch_index(self) -> torch.Tensor:
        """Batch row of every captured row, over all forward passes so far."""
        return _cat([c[0] for c in self._coords], empty=(0,), dtype=torch.long)

    @property
    def column(self) -> torch.Tensor:
        """Column in the forward pass's input of every captured row."""
        return _cat([c[1] for c in self._coords], empty=(0,), dtype=torch.long)

    def __enter__(self) -> Capture:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()


def _cat(chunks: list[torch.Tensor], empty=(0, 0), dtype=None) -> torch.Tensor:
    if not chunks:
        return torch.zeros(*empty, dtype=dtype or torch.float32)
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def capture(
    model,
    sites,
    positions: torch.Tensor | None = None,
    *,
    interventions: list[Intervention] | None = None,
    dtype: torch.dtype | None = None,
    offload: bool = True,
    record_coords: bool = True,
) -> Capture:
    """Context manager capturing ``sites`` at the True positions of ``positions`` [B, T] during model calls.

    ``with capture(model, "blocks.*.hook_resid_post", positions=mask) as cap: model(ids, attention_mask=am)``
    then ``cap["blocks.3.hook_resid_post"]`` is [N, d] and ``cap.batch_index`` / ``cap.column`` say where each
    row came from. Hooks are removed on exit, even when the block raises.
    """
    return Capture(
        model,
        sites,
        positions,
        interventions=interventions,
        dtype=dtype,
        offload=offload,
        record_coords=record_coords,
    )


@dataclass
class CaptureResult:
    """Rows captured by :func:`run_prefill`: one per kept position, sorted by (batch, position)."""

    acts: dict[str, torch.Tensor]
    """Hook name -> [N, d] in the model's dtype (or the one asked for)."""
    batch_index: torch.Tensor
    """[N] int64: row of input_ids."""
    position: torch.Tensor
    """[N] int64: index among the sequence's real tokens (padding not counted)."""
    column: torch.Tensor
    """[N] int64: column in input_ids as given (differs from position under left padding)."""
    sites: list[HookSite] = field(default_factory=list)
    topk_values: torch.Tensor | None = None
    """[N, k] float32 logits of the k most likely next tokens at each kept position, or None."""
    topk_indices: torch.Tensor | None = None
    """[N, k] int64 token ids matching topk_values, or None."""

    def __len__(self) -> int:
        return int(self.batch_index.shape[0])


@dataclass
class GenerateResult:
    """What :func:`run_generate` produced: tokens, scores and captured rows."""

    sequences: list[list[int]]
    """Generated token ids per input row (EOS included when reached), without prompt or padding."""
    finished: list[bool]
    """Whether each sequence stopped at EOS (False: stopped at max_new_tokens)."""
    mean_logprob: torch.Tensor
    """[B] float32: mean log-probability of the generated tokens under the model (temperature 1, no top-k)."""
    prompt_lengths: list[int]
    """Real (unpadded) prompt length per row; generated token j sits at position prompt_length + j."""
    acts: dict[str, torch.Tensor]
    """Hook name -> [N, d]: prompt rows chosen by capture_prompt_mask, then every generated token."""
    batch_index: torch.Tensor
    """[N] int64."""
    position: torch.Tensor
    """[N] int64: index among the real tokens of prompt + generated."""
    generated: torch.Tensor
    """[N] bool: True for rows of generated tokens, False for prompt rows."""
    sites: list[HookSite] = field(default_factory=list)
    topk_values: torch.Tensor | None = None
    """[N, k] float32 next-token logits at each row, or None."""
    topk_indices: torch.Tensor | None = None
    """[N, k] int64 token ids matching topk_values, or None."""

    def __len__(self) -> int:
        return int(self.batch_index.shape[0])


def _check_inputs(input_ids, attention_mask, device) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids = torch.as_tensor(input_ids).to(device)
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise CaptureError(f"input_ids must be [batch, positions], got shape {list(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = torch.as_tensor(attention_mask, device=input_ids.device)
    if attention_mask.dim() == 1:
        attention_mask = attention_mask.unsqueeze(0)
    if attention_mask.shape != input_ids.shape:
        raise CaptureError(
            f"attention_mask {list(attention_mask.shape)} does not match input_ids {list(input_ids.shape)}"
        )
    return input_ids, attention_mask.long()


def _check_mask(mask, like: torch.Tensor, what: str) -> torch.Tensor:
    mask = torch.as_tensor(mask, device=like.device)
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if mask.dtype != torch.bool or mask.shape != like.shape:
        raise CaptureError(
            f"{what} must be a bool mask shaped like input_ids {list(like.shape)}, got {mask.dtype} {list(mask.shape)}"
        )
    return mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens: cumsum(mask) - 1, padding clamped to 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


class _TopK:
    """Top-k logits at captured prompt rows, from the final norm's rows through the LM head.

    Projecting only the kept rows keeps memory at N x vocab instead of batch x length x vocab.
    """

    def __init__(self, model, k: int):
        self.k = k
        self.cap: Capture | None = None
        self.full_logits = False
        if k <= 0:
            return
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        layout = find_layout(model)
        if head is None:
            raise CaptureError("top-k logits need a causal LM with an output head; this model has none")
        self.head = head
        if layout is None:
            self.full_logits = True  # unknown layout: take the model's own logits at full size
        else:
            norm = HookSite("__final_norm__", layout.final_norm, "post", layout.d_model)
            self.cap = Capture(model, [norm], offload=False, record_coords=False)

    def forward_kwargs(self, model, sites: list[HookSite]) -> dict[str, Any]:
        """Ask the model for as few logits as possible (0 means all of them in HF)."""
        head_name = next((n for n, m in model.named_modules() if m is getattr(self, "head", None)), None)
        if self.full_logits or any(s.module == head_name for s in sites):
            return {}
        if _accepts(model, "logits_to_keep"):
            return {"logits_to_keep": 1}
        if _accepts(model, "num_logits_to_keep"):
            return {"num_logits_to_keep": 1}
        return {}

    def rows(self, out, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(values, indices) [N, k] for the True positions of mask in the last forward pass."""
        if self.k <= 0:
            return None
        if self.full_logits:
            logits = out.logits[mask.to(out.logits.device)]
        else:
            hidden = self.cap["__final_norm__"]
            logits = self.head(hidden)
        return _topk(logits, self.k)


def _topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = min(k, logits.shape[-1])
    v, i = logits.float().topk(k, dim=-1)
    return v.cpu(), i.cpu()


@torch.no_grad()
def run_prefill(
    model,
    input_ids,
    attention_mask=None,
    sites=(),
    position_mask=None,
    topk_logits: int = 0,
    *,
    interventions: list[Intervention] | None = None,
    dtype: torch.dtype | None = None,
    offload: bool = True,
) -> CaptureResult:
    """One forward pass capturing ``sites`` at the positions of ``position_mask`` [B, T] (default: all real tokens).

    Padding is never stored (the mask is combined with the attention mask). Optional top-k next-token logits
    per kept row. ``interventions`` are active during the pass; captured rows reflect them.
    """
    input_ids, attention_mask = _check_inputs(input_ids, attention_mask, _model_device(model))
    keep = attention_mask.bool()
    if position_mask is not None:
        keep = keep & _check_mask(position_mask, input_ids, "position_mask")
    site_list = resolve_hooks(model, sites) if sites else []
    topk = _TopK(model, topk_logits)
    positions = position_ids_from_mask(attention_mask)
    with ExitStack() as stack:
        cap = stack.enter_context(
            capture(
                model,
                site_list,
                keep,
                interventions=interventions,
                dtype=dtype,
                offload=offload,
                record_coords=False,
            )
        )
        if topk.cap is not None:
            topk.cap.set_positions(keep)
            stack.enter_context(topk.cap)
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=False,
            **topk.forward_kwargs(model, site_list),
        )
        tk = topk.rows(out, keep)
    acts = cap.tensors()
    bi, col = keep.nonzero(as_tuple=True)
    return CaptureResult(
        acts=acts,
        batch_index=bi.cpu(),
        position=positions[bi, col].cpu(),
        column=col.cpu(),
        sites=site_list,
        topk_values=tk[0] if tk else None,
        topk_indices=tk[1] if tk else None,
    )


def _eos_ids(model, eos) -> list[int]:
    if eos is None:
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        if eos is None:
            eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


def _pad_id(model, eos: list[int], pad) -> int:
    if pad is not None:
        return int(pad)
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        p = getattr(src, "pad_token_id", None)
        if isinstance(p, int):
            return p
    return eos[0] if eos else 0


def _left_pad_order(attention_mask: torch.Tensor) -> torch.Tensor:
    """Column order that moves padding to the left, keeping the real tokens in order (a stable sort on 0/1)."""
    return torch.sort(attention_mask, dim=1, stable=True).indices


def _reorder_intervention(iv: Intervention, order: torch.Tensor) -> Intervention:
    """Intervention whose masks and full-shaped values follow the left-padded layout."""
    pos, val = iv.positions, iv.value
    if pos is not None:
        if pos.dim() == 1:
            pos = pos.unsqueeze(0).expand(order.shape[0], -1)
        pos = pos.to(order.device).gather(1, order)
    if isinstance(val, torch.Tensor) and val.dim() == 3:
        idx = order.to(val.device).unsqueeze(-1).expand(-1, -1, val.shape[-1])
        val = val.gather(1, idx)
    return replace(iv, positions=pos, value=val)


def _next_token(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, gen
) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    if temperature <= 0:
        raise CaptureError(f"temperature must be > 0 when sampling, got {temperature}")
    scores = logits.float() / temperature
    if top_k is not None and 0 < top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


@torch.no_grad()
def run_generate(
    model,
    input_ids,
    attention_mask=None,
    sites=(),
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    eos_token_id: int | list[int] | None = None,
    topk_logits: int = 0,
    capture_prompt_mask=None,
    *,
    pad_token_id: int | None = None,
    interventions: list[Intervention] | None = None,
    dtype: torch.dtype | None = None,
    offload: bool = True,
) -> GenerateResult:
    """Decode with the KV cache (greedy, or sampled from a generator seeded by ``seed``) and capture every generated token.

    All sequences decode in lockstep (right-padded input is moved to left padding internally); each stops at
    its first EOS (``eos_token_id``: the model's generation config when None, ``[]`` for none), all stop at
    ``max_new_tokens``. Rows: the prompt positions chosen by ``capture_prompt_mask`` [B, T] (none by default),
    then each generated token at its own position, sorted by (batch, position). Sampling with ``seed=None``
    draws from torch's global RNG; give a seed for repeatable output.
    """
    device = _model_device(model)
    input_ids, attention_mask = _check_inputs(input_ids, attention_mask, device)
    if max_new_tokens < 0:
        raise CaptureError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    bsz, t0 = input_ids.shape
    prompt_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    if capture_prompt_mask is not None:
        prompt_mask = _check_mask(capture_prompt_mask, input_ids, "capture_prompt_mask")

    site_list = resolve_hooks(model, sites) if sites else []
    if any(s.hook == PATTERN for s in site_list):
        raise CaptureError(
            "attention patterns (attn.hook_pattern) are captured in prefill only: a decoding step's row would "
            "have a different width at each step; run_prefill over prompt + generated tokens gives them"
        )
    # Rows exist only when something is captured at them: activations or top-k logits.
    want_rows = bool(site_list) or topk_logits > 0

    order = _left_pad_order(attention_mask)
    if not torch.equal(order, torch.arange(t0, device=device).expand(bsz, -1)):
        input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
        prompt_mask = prompt_mask.gather(1, order)
        interventions = [_reorder_intervention(iv, order) for iv in interventions or []]
    prompt_mask = prompt_mask & attention_mask.bool()
    if not want_rows:
        prompt_mask = torch.zeros_like(prompt_mask)

    eos = _eos_ids(model, eos_token_id)
    pad = _pad_id(model, eos, pad_token_id)
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    gen = None
    if do_sample and seed is not None:
        gen = torch.Generator(device=device).manual_seed(int(seed))

    topk = _TopK(model, topk_logits)
    lengths = attention_mask.sum(1)
    positions = position_ids_from_mask(attention_mask)

    # Row coordinates, appended per forward pass in the same order as the capture chunks.
    coord_b: list[torch.Tensor] = []
    coord_p: list[torch.Tensor] = []
    coord_g: list[torch.Tensor] = []
    tk_v: list[torch.Tensor] = []
    tk_i: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []
    logprob_sum = torch.zeros(bsz, dtype=torch.float32, device=device)
    n_gen = torch.zeros(bsz, dtype=torch.long, device=device)
    finished = torch.zeros(bsz, dtype=torch.bool, device=device)

    with ExitStack() as stack:
        ivs = stack.enter_context(intervene(model, interventions))
        cap = stack.enter_context(
            capture(model, site_list, prompt_mask, dtype=dtype, offload=offload, record_coords=False)
        )
        if topk.cap is not None:
            topk.cap.set_positions(prompt_mask)
            stack.enter_context(topk.cap)
        fwd_kwargs = topk.forward_kwargs(model, site_list)
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=True,
            **fwd_kwargs,
        )
        bi, col = prompt_mask.nonzero(as_tuple=True)
        coord_b.append(bi)
        coord_p.append(positions[bi, col])
        coord_g.append(torch.zeros_like(bi, dtype=torch.bool))
        tk = topk.rows(out, prompt_mask)
        if tk is not None:
            tk_v.append(tk[0])
            tk_i.append(tk[1])
        if topk.cap is not None:
            topk.cap.remove()
        cache = out.past_key_values
        logits = out.logits[:, -1]
        ivs.decoding = True
        am = attention_mask

        for step in range(max_new_tokens):
            alive = ~finished
            tok = _next_token(logits, do_sample, temperature, top_k, gen)
            tok = torch.where(alive, tok, torch.full_like(tok, pad))
            lp = torch.log_softmax(logits.float(), dim=-1).gather(1, tok[:, None]).squeeze(1)
            logprob_sum += torch.where(alive, lp, torch.zeros_like(lp))
            n_gen += alive.long()
            tokens.append(tok)
            if eos_t.numel():
                finished = finished | (alive & torch.isin(tok, eos_t))
            last = bool(finished.all()) or step == max_new_tokens - 1
            if last and not want_rows:
                break
            # Feed the token just generated; finished sequences get a masked pad that nothing attends to.
            am = torch.cat([am, alive.long()[:, None]], dim=1)
            pos = (lengths + step)[:, None]
            keep = alive[:, None]
            cap.set_positions(keep)
            out = model(
                input_ids=tok[:, None],
                attention_mask=am,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                **fwd_kwargs,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1]
            rows_b = alive.nonzero(as_tuple=True)[0] if want_rows else alive.new_zeros(0, dtype=torch.long)
            coord_b.append(rows_b)
            coord_p.append(lengths[rows_b] + step)
            coord_g.append(torch.ones_like(rows_b, dtype=torch.bool))
            if topk_logits > 0:
                v, i = _topk(logits[rows_b], topk_logits)
                tk_v.append(v)
                tk_i.append(i)
            if last:
                break
    acts = cap.tensors()

    batch_index = torch.cat(coord_b).cpu()
    position = torch.cat(coord_p).cpu()
    generated = torch.cat(coord_g).cpu()
    # Chunks arrive step-major; sort once so each sequence's rows are contiguous and in position order.
    key = batch_index * (int(position.max()) + 1 if position.numel() else 1) + position
    perm = torch.argsort(key, stable=True)
    acts = {k: v[perm] for k, v in acts.items()}
    seqs: list[list[int]] = []
    all_tok = torch.stack(tokens, 1).cpu() if tokens else torch.zeros(bsz, 0, dtype=torch.long)
    n_gen_l = n_gen.cpu().tolist()
    for b in range(bsz):
        seqs.append(all_tok[b, : n_gen_l[b]].tolist())
    mean_lp = (logprob_sum / n_gen.clamp(min=1)).cpu()
    mean_lp[n_gen.cpu() == 0] = float("nan")
    return GenerateResult(
        sequences=seqs,
        finished=finished.cpu().tolist(),
        mean_logprob=mean_lp,
        prompt_lengths=lengths.cpu().tolist(),
        acts=acts,
        batch_index=batch_index[perm],
        position=position[perm],
        generated=generated[perm],
        sites=site_list,
        topk_values=torch.cat(tk_v)[perm] if tk_v else None,
        topk_indices=torch.cat(tk_i)[perm] if tk_i else None,
    )
