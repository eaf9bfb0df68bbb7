"""Record pipelines: filter, dedupe, split, length analysis, LLM enrichment, export, publish.

Every step reads any task spec or a JSONL / Parquet / HF ``datasets`` folder of records, streams them, writes
its output atomically with a JSON report beside it, and can skip bad records (``on_error="skip"``) while
counting them. :func:`run_pipeline` runs a YAML list of steps and resumes where a previous run stopped.

Names load lazily so ``import arcscope.datasets`` stays fast.
"""

from __future__ import annotations

from arcscope._lazy import lazy_names

_LAZY = {
    "DatasetError": "records",
    "Rec": "records",
    "RecordWriter": "records",
    "read_records": "records",
    "record_hash": "records",
    "get_field": "records",
    "StepReport": "step_report",
    "report_path": "step_report",
    "Expression": "expr",
    "TASK_PROPERTIES": "expr",
    "canonical_form": "canonical",
    "canonical_hash": "canonical",
    "canonical_task": "canonical",
    "FilterConfig": "steps",
    "DedupeConfig": "steps",
    "SplitConfig": "steps",
    "filter_records": "steps",
    "dedupe": "steps",
    "split": "steps",
    "assign_split": "steps",
    "group_key": "steps",
    "PromptSpec": "tokens",
    "load_tokenizer_spec": "tokens",
    "LengthsConfig": "token_lengths",
    "LengthStats": "token_lengths",
    "lengths": "token_lengths",
    "length_stats": "token_lengths",
    "EnrichConfig": "llm",
    "EnrichError": "llm",
    "PRESETS": "llm",
    "enrich": "llm",
    "ExportConfig": "hub",
    "PublishConfig": "hub",
    "export": "hub",
    "publish": "hub",
    "dataset_card": "hub",
    "PublishError": "hub",
    "ChatServer": "testserver",
    "run_pipeline": "pipeline",
    "load_pipeline": "pipeline",
    "STEPS": "pipeline",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
