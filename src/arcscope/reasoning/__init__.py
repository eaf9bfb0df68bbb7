"""Recurrent reasoning models (HRM ACT v1, TRM): models, losses, training, evaluation, state capture.

Names are loaded lazily from their submodules so ``import arcscope.reasoning`` does not import torch.
"""

from __future__ import annotations

from arcscope._lazy import lazy_names

_LAZY = {
    # config.py
    "HRMConfig": "config",
    "TRMConfig": "config",
    "TrainConfig": "config",
    "ConfigError": "config",
    "preset": "config",
    "load_config": "config",
    "apply_overrides": "config",
    # models
    "HRM": "hrm",
    "TRM": "trm",
    "Carry": "act",
    "InnerCarry": "act",
    "ACTLossHead": "losses",
    "stablemax_cross_entropy": "losses",
    "AdamATan2": "optim",
    "SparseEmbeddingSignSGD": "optim",
    "EMA": "ema",
    # checkpoint.py
    "build_model": "checkpoint",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    # train / evaluate / capture
    "train": "train",
    "TrainResult": "train",
    "evaluate": "evaluate",
    "evaluate_split": "evaluate",
    "arc_report": "evaluate",
    "EvalResult": "evaluate",
    "trace": "capture",
    "ReasoningTrace": "capture",
    "capture_to_store": "capture",
    "hook_names": "capture",
    "bundled_checkpoint": "bundled",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
