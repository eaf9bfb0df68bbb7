"""Prompt planning shared by capture jobs (``engine``) and SAEs (``sae``): the positions vocabulary, the one
position mask, work items (one prompt each), length-bucketed batches and left padding.

A plan is a pure function of its settings and the task source. That is what makes a job's resume exact, and
what lets anyone holding a store's manifest (which records those settings) rebuild the store's prompts
without replaying the job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from arcscope.errors import CaptureError

if TYPE_CHECKING:
    import torch

    from arcscope.tasks import Task

POSITIONS = ("all", "cells", "test-input", "answer", "generated", "last")
"""Which token positions a capture keeps: every prompt token (``all``), grid cells (``cells``: every token that
encodes one cell, in the prompt and, in generate mode, in the answer the model wrote), the test input grid,
the teacher-forced answer, every generated token (``generated``), the last prompt token (the one that predicts
the first answer token)."""
PROMPT_POSITIONS = tuple(p for p in POSITIONS if p != "generated")
"""The kinds that lie inside the prompt (all but ``generated``, which only a generation loop produces)."""


class PromptTooLongError(CaptureError):
    """A prompt does not fit the context and the plan was asked to fail rather than skip it."""


def position_mask(cell_map: Any, positions: Iterable[str], *, n_prompt: int | None = None) -> np.ndarray:
    """Bool mask over a prompt's tokens (unpadded) for the position kinds ``positions`` (see POSITIONS).

    ``n_prompt`` is the number of tokens before a teacher-forced answer (default: all of them), for ``last``.
    ``generated`` adds nothing here, nor ``cells`` for generated tokens: generated tokens are not in the prompt
    (the engine keeps them as it decodes).
    """
    from arcscope.tasks.prompts import Role

    n = len(cell_map.input_ids)
    mask = np.zeros(n, dtype=bool)
    for p in positions:
        if p == "all":
            mask[:] = True
        elif p == "cells":
            mask |= cell_map.cell_mask()
        elif p == "test-input":
            mask |= cell_map.mask(Role.TEST_INPUT)
        elif p == "answer":
            mask |= cell_map.mask(Role.ANSWER)
        elif p == "last":
            last = n if n_prompt is None else n_prompt
            if last > 0:
                mask[last - 1] = True
        elif p != "generated":
            raise CaptureError(f"position kind {p!r} is not one of {', '.join(POSITIONS)}")
    return mask


def pad_left(seqs: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id arrays into ``(input_ids, attention_mask)`` long tensors ``[B, T]``."""
    import torch

    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, n - len(s) :] = torch.as_tensor(np.asarray(s, dtype=np.int64))
        mask[b, n - len(s) :] = 1
    return ids, mask


@dataclass
class WorkItem:
    """One prompt of a plan, tokenized, with its token-to-cell map."""

    sample: int
    """Ordinal of this item in the plan (stable across resumes)."""
    task: Task
    """The original (un-augmented) task."""
    augmentation: object
    """The augmentation applied (arcscope.tasks.augment.Augmentation)."""
    aug_task: Task
    """The task after augmentation."""
    test_index: int
    prompt: object
    """arcscope.tasks.prompts.Prompt"""
    cell_map: object
    """arcscope.tasks.prompts.TokenCellMap over the full prompt (answer included when teacher-forced)."""
    n_prompt: int
    """Tokens before the answer (the generation starts here)."""
    max_new_tokens: int = 0
    skipped: str | None = None

    @property
    def key(self) -> str:
        """Stable identity of this item: task|augmentation|test index."""
        return f"{self.task.id}|{self.augmentation.name}|{self.test_index}"

    @property
    def length(self) -> int:
        """Tokens this item occupies in a batch (prompt + answer or generation budget)."""
        return len(self.cell_map.input_ids) + self.max_new_tokens

    def mask(self, positions: Iterable[str]) -> np.ndarray:
        """:func:`position_mask` of this item's prompt."""
        return position_mask(self.cell_map, positions, n_prompt=self.n_prompt)


@dataclass
class Batch:
    """A group of items run together."""

    number: int
    items: list[WorkItem]

    @property
    def padded_tokens(self) -> int:
        """Tokens including padding."""
        return len(self.items) * max(i.length for i in self.items)

    @property
    def real_tokens(self) -> int:
        """Tokens excluding padding."""
        return sum(i.length for i in self.items)


class Padded(NamedTuple):
    """A batch of items as model inputs, left-padded, with the positions to keep."""

    input_ids: torch.Tensor
    """long ``[B, T]``."""
    attention_mask: torch.Tensor
    """long ``[B, T]``: 1 on real tokens."""
    keep: np.ndarray
    """bool ``[B, T]``: the requested positions, in padded coordinates."""
    seqs: list[np.ndarray]
    """Each item's (unpadded) token ids."""


def pad_items(
    items: Sequence[WorkItem], pad_id: int, positions: Iterable[str], *, prompt_only: bool = False
) -> Padded:
    """Left-pad ``items`` into model inputs with the ``positions`` mask; ``prompt_only`` drops the answers."""
    positions = list(positions)
    if prompt_only:
        seqs = [np.asarray(it.cell_map.input_ids)[: it.n_prompt] for it in items]
    else:
        seqs = [np.asarray(it.cell_map.input_ids) for it in items]
    ids, attn = pad_left(seqs, pad_id)
    T = ids.shape[1]
    keep = np.zeros((len(seqs), T), dtype=bool)
    for b, it in enumerate(items):
        n = len(seqs[b])
        keep[b, T - n :] = it.mask(positions)[:n]
    return Padded(ids, attn, keep, seqs)


def make_batches(items: list[WorkItem], batch_tokens: int, max_batch: int) -> list[Batch]:
    """Sort by length and pack greedily so no batch exceeds the padded-token and size bounds."""
    order = sorted(items, key=lambda i: (i.length, i.sample))
    batches: list[Batch] = []
    cur: list[WorkItem] = []
    for it in order:
        longest = max([it.length] + [c.length for c in cur])
        if cur and (len(cur) + 1 > max_batch or (len(cur) + 1) * longest > batch_tokens):
            batches.append(Batch(len(batches), cur))
            cur = []
        cur.append(it)
    if cur:
        batches.append(Batch(len(batches), cur))
    return batches


def generation_budget(task: Task, encoder: Any, tokenizer: Any, cap: int | None) -> int:
    """Tokens to allow for an answer: 1.25x the longest encoded train output plus a margin."""
    longest = max(
        len(tokenizer(encoder.encode(p.output), add_special_tokens=False).input_ids) for p in task.train
    )
    budget = int(longest * 1.25) + 16
    return min(budget, cap) if cap else budget


def plan_prompts(
    tasks: Iterable[Task],
    tokenizer: Any,
    *,
    limit: int,
    encoder: str = "minimal",
    template: str = "default",
    augmentations: int = 1,
    seed: int = 0,
    with_answer: bool = True,
    generate: bool = False,
    max_new_tokens: int | None = None,
    order: str = "shortest",
    max_tasks: int | None = None,
    on_long: str = "skip",
) -> tuple[list[WorkItem], list[tuple[str, str]]]:
    """Every (task, augmentation, test input) prompt that fits ``limit`` tokens, ordered and numbered,
    plus ``(item key, reason)`` for each prompt left out.

    ``with_answer`` appends the gold answer (teacher forcing); ``generate`` reserves a generation budget per
    task (at most ``max_new_tokens``). ``order`` is ``shortest`` (tasks by their longest prompt) or
    ``source``; ``max_tasks`` keeps the first tasks of that order. ``on_long="fail"`` raises
    :class:`PromptTooLongError` at the first prompt that does not fit.
    """
    from arcscope.tasks.augment import augment_task
    from arcscope.tasks.encoding import get_encoder
    from arcscope.tasks.prompts import build_prompt, token_cell_map

    enc = get_encoder(encoder)
    tasks = list(tasks)
    per_task: list[list[WorkItem]] = []
    skipped: list[tuple[str, str]] = []
    for task in tasks:
        items: list[WorkItem] = []
        budget = generation_budget(task, enc, tokenizer, max_new_tokens) if generate else 0
        for aug, aug_task in augment_task(task, augmentations, seed=seed, include_identity=True):
            for ti in range(len(aug_task.test)):
                if with_answer and aug_task.test[ti].output is None:
                    skipped.append((f"{task.id}|{aug.name}|{ti}", "no known answer to teacher-force"))
                    continue
                prompt = build_prompt(
                    aug_task, enc, tokenizer, test_index=ti, include_answer=with_answer, template=template
                )
                cmap = token_cell_map(prompt, tokenizer)
                n_prompt = len(cmap.input_ids) - (
                    prompt.answer_token_count(cell_map=cmap) if with_answer else 0
                )
                item = WorkItem(-1, task, aug, aug_task, ti, prompt, cmap, n_prompt, budget)
                if item.length > limit:
                    reason = f"prompt needs {item.length} tokens, the context holds {limit}"
                    if on_long == "fail":
                        raise PromptTooLongError(f"task {task.id}: {reason} (use --on-long skip to skip it)")
                    skipped.append((item.key, reason))
                    continue
                items.append(item)
        if items:
            per_task.append(items)
    if order == "shortest":
        per_task.sort(key=lambda its: (max(i.length for i in its), its[0].task.id))
    if max_tasks and len(per_task) >= max_tasks:  # None or 0: every task
        per_task = per_task[:max_tasks]
        if order == "shortest":
            # a skipped prompt is longer than the context, so it would not have been among the shortest
            skipped = []
        else:
            last = per_task[-1][0].task.id
            rank = {t.id: n for n, t in enumerate(tasks)}
            skipped = [(w, r) for w, r in skipped if rank.get(w.split("|")[0], 0) <= rank[last]]
    items = [it for its in per_task for it in its]
    for n, it in enumerate(items):
        it.sample = n
    return items, skipped
