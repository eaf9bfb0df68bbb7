"""How the model solves a task, on the grid: logit lens, attention on grids, knockout, activation and
attribution patching, probes and steering, for causal LMs and the recurrent reasoners.

Everything starts from a :class:`Subject` (a teacher-forced task prompt with its answer cells located) and a
:class:`Metric` of the answer; results are small objects holding arrays plus index tables, written as
HTML reports and Parquet/JSON by :mod:`arcscope.analysis.report`; :mod:`arcscope.analysis.run` is one call
per `arcscope analyze` command. The recurrent reasoners (HRM, TRM) are analysed by
:mod:`arcscope.analysis.reasoning` (their positions already are grid cells; its result types keep their module
names, e.g. ``arcscope.analysis.reasoning.PatchResult``).
"""

from arcscope._lazy import lazy_names

_LAZY = {
    "AnalysisConfigError": "config",
    "AttentionConfig": "config",
    "KnockoutConfig": "config",
    "LensConfig": "config",
    "PatchConfig": "config",
    "ProbeConfig": "config",
    "ProbeError": "config",
    "ProbeRunConfig": "config",
    "SteerConfig": "config",
    "SubjectConfig": "config",
    "AnalysisError": "config",
    "METRICS": "config",
    "AnswerCells": "subject",
    "CellTable": "subject",
    "Metric": "subject",
    "Subject": "subject",
    "as_metric": "subject",
    "to_grids": "subject",
    "LensCurve": "lens",
    "LensResult": "lens",
    "TunedLens": "lens",
    "TunedLensConfig": "lens",
    "lens_curve": "lens",
    "logit_lens": "lens",
    "logit_lens_tasks": "lens",
    "train_tuned_lens": "lens",
    "ProbeResult": "probes",
    "LinearProbe": "probes",
    "fit_probe": "probes",
    "probe_layers": "probes",
    "target_labels": "probes",
    "SteeringVector": "vectors",
    "mean_difference": "vectors",
    "probe_direction": "vectors",
    "sae_direction": "vectors",
    "save_vector": "vectors",
    "load_vector": "vectors",
    "DoseResponse": "steering",
    "dose_response": "steering",
    "decided_step": "reasoning",
    "patch_states": "reasoning",
    "grid_attention": "reasoning",
    "probe_steps": "reasoning",
    "as_puzzles": "reasoning",
    "with_cell": "reasoning",
    "run_lens": "run",
    "run_attention": "run",
    "run_knockout": "run",
    "run_patch": "run",
    "run_train_lens": "run",
    "is_reasoning_model": "run",
    "attention_to_grids": "attention",
    "knockout": "attention",
    "knockout_sweep": "attention",
    "AttentionResult": "attention",
    "KnockoutResult": "attention",
    "KnockoutSweep": "attention",
    "parse_positions": "attention",
    "corrupt": "corrupt",
    "corrupt_subject": "corrupt",
    "aligned": "corrupt",
    "patch_sweep": "patching",
    "head_sweep": "patching",
    "attribution_patching": "patching",
    "agreement": "patching",
    "compare_on_sample": "patching",
    "path_patch": "patching",
    "sae_splice": "patching",
    "sae_patch": "patching",
    "PatchResult": "patching",
    "write_report": "report",
    "TunedLensRunConfig": "config",
    "run_probe": "run",
    "run_steer": "run",
    "load_subject": "run",
    "pick_task": "run",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
