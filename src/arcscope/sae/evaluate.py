"""How good an SAE is: reconstruction over store rows, latent density, and the model's loss with the SAE spliced in.

Reconstruction metrics over ``rows`` store rows (shards in a seeded order):

* ``l0``: mean active latents per row; ``mse``: mean squared error per element;
* ``fvu``: sum of squared errors over the total variance of the rows (``explained_variance`` = 1 - fvu);
* ``cosine``: mean cosine similarity of row and reconstruction; ``norm_ratio``: mean |x_hat| / |x|;
* ``dead_fraction``: latents that never fire on these rows; ``dense_fraction``: latents firing on more than
  ``dense_threshold`` of them; ``density_histogram``: counts of log10 firing density per bin.

Downstream (:func:`downstream_loss`): the model runs on the store's prompts three times, clean, with the
SAE's reconstruction replacing the hook's activation at the store's positions (a capture intervention), and
with those activations zeroed. Over the next-token predictions from the first replaced position on it
reports the cross-entropy of each, ``ce_increase`` (SAE - clean), ``ce_recovered`` ((zero - SAE) / (zero -
clean)) and the mean KL divergence from the clean distribution.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from arcscope.config import make_config
from arcscope.sae.config import EvalConfig, SAEError
from arcscope.sae.data import StoreSource
from arcscope.sae.io import check_width
from arcscope.sae.model import SparseAutoencoder

HIST_EDGES = [-10.0] + [round(-8 + 0.5 * i, 1) for i in range(17)]
"""log10 density bin edges; the first bin holds latents that never fired (density 0 -> -10)."""


@torch.no_grad()
def reconstruction_metrics(
    sae: SparseAutoencoder,
    store: Any,
    hook: str | None = None,
    *,
    rows: int | None = 65536,
    batch_size: int = 4096,
    seed: int = 0,
    dense_threshold: float = 0.1,
) -> dict[str, Any]:
    """Reconstruction and sparsity metrics of ``sae`` on up to ``rows`` rows of ``hook`` (None: all rows)."""
    hook = hook or sae.cfg.hook
    if hook is None:
        raise SAEError("the SAE names no hook; pass the hook to evaluate on")
    check_width(sae, store, hook)
    src = StoreSource(store, hook, verify="size", prefetch=2)
    want = store.n_rows if rows is None else min(rows, store.n_rows)
    dev = sae.W_dec.device
    n = 0
    sq_err = cos = ratio = l0 = 0.0
    sum_x = torch.zeros(sae.d_in, dtype=torch.float64)
    sum_sq = 0.0
    counts = torch.zeros(sae.d_sae, dtype=torch.float64)
    for block in src.blocks(0, seed):
        for a in range(0, len(block), batch_size):
            x = block[a : a + min(batch_size, want - n)].float().to(dev)
            if not len(x):
                break
            acts = sae.encode(x)
            y = sae(x)
            err = (y - x).double()
            sq_err += float(err.pow(2).sum())
            xd = x.double()
            sum_x += xd.sum(0).cpu()
            sum_sq += float(xd.pow(2).sum())
            cos += float(F.cosine_similarity(y, x, dim=1).sum())
            ratio += float((y.norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)).sum())
            active = acts > 0
            l0 += float(active.sum())
            counts += active.sum(0).double().cpu()
            n += len(x)
            if n >= want:
                break
        if n >= want:
            break
    if n == 0:
        raise SAEError(f"{store.url}: no rows of {hook!r} to evaluate on")
    total_var = sum_sq - float(sum_x.pow(2).sum()) / n
    density = counts / n
    logd = torch.where(density > 0, density.clamp_min(1e-300).log10(), torch.full_like(density, -10.0))
    hist, _ = np.histogram(logd.numpy(), bins=HIST_EDGES)
    return {
        "hook": hook,
        "rows": n,
        "l0": l0 / n,
        "mse": sq_err / (n * sae.d_in),
        "fvu": sq_err / max(total_var, 1e-30),
        "explained_variance": 1 - sq_err / max(total_var, 1e-30),
        "cosine": cos / n,
        "norm_ratio": ratio / n,
        "dead_fraction": float((density == 0).double().mean()),
        "dense_fraction": float((density > dense_threshold).double().mean()),
        "dense_threshold": dense_threshold,
        "density_histogram": {"edges": HIST_EDGES, "counts": hist.tolist()},
    }


def _prompts_from_store(store: Any, loaded: Any, tasks: Any, max_prompts: int) -> tuple[list[Any], list[str]]:
    """The first ``max_prompts`` prompts of the job that wrote the store (teacher-forced), rebuilt from the
    settings its manifest records, and the store's prompt positions."""
    from arcscope.capture import PROMPT_POSITIONS, plan_prompts

    meta = store.meta
    job = dict(meta.get("job") or {})
    recorded = (meta.get("capture") or {}).get("positions", job.get("positions", ["cells"]))
    positions = [p for p in recorded if p in PROMPT_POSITIONS] or ["cells"]
    if tasks is None:
        from arcscope.tasks import load

        spec = meta.get("task_source")
        if not spec:
            raise SAEError(f"{store.url}: the store does not name its task source; pass tasks")
        tasks = load(spec)
    # What a store does not record keeps the planner's defaults (a store written without a job, say).
    settings = {
        k: job[k]
        for k in ("encoder", "template", "augmentations", "seed", "order", "max_tasks")
        if job.get(k) is not None
    }
    # The loss is measured by teacher forcing, whatever mode wrote the store; a prompt that does not fit
    # with its answer is left out rather than failing the evaluation.
    items, _ = plan_prompts(
        tasks,
        loaded.tokenizer,
        limit=job.get("max_prompt_tokens") or loaded.context_length,
        with_answer=True,
        on_long="skip",
        **settings,
    )
    if not items:
        raise SAEError("no prompts to measure the downstream loss on")
    return items[:max_prompts], positions


@torch.no_grad()
def downstream_loss(
    sae: SparseAutoencoder,
    loaded: Any,
    items: list[Any],
    hook: str,
    positions: list[str],
) -> dict[str, float]:
    """Cross-entropy and KL of the model with ``sae``'s reconstruction (and with zeros) at ``hook``."""
    from arcscope.capture import Intervention, capture, intervene, position_ids_from_mask, resolve_hooks

    model, dev = loaded.model, loaded.device
    sites = resolve_hooks(model, hook)
    if len(sites) != 1:
        raise SAEError(f"hook {hook!r} names {len(sites)} sites in the model; expected one")
    site = sites[0]
    if site.d is not None and site.d != sae.d_in:
        raise SAEError(f"the SAE reads width {sae.d_in} but {hook} of the model has width {site.d}")
    sae_dev = sae.W_dec.device
    tot = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0}
    count = 0
    for it in items:
        ids = torch.as_tensor(np.asarray(it.cell_map.input_ids, dtype=np.int64))[None].to(dev)
        attn = torch.ones_like(ids)
        pos_ids = position_ids_from_mask(attn)
        mask = torch.as_tensor(it.mask(positions))[None]
        if not mask.any() or ids.shape[1] < 2:
            continue
        with capture(model, [site], positions=mask.to(dev), record_coords=False) as cap:
            clean = model(input_ids=ids, attention_mask=attn, position_ids=pos_ids).logits[0].float()
        acts = cap[site.name].float().to(sae_dev)
        recon = sae(acts).to(model.dtype).to(dev)
        ivs = {
            "sae": Intervention(site, "replace", recon, positions=mask),
            "zero": Intervention(site, "zero", positions=mask),
        }
        first = int(mask[0].nonzero()[0, 0])
        target = ids[0, first + 1 :]
        lp_clean = F.log_softmax(clean[first:-1], -1)
        tot["clean"] += float(F.nll_loss(lp_clean, target, reduction="sum"))
        for name, iv in ivs.items():
            with intervene(model, [iv]):
                logits = model(input_ids=ids, attention_mask=attn, position_ids=pos_ids).logits[0].float()
            lp = F.log_softmax(logits[first:-1], -1)
            tot[name] += float(F.nll_loss(lp, target, reduction="sum"))
            tot[f"kl_{name}"] += float(F.kl_div(lp, lp_clean, log_target=True, reduction="sum"))
        count += len(target)
    if count == 0:
        raise SAEError("none of the prompts has a position to splice the SAE into")
    ce = {k: v / count for k, v in tot.items()}
    gap = ce["zero"] - ce["clean"]
    return {
        "prompts": len(items),
        "tokens": count,
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_increase": ce["sae"] - ce["clean"],
        "ce_recovered": (ce["zero"] - ce["sae"]) / gap if abs(gap) > 1e-12 else math.nan,
        "kl_sae": ce["kl_sae"],
        "kl_zero": ce["kl_zero"],
    }


def evaluate(
    sae: SparseAutoencoder,
    store: Any,
    hook: str | None = None,
    config: EvalConfig | dict[str, Any] | None = None,
    *,
    model: Any = None,
    tasks: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """Every metric of the module docstring; ``downstream`` loads the store's model (or ``model``).

    ``config`` and keyword ``settings`` are :class:`~arcscope.sae.config.EvalConfig` fields (rows,
    batch_size, downstream, prompts, device)."""
    cfg = make_config(EvalConfig, config, settings)
    rows, prompts, device = cfg.rows, cfg.prompts, cfg.device
    hook = hook or sae.cfg.hook
    out = reconstruction_metrics(sae, store, hook, rows=rows, batch_size=cfg.batch_size)
    if cfg.downstream:
        from arcscope.models import LoadedModel, load_model

        if isinstance(model, LoadedModel):
            loaded = model
        else:
            path = model or ((store.meta.get("model") or {}).get("path"))
            if not path:
                raise SAEError(f"{store.url}: the store does not name its model; pass model")
            loaded = load_model(path, device=device, dtype="float32")
        items, positions = _prompts_from_store(store, loaded, tasks, prompts)
        out["downstream"] = downstream_loss(sae, loaded, items, hook, positions)
        out["downstream"]["positions"] = positions
    return out
