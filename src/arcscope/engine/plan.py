"""A job's plan: its work items and length-bucketed batches, built from the job config.

A work item is one prompt: (task, augmentation, test index). Items are tokenized once, sorted by length and
packed greedily into batches bounded by padded tokens, so padding waste stays small. The plan is a pure
function of the job config and the task source, which is what makes resume exact: a resumed job rebuilds
the same plan and skips the batches its manifest says are done. The planning itself lives in
:mod:`arcscope.capture.positions`, below the engine, so ``sae`` rebuilds a store's prompts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arcscope.capture.positions import (
    Batch,
    PromptTooLongError,
    WorkItem,
    make_batches,
    pad_left,
    plan_prompts,
)
from arcscope.engine.job import JobConfig, JobConfigError
from arcscope.tasks import TaskSet

__all__ = ["Batch", "Plan", "WorkItem", "build_plan", "make_batches", "pad_left"]


@dataclass
class Plan:
    """All items and batches of a job, plus what was skipped and why."""

    items: list[WorkItem]
    batches: list[Batch]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def padding_fraction(self) -> float:
        """Share of padded tokens that are padding."""
        padded = sum(b.padded_tokens for b in self.batches)
        return 0.0 if padded == 0 else 1.0 - sum(b.real_tokens for b in self.batches) / padded


def build_plan(tasks: TaskSet, cfg: JobConfig, tokenizer, context_len: int) -> Plan:
    """Tokenize every (task, augmentation, test input) prompt of the job, order and batch them."""
    try:
        items, skipped = plan_prompts(
            tasks,
            tokenizer,
            limit=cfg.max_prompt_tokens or context_len,
            encoder=cfg.encoder,
            template=cfg.template,
            augmentations=cfg.augmentations,
            seed=cfg.seed,
            with_answer=cfg.mode == "prefill" and cfg.teacher_forcing,
            generate=cfg.mode == "generate",
            max_new_tokens=cfg.max_new_tokens,
            order=cfg.order,
            max_tasks=cfg.max_tasks,
            on_long=cfg.on_long,
        )
    except PromptTooLongError as e:
        raise JobConfigError(str(e)) from None
    return Plan(items, make_batches(items, cfg.batch_tokens, cfg.max_batch), skipped)
