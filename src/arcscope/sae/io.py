"""SAE files in the layout SAELens reads and writes: a folder with ``cfg.json`` and ``sae_weights.safetensors``.

Weights: ``W_enc`` ``[d_in, d_sae]``, ``W_dec`` ``[d_sae, d_in]``, ``b_enc`` ``[d_sae]``, ``b_dec`` ``[d_in]``, and
``threshold`` ``[d_sae]`` for JumpReLU. ``cfg.json`` follows SAELens 6: ``architecture`` (standard, topk,
jumprelu), ``d_in``, ``d_sae``, ``dtype``, ``apply_b_dec_to_input``, ``normalize_activations``, ``k`` for topk,
and ``metadata`` with ``hook_name`` and ``model_name``. A BatchTopK SAE is saved as the JumpReLU SAE it is at
inference (its running threshold for every latent), as SAELens does; arcscope's own provenance lives under
``metadata.arcscope``. ``sparsity.safetensors`` (key ``sparsity``: log10 firing density) is written when known.

Loading also accepts older SAELens configs (``hook_point``, ``activation_fn_str``, boolean
``normalize_activations``), ``log_threshold`` and ``scaling_factor`` tensors, and SAELens' TopK flag
``rescale_acts_by_decoder_norm``; each is folded into plain weights so inference is one code path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from arcscope.files import atomic_path, atomic_write_json
from arcscope.sae.config import SAEError
from arcscope.sae.model import SAEConfig, SparseAutoencoder

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
# SAELens picks its config parser by this version: 6.x configs carry a metadata block, older ones do not.
SAELENS_FORMAT_VERSION = "6.0.0"

_ARCH_TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
_DTYPE_NAMES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def saelens_config(sae: SparseAutoencoder) -> dict[str, Any]:
    """The ``cfg.json`` contents for ``sae`` (SAELens 6 layout plus ``metadata.arcscope``)."""
    c = sae.cfg
    cfg: dict[str, Any] = {
        "architecture": _ARCH_TO_SAELENS[c.arch],
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": _dtype_name(sae.W_dec.dtype),
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": c.input_norm,
        "reshape_activations": "none",
    }
    if c.arch == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = False
    cfg["metadata"] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,
        "model_name": c.model,
        "hook_name": c.hook,
        "hook_head_index": None,
        "prepend_bos": False,
        "arcscope": {"arch": c.arch, "k": c.k, **c.meta},
    }
    return cfg


def save_sae(
    sae: SparseAutoencoder, folder: str | os.PathLike, *, sparsity: torch.Tensor | None = None
) -> Path:
    """Write ``sae`` as ``cfg.json`` + ``sae_weights.safetensors`` (and ``sparsity.safetensors``) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "W_enc": sae.W_enc_t.detach().T.contiguous().cpu(),
        "W_dec": sae.W_dec.detach().contiguous().cpu(),
        "b_enc": sae.b_enc.detach().contiguous().cpu(),
        "b_dec": sae.b_dec.detach().contiguous().cpu(),
    }
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold.detach().contiguous().cpu()
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_json(folder / CFG_FILE, saelens_config(sae), indent=1, allow_nan=False)
    if sparsity is not None:
        with atomic_path(folder / SPARSITY_FILE) as tmp:
            save_file({"sparsity": sparsity.detach().float().contiguous().cpu()}, str(tmp))
    return folder


def load_sae(
    folder: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> SparseAutoencoder:
    """Load an SAE saved by arcscope or SAELens (standard/ReLU, topk, jumprelu) from a folder."""
    folder = Path(folder)
    cfg_path, w_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        raise SAEError(f"{folder}: no SAE folder here (expected {CFG_FILE} and {WEIGHTS_FILE})")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise SAEError(
                f"{folder}: {p.name} is missing; an SAE folder holds {CFG_FILE} and {WEIGHTS_FILE}"
            )
    try:
        raw = json.loads(cfg_path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise SAEError(f"{cfg_path}: not a readable SAE config ({e})") from None
    try:
        with safe_open(str(w_path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise SAEError(f"{w_path}: not a readable safetensors file ({e})") from None
    return from_saelens(raw, state, where=str(folder), device=device, dtype=dtype)


def from_saelens(
    raw: dict[str, Any],
    state: dict[str, torch.Tensor],
    *,
    where: str = "SAE",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> SparseAutoencoder:
    """An SAE from a SAELens-style config dict and weight tensors (any SAELens 5/6 or arcscope layout)."""
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    ours = meta.get("arcscope") if isinstance(meta.get("arcscope"), dict) else {}
    arch_raw = raw.get("architecture", "standard")
    act_fn = raw.get("activation_fn", raw.get("activation_fn_str", "relu"))
    k = raw.get("k", (raw.get("activation_fn_kwargs") or {}).get("k"))
    if arch_raw == "standard" and act_fn == "topk":
        arch_raw = "topk"
    arch = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(arch_raw)
    if arch is None:
        raise SAEError(
            f"{where}: SAE architecture {arch_raw!r} is not supported; arcscope reads standard (ReLU), topk and "
            "jumprelu SAEs (and BatchTopK saved as jumprelu)"
        )
    if ours.get("arch") == "batchtopk":
        arch, k = "batchtopk", ours.get("k")
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise SAEError(f"{where}: {CFG_FILE} needs integer d_in and d_sae") from None
    norm = raw.get("normalize_activations", "none")
    if norm in (False, None):
        norm = "none"
    if norm in (True, "expected_average_only_in"):
        raise SAEError(
            f"{where}: normalize_activations={norm!r} needs a dataset scaling factor that is not in the files; "
            "fold it into the weights first (SAELens: fold_activation_norm_scaling_factor) and save again"
        )
    hook = meta.get("hook_name", raw.get("hook_name", raw.get("hook_point")))
    model = meta.get("model_name", raw.get("model_name"))
    extra = {k2: v for k2, v in ours.items() if k2 not in ("arch", "k")}
    try:
        cfg = SAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            arch=arch,
            k=int(k) if k is not None else None,
            hook=hook,
            model=model,
            apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
            input_norm=str(norm),
            meta=extra,
        ).validate()
    except SAEError as e:
        raise SAEError(f"{where}: {e}") from None

    state = dict(state)
    if "log_threshold" in state and "threshold" not in state:
        state["threshold"] = state.pop("log_threshold").exp()
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    if arch in ("jumprelu", "batchtopk"):
        shapes["threshold"] = (d_sae,)
    for name, shape in shapes.items():
        if name not in state:
            raise SAEError(f"{where}: {WEIGHTS_FILE} has no tensor {name!r} (it has {sorted(state)})")
        if tuple(state[name].shape) != shape:
            raise SAEError(
                f"{where}: {WEIGHTS_FILE} tensor {name} has shape {list(state[name].shape)}, "
                f"expected {list(shape)} for d_in={d_in}, d_sae={d_sae}"
            )
    dt = dtype or _DTYPE_NAMES.get(str(raw.get("dtype", "float32")).replace("torch.", ""), torch.float32)
    sae = SparseAutoencoder(cfg, device=device, dtype=dt)
    with torch.no_grad():
        sae.W_enc_t.copy_(state["W_enc"].T)
        sae.W_dec.copy_(state["W_dec"])
        sae.b_enc.copy_(state["b_enc"])
        sae.b_dec.copy_(state["b_dec"])
        if sae.threshold is not None:
            sae.threshold.copy_(state["threshold"])
        scale = state.get("scaling_factor", state.get("finetuning_scaling_factor"))
        if scale is not None:
            # SAELens multiplies activations by this before decoding: the same as scaling decoder rows.
            sae.W_dec.mul_(scale.to(sae.W_dec.dtype)[:, None])
        if arch == "topk" and raw.get("rescale_acts_by_decoder_norm"):
            sae.fold_decoder_norms()
    return sae


def check_width(sae: SparseAutoencoder, store: Any, hook: str, sae_where: str = "the SAE") -> None:
    """Raise SAEError when ``sae`` cannot read ``hook`` of ``store`` (missing hook or other width)."""
    from arcscope.errors import StoreError

    if hook not in store.hooks:
        raise StoreError(f"{store.url}: no hook {hook!r}; the store has {sorted(store.hooks)}")
    d = store.hooks[hook][0]
    if d != sae.d_in:
        raise SAEError(
            f"{sae_where} reads width {sae.d_in} (trained on {sae.cfg.hook!r}) but hook {hook!r} of "
            f"{store.url} has width {d}; pick the hook the SAE was trained on"
        )
