"""Prompt planning below engine and sae: the positions vocabulary, the one position mask, padding, plans."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from arcscope.capture import (
    POSITIONS,
    PROMPT_POSITIONS,
    PromptTooLongError,
    make_batches,
    pad_items,
    plan_prompts,
    position_mask,
)
from arcscope.errors import CaptureError
from arcscope.tasks import load
from arcscope.tasks.prompts import Role

SRC = Path(__file__).resolve().parents[1] / "src" / "arcscope"


@pytest.fixture(scope="module")
def tok():
    from arcscope.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def items(tok):
    """Teacher-forced prompts of two real tasks, each with an augmented copy."""
    got, skipped = plan_prompts(load("arc1:evaluation", limit=2), tok, limit=100_000, augmentations=2)
    assert got and not skipped
    return got


def _expected(it, kind: str) -> np.ndarray:
    """Each kind written out from the token-to-cell map's own arrays (the definitions the copies shared)."""
    cm = it.cell_map
    n = len(cm.input_ids)
    if kind == "all":
        return np.ones(n, dtype=bool)
    if kind == "cells":
        return cm.row >= 0
    if kind == "test-input":
        return cm.role == Role.TEST_INPUT.code
    if kind == "answer":
        return cm.role == Role.ANSWER.code
    if kind == "last":
        return np.arange(n) == it.n_prompt - 1
    return np.zeros(n, dtype=bool)  # generated: nothing inside the prompt


def test_each_position_kind_and_their_union(items):
    assert set(PROMPT_POSITIONS) == set(POSITIONS) - {"generated"}
    for it in items:
        for kind in POSITIONS:
            got = position_mask(it.cell_map, [kind], n_prompt=it.n_prompt)
            assert got.dtype == bool and np.array_equal(got, _expected(it, kind)), kind
        assert it.mask(["answer"]).any() and it.mask(["last"]).sum() == 1
        union = it.mask(["test-input", "last", "answer"])
        want = _expected(it, "test-input") | _expected(it, "last") | _expected(it, "answer")
        assert np.array_equal(union, want)
    # without n_prompt, "last" is the prompt's final token
    it = items[0]
    assert np.flatnonzero(position_mask(it.cell_map, ["last"])).tolist() == [len(it.cell_map) - 1]
    with pytest.raises(CaptureError, match="position kind 'cell' is not one of all, cells"):
        position_mask(it.cell_map, ["cell"])


def test_the_position_mask_and_vocabulary_are_defined_once():
    from arcscope.engine.job import POSITIONS as job_positions

    assert job_positions is POSITIONS
    defs = re.compile(r"^\s*def \w*positions?_mask\w*\(", re.M)
    homes = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if defs.search(p.read_text()))
    assert homes == ["capture/positions.py"]


def test_pad_items_left_pads_and_aligns_the_mask(items):
    batch = [min(items, key=lambda i: i.length), max(items, key=lambda i: i.length)]
    assert len(batch[0].cell_map) != len(batch[1].cell_map)
    ids, attn, keep, seqs = pad_items(batch, 0, ["cells", "last"])
    T = ids.shape[1]
    for b, it in enumerate(batch):
        n = len(seqs[b])
        assert ids[b, T - n :].tolist() == np.asarray(it.cell_map.input_ids).tolist()
        assert attn[b, : T - n].sum() == 0 and attn[b, T - n :].all()
        assert not keep[b, : T - n].any() and np.array_equal(keep[b, T - n :], it.mask(["cells", "last"]))
    # prompt_only: the answer is dropped, "last" is then the final real token
    ids, attn, keep, seqs = pad_items(batch, 0, ["last"], prompt_only=True)
    assert [len(s) for s in seqs] == [it.n_prompt for it in batch]
    assert keep[:, -1].all() and keep.sum() == len(batch)


def test_plan_orders_numbers_and_bounds(items, tok):
    assert [it.sample for it in items] == list(range(len(items)))
    # shortest order: tasks by their longest prompt
    longest = [
        max(i.length for i in items if i.task.id == t) for t in dict.fromkeys(i.task.id for i in items)
    ]
    assert longest == sorted(longest)
    batches = make_batches(items, batch_tokens=10_000, max_batch=3)
    assert sorted(i.sample for b in batches for i in b.items) == list(range(len(items)))
    assert all(len(b.items) <= 3 and b.padded_tokens <= 10_000 for b in batches if len(b.items) > 1)
    tasks = load("arc1:evaluation", limit=2)
    one, _ = plan_prompts(tasks, tok, limit=100_000, max_tasks=1)
    assert {i.task.id for i in one} == {items[0].task.id}
    short = min(i.length for i in items) - 1
    kept, skipped = plan_prompts(tasks, tok, limit=short)
    assert not kept and len(skipped) == len(items) // 2 and "the context holds" in skipped[0][1]
    with pytest.raises(PromptTooLongError, match=f"the context holds {short}.*--on-long skip"):
        plan_prompts(tasks, tok, limit=short, on_long="fail")
