"""Tiny ReLU RNNs with known algorithms (the AlgZoo shape M_{H,T}) and their exact piecewise-linear analysis.

>>> from arcscope import rnn
>>> model = rnn.load("second-argmax-h4-t3")          # a bundled zoo model, or a .safetensors / AlgZoo .pth
>>> regions = rnn.classify_regions(model, rnn.sample_inputs(100_000, 3))
>>> A = rnn.region_linear_map(model, regions[0].pattern)   # output = A @ x on that region
>>> realisable = rnn.enumerate_regions(model)              # every region, found exactly
"""

from __future__ import annotations

from arcscope._lazy import lazy_names

# Names resolve on first use, so ``arcscope.rnn.config`` (the CLI's option defaults) does not import torch.
_LAZY = {
    "CheckpointError": "errors",
    "EnumerationLimitError": "errors",
    "InputShapeError": "errors",
    "RegionOverflowError": "errors",
    "RnnError": "errors",
    "Ablation": "interpret",
    "AblationReport": "interpret",
    "NeuronProbe": "interpret",
    "ProbeReport": "interpret",
    "ablate": "interpret",
    "ablated": "interpret",
    "probe": "interpret",
    "probe_features": "interpret",
    "standardization_quality": "interpret",
    "standardize": "interpret",
    "ReluRNN": "model",
    "Trace": "model",
    "Weights": "model",
    "evaluate": "model",
    "forward": "model",
    "load": "model",
    "load_zoo": "model",
    "save": "model",
    "trace": "model",
    "ActivationPattern": "regions",
    "RegionCheck": "regions",
    "RegionInfo": "regions",
    "RegionMap": "regions",
    "RegionSet": "regions",
    "check_regions": "regions",
    "classify_regions": "regions",
    "enumerate_regions": "regions",
    "in_region": "regions",
    "pattern_bits": "regions",
    "region_constraints": "regions",
    "region_linear_map": "regions",
    "region_witness": "regions",
    "build_report": "report",
    "write_report": "report",
    "TASKS": "tasks",
    "Task": "tasks",
    "get_task": "tasks",
    "make_dataset": "tasks",
    "sample_inputs": "tasks",
    "TrainConfig": "config",
    "TrainResult": "train",
    "train": "train",
    "train_seed": "train",
    "ZOO_DIR": "zoo",
    "ZOO_SPEC": "zoo",
    "ZooEntry": "zoo",
    "ZooSpec": "zoo",
    "zoo": "zoo",
    "zoo_name": "zoo",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
