"""How the model solves a task, on the grid: logit lens, attention on grids, knockout, activation and
attribution patching, probes and steering, for causal LMs and the recurrent reasoners.

Everything starts from a :class:`Subject` (a teacher-forced task prompt with its answer cells located) and a
:class:`Metric` of the answer; results are small objects holding arrays plus index tables, written as
HTML reports and Parquet/JSON by :mod:`arcscope.analysis.report`.
"""

from arcscope._lazy import lazy_names

_LAZY = {
    "AnalysisError": "subject",
    "AnswerCells": "subject",
    "CellTable": "subject",
    "METRICS": "subject",
    "Metric": "subject",
    "Subject": "subject",
    "as_metric": "subject",
    "to_grids": "subject",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
