"""Sparse autoencoders on captured activations: train, evaluate, explore latents on ARC grids.

``train_sae(TrainConfig(arch="topk", k=32), "out/", store=URL, hook=NAME)`` trains; ``load_sae(folder)`` reads
arcscope or SAELens SAE folders; ``evaluate(sae, store)`` measures reconstruction and downstream loss;
``latent_stats`` / ``rank_latents`` find latents by grid property; ``write_dashboard`` builds the HTML site.
"""

from arcscope._lazy import lazy_names

# Names resolve on first use, so importing a light submodule (``arcscope.sae.config``, e.g. for the CLI's
# option defaults) does not pull in torch and the whole package.
_LAZY = {
    "ARCHS": "config",
    "DashboardConfig": "config",
    "EvalConfig": "config",
    "SAEError": "config",
    "TrainConfig": "config",
    "make_dashboard": "dashboard",
    "write_dashboard": "dashboard",
    "ModelSource": "data",
    "StoreSource": "data",
    "batches": "data",
    "downstream_loss": "evaluate",
    "evaluate": "evaluate",
    "reconstruction_metrics": "evaluate",
    "LatentStats": "features",
    "latent_stats": "features",
    "logit_effects": "features",
    "rank_latents": "features",
    "check_width": "io",
    "from_saelens": "io",
    "load_sae": "io",
    "save_sae": "io",
    "SAEConfig": "model",
    "SparseAutoencoder": "model",
    "geometric_median": "model",
    "TrainResult": "train",
    "train_sae": "train",
}


__all__ = [
    "ARCHS",
    "DashboardConfig",
    "EvalConfig",
    "LatentStats",
    "ModelSource",
    "SAEConfig",
    "SAEError",
    "SparseAutoencoder",
    "StoreSource",
    "TrainConfig",
    "TrainResult",
    "batches",
    "check_width",
    "downstream_loss",
    "evaluate",
    "from_saelens",
    "geometric_median",
    "latent_stats",
    "logit_effects",
    "make_dashboard",
    "rank_latents",
    "reconstruction_metrics",
    "load_sae",
    "save_sae",
    "train_sae",
    "write_dashboard",
]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
