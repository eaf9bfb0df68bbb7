"""The answer is part of the grid: generated tokens mapped to cells, stored by default, diffs in the viewer."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from arcscope.engine import JobConfig, LocalRunner
from arcscope.models import load_model, load_tokenizer
from arcscope.store import open_store
from arcscope.tasks import Pair, Role, Task, as_grid, build_prompt, token_cell_map
from arcscope.tasks import prompts as prompts_mod
from arcscope.tasks.prompts import decode_offsets, generated_cell_map

TASK = Task(
    "t1",
    (Pair(as_grid([[1, 2], [3, 4]]), as_grid([[4, 3], [2, 1]])),),
    (Pair(as_grid([[7, 8], [9, 0]]), as_grid([[0, 9], [8, 7]])),),
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def pieces(tok, parts: list[str]) -> list[int]:
    """Token ids of ``parts`` tokenized one by one (what a model may emit), not of their joined text."""
    return [i for p in parts for i in tok(p, add_special_tokens=False).input_ids]


def gen_part(m, n_prompt: int, name: str) -> list[int]:
    return getattr(m, name)[n_prompt:].tolist()


# --- decoding generated ids ----------------------------------------------------------------------------


def test_decode_offsets_splits_text_by_token_with_partial_utf8_and_eos(tok):
    ids = [*pieces(tok, ["Sure", " é😀", ":\n", "0", "9", "\n", "8", "7"]), tok.eos_token_id]
    text, off = decode_offsets(tok, ids)
    assert text == "Sure é😀:\n09\n87<|im_end|>"
    spans = [text[a:b] for a, b in off]
    # the emoji is three byte-level tokens: the first two end inside it (empty spans), the third completes it
    assert spans == ["Sure", " é", "", "", "😀", ":", "\n", "0", "9", "\n", "8", "7", "<|im_end|>"]
    assert off[0, 0] == 0 and off[-1, 1] == len(text) and np.all(off[1:, 0] == off[:-1, 1])
    assert decode_offsets(tok, [])[0] == "" and decode_offsets(tok, [])[1].shape == (0, 2)


def test_decode_offsets_exact_fallback_agrees(tok, monkeypatch):
    ids = [*pieces(tok, ["é😀", "\n", "0", "1"]), tok.eos_token_id]
    fast = decode_offsets(tok, ids)
    # Without context the emoji's byte tokens cannot be split by differences: the exact path takes over.
    monkeypatch.setattr(prompts_mod, "_DECODE_WINDOW", 0)
    slow = decode_offsets(tok, ids)
    assert fast[0] == slow[0] and np.array_equal(fast[1], slow[1])


# --- the map over generated tokens ---------------------------------------------------------------------


def test_generated_tokens_get_their_cells(tok):
    p = build_prompt(TASK, "minimal", tok)
    pm = token_cell_map(p, tok)
    n = len(pm)
    gen = [*pieces(tok, ["Sure", ":\n", "0", "9", "\n", "8", "7"]), tok.eos_token_id]
    m = generated_cell_map(p, tok, gen, prompt_map=pm)
    assert len(m) == n + len(gen) and m.input_ids[n:].tolist() == gen
    # the prompt part is the prompt's own map
    for name in ("input_ids", "offsets", "segment", "role", "row", "col", "n_cells"):
        assert np.array_equal(getattr(m, name)[:n], getattr(pm, name))
    texts = [tok.decode([t]) for t in gen]
    assert texts == ["Sure", ":", "\n", "0", "9", "\n", "8", "7", "<|im_end|>"]
    assert gen_part(m, n, "row") == [-1, -1, -1, 0, 0, -1, 1, 1, -1]
    assert gen_part(m, n, "col") == [-1, -1, -1, 0, 1, -1, 0, 1, -1]
    g = Role.GENERATED.code
    assert gen_part(m, n, "role") == [-1, -1, -1, g, g, g, g, g, -1]
    assert gen_part(m, n, "pair") == [-1, -1, -1, 0, 0, 0, 0, 0, -1]
    seg = len(p.segments)  # the generated grid is the segment after the prompt's
    assert m.segment_shapes[seg] == (2, 2)
    assert m.cell_token_index(seg).tolist() == [[n + 3, n + 4], [n + 6, n + 7]]
    # without prompt_map the prompt is tokenized here, with the same result
    assert np.array_equal(generated_cell_map(p, tok, gen).row, m.row)


def test_generated_ids_are_used_as_generated_not_retokenized(tok):
    p = build_prompt(TASK, "minimal", tok)
    n = len(token_cell_map(p, tok))
    nl = tok("\n", add_special_tokens=False).input_ids
    # "\n\n" is one token when the text is tokenized; a model may write it as two
    assert len(tok("\n\n", add_special_tokens=False).input_ids) == 1 and len(nl) == 1
    gen = [*nl, *nl, *pieces(tok, ["0", "9", "\n", "8", "7"])]
    m = generated_cell_map(p, tok, gen)
    assert len(m) == n + len(gen)
    assert gen_part(m, n, "row") == [-1, -1, 0, 0, -1, 1, 1]
    assert gen_part(m, n, "col") == [-1, -1, 0, 1, -1, 0, 1]


def test_responses_without_exact_cells(tok):
    p = build_prompt(TASK, "minimal", tok)
    n = len(token_cell_map(p, tok))
    # no grid at all: nothing is a cell, nothing is in a grid
    m = generated_cell_map(p, tok, pieces(tok, ["no", " idea"]) + [tok.eos_token_id])
    assert set(gen_part(m, n, "row")) == {-1} and set(gen_part(m, n, "segment")) == {-1}
    # a lenient parse ("0 9" is not the minimal encoder's text): the grid is known, its cells are not
    gen = pieces(tok, ["0", " 9", "\n", "8", " 7"])
    m = generated_cell_map(p, tok, gen)
    assert set(gen_part(m, n, "row")) == {-1} and set(gen_part(m, n, "n_cells")) == {0}
    assert set(gen_part(m, n, "role")) == {Role.GENERATED.code}
    # nothing generated: the prompt's map
    m = generated_cell_map(p, tok, [])
    assert len(m) == n


@pytest.fixture(scope="module")
def merging_tok():
    """A BPE tokenizer whose vocabulary merges digits ("12", "34") and a digit with a newline ("3\\n")."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(["[UNK]", *"0123456789\n ,:xIOnputl"])}
    merges = [("1", "2"), ("3", "4"), ("3", "\n")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab, merges, unk_token="[UNK]"))
    bpe.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]")


def test_a_generated_token_spanning_two_cells_is_multi_cell(merging_tok):
    t = merging_tok
    v = t.get_vocab()
    p = build_prompt(TASK, "minimal", t, template="short")
    n = len(token_cell_map(p, t))
    # "12\n34" written as "12", "\n", "3", "4": the first token holds two cells
    m = generated_cell_map(p, t, [v["12"], v["\n"], v["3"], v["4"]])
    assert gen_part(m, n, "row") == [-1, -1, 1, 1] and gen_part(m, n, "col") == [-1, -1, 0, 1]
    assert gen_part(m, n, "n_cells") == [2, 0, 1, 1]
    assert gen_part(m, n, "role") == [Role.GENERATED.code] * 4
    # "1", "2", "\n", "34": the last token holds two cells; "3\n" is one cell and a newline
    m = generated_cell_map(p, t, [v["1"], v["2"], v["\n"], v["34"]])
    assert gen_part(m, n, "row") == [0, 0, -1, -1] and gen_part(m, n, "n_cells") == [1, 1, 0, 2]
    m = generated_cell_map(p, t, [v["1"], v["3\n"], v["4"], v["0"]])
    assert gen_part(m, n, "row") == [0, 0, 1, 1] and gen_part(m, n, "col") == [0, 1, 0, 1]


# --- the engine: generated cells in the store ----------------------------------------------------------


class Script:
    """Makes a model write ``ids`` (then repeat the last one): the top logit at every step is forced."""

    def __init__(self, model, ids: list[int]):
        self.ids = ids
        self.step = 0
        self.handle = model.lm_head.register_forward_hook(self)

    def __call__(self, module, args, out):
        if args[0].shape[1] > 1:  # a prefill: a new generation starts
            self.step = 0
        out = out.clone()
        out[:, -1, self.ids[min(self.step, len(self.ids) - 1)]] = 1e4
        self.step += 1
        return out


@pytest.fixture
def scripted(tiny_model_dir):
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    made = []

    def make(ids):
        made.append(Script(loaded.model, ids))
        return loaded

    yield make
    for s in made:
        s.handle.remove()


def gen_job(tmp_path, tiny_model_dir, **kw) -> JobConfig:
    base = dict(
        tasks="arc1:evaluation",
        model=str(tiny_model_dir),
        hooks=["blocks.0.hook_resid_post"],
        mode="generate",
        max_tasks=2,
        max_new_tokens=16,
        out=str(tmp_path / "store"),
        max_batch=2,
    )
    base.update(kw)
    return JobConfig(**base).validate()


def test_generated_cells_are_stored_by_default_and_one_query_away(tmp_path, tiny_model_dir, scripted, tok):
    script = [*pieces(tok, ["Here", ":\n", "0", "9", "\n", "8", "7"]), tok.eos_token_id]
    loaded = scripted(script)
    cfg = gen_job(tmp_path, tiny_model_dir)
    assert cfg.positions == ["cells"]  # the default
    res = LocalRunner(cfg, loaded=loaded).run()
    items = res.plan.items
    assert len(items) >= 2 and all(p["n_generated"] == len(script) for p in res.predictions.values())
    assert all(p["grid"] == [[0, 9], [8, 7]] for p in res.predictions.values())
    store = open_store(cfg.out)
    idx = store.index()
    gen = idx.filter(pc.equal(idx["role"], "generated"))
    # exactly the four cells the model wrote, per item, each with its row and column
    assert gen.num_rows == 4 * len(items)
    got = sorted(zip(gen["sample"].to_pylist(), gen["row"].to_pylist(), gen["col"].to_pylist(), strict=True))
    assert got == sorted((it.sample, r, c) for it in items for r in (0, 1) for c in (0, 1))
    assert set(gen["pair"].to_pylist()) == {0}
    # prompt cells are still there
    assert (np.asarray(idx["row"]) >= 0).all() and set(idx["role"].to_pylist()) >= {"test_input", "generated"}

    # "the activations at the cell the model wrote" is one query
    acts, sub = store.query("blocks.0.hook_resid_post", role="generated", row=1, col=0)
    assert len(acts) == len(items) and set(sub["token_id"].to_pylist()) == {tok.convert_tokens_to_ids("8")}
    for k, it in enumerate(items):
        row = sub["sample"].to_pylist().index(it.sample)
        assert sub["position"][row].as_py() == it.n_prompt + script.index(tok.convert_tokens_to_ids("8"))
        full = torch.as_tensor(np.concatenate([it.cell_map.input_ids, script]).astype(np.int64))[None]
        with torch.no_grad():
            hs = loaded.model(full, output_hidden_states=True).hidden_states
        assert torch.allclose(acts[row], hs[1][0, sub["position"][row].as_py()], atol=1e-4), k


def test_generated_position_keeps_every_generated_token(tmp_path, tiny_model_dir, scripted, tok):
    script = [*pieces(tok, ["Here", ":\n", "0", "9", "\n", "8", "7"]), tok.eos_token_id]
    cfg = gen_job(tmp_path, tiny_model_dir, positions=["generated"], max_tasks=1)
    res = LocalRunner(cfg, loaded=scripted(script)).run()
    idx = open_store(cfg.out).index()
    assert idx.num_rows == len(script) * len(res.plan.items)
    assert set(idx["role"].to_pylist()) == {"generated"}
    one = idx.filter(pc.equal(idx["sample"], 0))
    assert [tok.decode([t]) for t in script] == ["Here", ":", "\n", "0", "9", "\n", "8", "7", "<|im_end|>"]
    assert one["row"].to_pylist() == [-1, -1, -1, 0, 0, -1, 1, 1, -1]
    assert one["col"].to_pylist() == [-1, -1, -1, 0, 1, -1, 0, 1, -1]
    assert one["token_id"].to_pylist() == script


def test_a_response_without_a_grid_stores_no_generated_cells(tmp_path, tiny_model_dir, scripted, tok):
    script = [*pieces(tok, ["no", " idea"]), tok.eos_token_id]
    loaded = scripted(script)
    cfg = gen_job(tmp_path, tiny_model_dir, positions=["cells", "generated"], max_tasks=1)
    LocalRunner(cfg, loaded=loaded).run()
    idx = open_store(cfg.out).index()
    gen = idx.filter(pc.equal(idx["role"], "generated"))
    assert gen.num_rows == len(script) and set(gen["row"].to_pylist()) == {-1}
    cfg = gen_job(tmp_path, tiny_model_dir, max_tasks=1, out=str(tmp_path / "cells"))
    LocalRunner(cfg, loaded=loaded).run()
    assert "generated" not in open_store(cfg.out).index()["role"].to_pylist()


def test_prefill_answer_cells_unchanged(tmp_path, tiny_model_dir, tok):
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    cfg = gen_job(tmp_path, tiny_model_dir, mode="prefill", positions=["answer"], max_tasks=1)
    res = LocalRunner(cfg, loaded=loaded).run()
    idx = open_store(cfg.out).index()
    it = res.plan.items[0]
    truth = it.aug_task.test[it.test_index].output
    cells = idx.filter(pc.greater_equal(idx["row"], 0))
    assert set(idx["role"].to_pylist()) == {"answer"} and cells.num_rows == truth.size
    rows, cols, ids = (cells[k].to_pylist() for k in ("row", "col", "token_id"))
    for r, c, t in zip(rows, cols, ids, strict=True):
        assert tok.decode([t]).strip() == str(truth[r, c])


# --- the report: which cells of a wrong answer differ ----------------------------------------------------


def test_run_report_shows_the_wrong_cells(tmp_path, tiny_model_dir, scripted, tok):
    import json
    import re

    from arcscope.pipeline.run import attempts_from_predictions
    from arcscope.report.run_report import render_run_report, wrong_answer_rows
    from arcscope.tasks import TaskSet
    from arcscope.tasks.encoding import get_encoder
    from arcscope.tasks.scoring import score

    # a task whose answer the model writes with one cell wrong
    truth = as_grid([[1, 2, 3], [4, 5, 6]])
    task = Task("wrong1", (Pair(as_grid([[0]]), as_grid([[1, 1, 1], [1, 1, 1]])),), (Pair(truth, truth),))
    written = truth.copy()
    written[1, 2] = 0
    text = get_encoder("minimal").encode(written)
    script = [*pieces(tok, list(text)), tok.eos_token_id]
    cfg = gen_job(tmp_path, tiny_model_dir, tasks="dir:unused", max_tasks=1)
    result = LocalRunner(cfg, loaded=scripted(script), tasks=TaskSet([task], name="one")).run()
    assert next(iter(result.predictions.values()))["grid"] == written.tolist()
    # the wrong cell the model wrote is in the store with its place
    acts, sub = open_store(cfg.out).query("blocks.0.hook_resid_post", role="generated", row=1, col=2)
    assert len(acts) == 1 and tok.decode([sub["token_id"][0].as_py()]) == "0"
    attempts = attempts_from_predictions(result.predictions)
    report = score(TaskSet([task], name="one"), attempts)
    page = render_run_report(cfg, result, report, attempts, [task])
    assert wrong_answer_rows(attempts, [task]) == [
        ("wrong attempts", "1: 1 with the truth's shape (1 of 6 cells wrong), 0 with another shape")
    ]
    assert "1 of 6 cells wrong" in page
    data = re.search(r'<script id="arcscope-data" type="application/json">(.*?)</script>', page, re.S)
    mark = json.loads(data.group(1))["tasks"][0]["test"][0]["a"][0]
    assert mark[1] == 0 and mark[2] == {"wrong": 1, "cells": 6, "mask": "000|001"}
