"""Logit lens and tuned lens: the last layer is the model's logits, decided layers, curves, tuned lens
training from a store and from subjects, files, errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from arcscope.analysis.config import AnalysisError
from arcscope.analysis.lens import (
    CURVES,
    NEVER,
    NO_TOKEN,
    LensError,
    TunedLens,
    decided_index,
    lens_curve,
    lens_logits,
    lens_sites,
    logit_lens,
    logit_lens_tasks,
    train_tuned_lens,
)
from arcscope.analysis.subject import Metric, Subject
from arcscope.capture import capture
from tests.conftest import TINY_LAYERS, random_task, tiny_arc_lm, tiny_causal_lm, tiny_job

N_LAYERS = 3


@pytest.fixture(scope="module")
def llama():
    return tiny_arc_lm(N_LAYERS, init=0.1)


def subject(model, tok, seed: int = 1, size=(3, 3)) -> Subject:
    return Subject.from_task(model, random_task(f"t{seed}", seed=seed, size=size), tokenizer=tok)


# ---- the last layer is the model ------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_last_layer_is_the_models_logits(family, arc_tokenizer):
    model = tiny_arc_lm(N_LAYERS, family)
    s = subject(model, arc_tokenizer)
    with torch.no_grad():
        ref = s.logits()[0]  # [K, V] the model's own logits at the predicting positions
    last = f"blocks.{N_LAYERS - 1}.hook_resid_post"
    mask = torch.zeros(1, len(s), dtype=torch.bool)
    mask[0, torch.as_tensor(s.answer.predict_pos)] = True
    with torch.no_grad(), capture(model, last, positions=mask) as cap:
        model(input_ids=s.input_ids, use_cache=False)
    assert torch.equal(lens_logits(model, cap[last]), ref)  # bit for bit

    res = logit_lens(s)
    assert res.hooks == [f"blocks.{i}.hook_resid_post" for i in range(N_LAYERS)]
    logprob = Metric("logprob").per_cell(ref[None], s.answer)[0].double().numpy()
    assert np.array_equal(res.logprob[-1], logprob)
    t = ref.gather(-1, torch.as_tensor(s.answer.target)[:, None])
    assert np.array_equal(res.rank[-1], ((ref > t).sum(-1) + 1).numpy())
    assert np.array_equal(res.pick[-1], s.predicted_grid(ref[None])[s.answer.row, s.answer.col])
    # a lens of the last layer alone gives the same last row
    only = logit_lens(s, layers=-1)
    assert only.hooks == [last] and np.array_equal(only.logprob[0], res.logprob[-1])


@pytest.mark.parametrize(
    "family,dtype", [("llama", None), ("qwen2", None), ("mistral", None), ("llama", torch.bfloat16)]
)
def test_last_layer_is_the_models_logits_at_every_position(family, dtype):
    model = tiny_causal_lm(family, dtype)
    ids = torch.randint(3, 101, (2, 17), generator=torch.Generator().manual_seed(0))
    last = f"blocks.{TINY_LAYERS - 1}.hook_resid_post"
    with torch.no_grad(), capture(model, last) as cap:
        ref = model(input_ids=ids, use_cache=False).logits
    got = lens_logits(model, cap[last].reshape(2, 17, -1))
    assert got.shape == ref.shape and torch.equal(got, ref.float())


# ---- values ---------------------------------------------------------------------------------------------


def test_ranks_and_probabilities_agree(llama, arc_tokenizer):
    res = logit_lens(subject(llama, arc_tokenizer, seed=2, size=(4, 5)))
    n_l, n_k = res.rank.shape
    assert (n_l, n_k) == (N_LAYERS, 20) and res.colour_probs.shape == (N_LAYERS, 20, 10)
    np.testing.assert_allclose(res.colour_probs.sum(-1), 1.0, atol=1e-6)
    assert (res.rank >= 1).all() and ((res.colour_rank >= 1) & (res.colour_rank <= 10)).all()
    # the correct token's share of the colour mass is at least its share of all the mass
    assert (res.prob <= res.colour_prob + 1e-7).all()
    # rank 1 among colours <=> the pick is right; rank 1 overall implies rank 1 among colours
    assert np.array_equal(res.colour_rank == 1, res.correct)
    assert (res.colour_rank[res.rank == 1] == 1).all()
    best = np.argmax(res.colour_probs, -1)
    assert np.array_equal(best, res.pick)
    # colour_rank is one plus the colours with more probability
    more = (res.colour_probs > res.colour_prob[..., None]).sum(-1) + 1
    assert np.array_equal(more, res.colour_rank)
    curve = res.curve()
    assert set(curve) == set(CURVES) and all(v.shape == (N_LAYERS,) for v in curve.values())
    np.testing.assert_allclose(curve["accuracy"], res.correct.mean(1))


def test_decided_index_on_constructed_rows():
    # rows: layers; columns: cells
    correct = np.array(
        [
            [1, 0, 1, 0, 1, 0],
            [1, 0, 0, 1, 1, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],
        ],
        dtype=bool,
    )
    assert decided_index(correct).tolist() == [0, 2, 2, 1, 3, NEVER]
    assert decided_index(np.zeros((0, 2), dtype=bool)).tolist() == [NEVER, NEVER]


def test_decided_layer_grid(llama, arc_tokenizer):
    res = logit_lens(subject(llama, arc_tokenizer), layers=[0, 2])
    assert res.layers.tolist() == [0, 2]
    # a constructed picture: cell 0 right everywhere, cell 1 right only at the end, cell 2 wrong at the end
    pick = np.tile(res.colour, (2, 1))
    wrong = (res.colour + 1) % 10
    pick[0, 1] = wrong[1]
    pick[1, 2] = wrong[2]
    made = replace(res, pick=pick, decided=decided_index(pick == res.colour[None]))
    # one cell not encoded by a token of its own
    made = replace(made, row=made.row[1:], col=made.col[1:], colour=made.colour[1:], pick=made.pick[:, 1:])
    made = replace(made, decided=decided_index(made.correct))
    grid = made.decided_layer
    assert grid.shape == (3, 3)
    assert grid[0, 0] == NO_TOKEN
    assert grid[made.row[0], made.col[0]] == 2  # decided at the second lens row, layer 2
    assert grid[made.row[1], made.col[1]] == NEVER
    assert all(grid[r, c] == 0 for r, c in zip(made.row[2:], made.col[2:], strict=True))
    assert made.decided_hook[0] == "blocks.2.hook_resid_post" and made.decided_hook[1] is None


def test_a_model_whose_layers_write_nothing_is_decided_at_layer_zero_or_never(arc_tokenizer):
    model = tiny_arc_lm(N_LAYERS, init=0.1)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    res = logit_lens(subject(model, arc_tokenizer))
    # the residual stream is the embedding at every layer: every lens row reads the same
    assert all(np.array_equal(res.logprob[0], res.logprob[i]) for i in range(N_LAYERS))
    assert np.array_equal(res.decided, np.where(res.correct[0], 0, NEVER))


def test_sites_in_residual_order_and_resid_pre_is_the_previous_resid_post(llama, arc_tokenizer):
    s = subject(llama, arc_tokenizer)
    res = logit_lens(s, layers=[0, 1], sites=["resid_post", "hook_resid_pre", "resid_mid"])
    assert res.hooks == [
        f"blocks.{i}.{h}" for i in (0, 1) for h in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
    ]
    assert res.sites[:3] == ["hook_resid_pre", "hook_resid_mid", "hook_resid_post"]
    assert np.array_equal(res.logprob[2], res.logprob[3])  # blocks.0 resid_post == blocks.1 resid_pre
    assert not np.array_equal(res.logprob[0], res.logprob[1])


def test_batches_do_not_change_the_numbers(llama, arc_tokenizer):
    s = subject(llama, arc_tokenizer, seed=3, size=(4, 4))
    a, b = logit_lens(s), logit_lens(s, batch=3)
    np.testing.assert_allclose(a.logprob, b.logprob, rtol=0, atol=1e-5)
    assert np.array_equal(a.pick, b.pick) and b.settings["batch"] == 3


def test_table_and_json(llama, arc_tokenizer):
    res = logit_lens(subject(llama, arc_tokenizer))
    t = res.to_table()
    assert t.num_rows == N_LAYERS * 9
    for c in ("task_id", "hook", "layer", "site", "row", "col", "colour", "pick", "rank", "prob", "decided"):
        assert c in t.column_names
    assert t["layer"].to_pylist()[:10] == [0] * 9 + [1]
    np.testing.assert_allclose(np.array(t["colour_prob"].to_pylist()), res.colour_prob.reshape(-1))
    js = res.to_json()
    json.dumps(js, allow_nan=False)
    assert js["task_id"] == "t1" and js["lens"] == "logit" and js["shape"] == [3, 3]
    assert np.array_equal(np.array(js["decided_layer"]), res.decided_layer)
    assert js["settings"]["layers"] == [0, 1, 2] and js["settings"]["sites"] == ["hook_resid_post"]
    assert len(res.layer_grids("colour_prob")) == N_LAYERS


# ---- curves over tasks ----------------------------------------------------------------------------------


def test_curve_over_tasks_and_cells(llama, arc_tokenizer):
    a = logit_lens(subject(llama, arc_tokenizer, seed=1, size=(2, 2)))
    b = logit_lens(subject(llama, arc_tokenizer, seed=2, size=(3, 3)))
    by_task = lens_curve([a, b])
    np.testing.assert_allclose(by_task.mean["prob"], (a.curve()["prob"] + b.curve()["prob"]) / 2)
    by_cell = lens_curve([a, b], weight="cells")
    np.testing.assert_allclose(by_cell.mean["prob"], (a.prob.sum(1) + b.prob.sum(1)) / 13)
    np.testing.assert_allclose(by_cell.mean["accuracy"], (a.correct.sum(1) + b.correct.sum(1)) / 13)
    assert by_task.n_cells.tolist() == [4, 9] and by_task.task_ids == ["t1", "t2"]
    t = by_task.to_table()
    assert t.num_rows == 3 * N_LAYERS and t["task_id"].to_pylist()[:N_LAYERS] == [None] * N_LAYERS
    json.dumps(by_task.to_json(), allow_nan=False)
    with pytest.raises(LensError, match="differs from task t1"):
        lens_curve([a, logit_lens(subject(llama, arc_tokenizer, seed=2), layers=[0])])


def test_lens_over_tasks_skips_what_it_cannot_analyse(llama, arc_tokenizer):
    tasks = [random_task("a", seed=1, size=(2, 2)), random_task("b", seed=2, size=(2, 3))]
    tasks.append(random_task("no-answer", seed=3, test_outputs=False))
    curve = logit_lens_tasks(llama, tasks, tokenizer=arc_tokenizer, layers=[0, -1], on_error="skip")
    assert curve.task_ids == ["a", "b"] and list(curve.skipped) == ["no-answer"]
    assert curve.hooks == ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    assert len(curve.results) == 2
    with pytest.raises(AnalysisError, match="no known answer"):
        logit_lens_tasks(llama, tasks, tokenizer=arc_tokenizer)


# ---- the tuned lens -------------------------------------------------------------------------------------


def test_tuned_lens_at_initialisation_is_the_logit_lens(llama, arc_tokenizer):
    s = subject(llama, arc_tokenizer)
    plain = logit_lens(s, sites=["resid_pre", "resid_post"])
    tuned = logit_lens(
        s,
        sites=["resid_pre", "resid_post"],
        tuned=TunedLens.identity(llama, sites=["resid_pre", "resid_post"]),
    )
    assert tuned.lens == "tuned"
    for k in ("logprob", "rank", "colour_probs", "pick", "decided"):
        assert np.array_equal(getattr(plain, k), getattr(tuned, k)), k


def test_tuned_lens_from_subjects_lowers_held_out_kl_and_round_trips(llama, arc_tokenizer, tmp_path):
    subjects = [subject(llama, arc_tokenizer, seed=i) for i in range(4)]
    lens = train_tuned_lens(None, subjects, steps=15, batch_size=32, lr=1e-2, max_rows=300, seed=0)
    fit = lens.fit
    assert fit.hooks == [f"blocks.{i}.hook_resid_post" for i in range(N_LAYERS)]
    assert fit.split == "tasks" and fit.n_test_tasks >= 1 and fit.n_train_tasks >= 1
    # the last layer is the model: nothing to learn; the others fit better than the plain lens
    assert fit.kl_logit[-1] == 0 and fit.kl_tuned[-1] == 0
    assert torch.equal(lens.weight[fit.hooks[-1]], torch.eye(32))
    assert all(fit.kl_tuned[i] < 0.7 * fit.kl_logit[i] for i in range(N_LAYERS - 1)), fit.to_json()
    assert fit.to_table().num_rows == N_LAYERS
    # seeded: the same settings give the same map (each hook's batches are drawn from the seed alone)
    h0 = fit.hooks[0]
    again = train_tuned_lens(None, subjects, hooks=h0, steps=15, batch_size=32, lr=1e-2, max_rows=300, seed=0)
    assert again.hooks == [h0] and torch.equal(lens.weight[h0], again.weight[h0])
    assert not torch.equal(lens.weight[h0], torch.eye(32))
    # files: safetensors + JSON header, read back bit for bit
    path = lens.save(tmp_path / "lens.safetensors")
    back = TunedLens.load(path)
    assert back.hooks == lens.hooks and back.model == lens.model and back.config == lens.config
    assert all(torch.equal(back.weight[h], lens.weight[h]) for h in lens.hooks)
    assert all(torch.equal(back.bias[h], lens.bias[h]) for h in lens.hooks)
    np.testing.assert_array_equal(back.fit.kl_tuned, fit.kl_tuned)
    a = logit_lens(subjects[0], tuned=lens)
    b = logit_lens(subjects[0], tuned=back)
    assert np.array_equal(a.logprob, b.logprob) and b.settings["tuned"]["path"] == path
    # a map for resid_post of layer 0 serves resid_pre of layer 1
    pre = logit_lens(subjects[0], layers=1, sites="resid_pre", tuned=lens)
    assert np.array_equal(pre.logprob[0], a.logprob[0])


@pytest.fixture(scope="module")
def captured(tmp_path_factory, tiny_model_dir):
    from arcscope.engine import run_job
    from arcscope.models import load_model
    from arcscope.store import open_store

    out = tmp_path_factory.mktemp("lens-store") / "store"
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    run_job(tiny_job(out, tiny_model_dir), loaded=loaded)
    return open_store(out), loaded


def test_tuned_lens_from_a_store(captured):
    store, loaded = captured
    lens = train_tuned_lens(loaded, store, steps=25, batch_size=32, max_rows=300)
    fit = lens.fit
    assert fit.hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert fit.source == store.url and fit.n_train + fit.n_test == 300 and fit.split == "tasks"
    assert fit.kl_tuned[0] < 0.7 * fit.kl_logit[0] and fit.kl_logit[1] == 0
    # only some rows and one layer
    one = train_tuned_lens(
        loaded, store.url, hooks="blocks.0.hook_resid_post", where={"role": "test_input"}, steps=1
    )
    assert one.hooks == ["blocks.0.hook_resid_post"]
    with pytest.raises(LensError, match="not in the store"):
        train_tuned_lens(loaded, store, hooks="blocks.5.hook_resid_post", steps=1)
    with pytest.raises(LensError, match="needs the model"):
        train_tuned_lens(None, store)
    with pytest.raises(LensError, match="captured from a model with n_layers=2"):
        train_tuned_lens(tiny_arc_lm(3), store)


# ---- errors ---------------------------------------------------------------------------------------------


def test_clear_errors(llama, arc_tokenizer, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    s = subject(llama, arc_tokenizer)
    with pytest.raises(LensError, match=r"layer 3 is out of range: the model \(llama\) has 3 layers"):
        logit_lens(s, layers=[0, 3])
    with pytest.raises(LensError, match="layer -4 is out of range"):
        logit_lens(s, layers=-4)
    with pytest.raises(LensError, match="lens site 'attn_out'"):
        logit_lens(s, sites="attn_out")
    with pytest.raises(LensError, match="positive number of positions"):
        logit_lens(s, batch=0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=49152, n_embd=32, n_layer=2, n_head=4, n_positions=1024))
    with pytest.raises(LensError, match=r"Llama layout .* \(gpt2\) does not have it"):
        logit_lens(replace(s, model=gpt2))
    with pytest.raises(LensError, match="Llama layout"):
        lens_sites(gpt2)
    partial = TunedLens.identity(llama, layers=[0])
    with pytest.raises(LensError, match="no map for blocks.1.hook_resid_post"):
        logit_lens(s, tuned=partial)
    other = TunedLens.identity(tiny_arc_lm(2))
    with pytest.raises(LensError, match="n_layers=2"):
        logit_lens(s, tuned=other)
    with pytest.raises(LensError, match="no tuned lens file"):
        TunedLens.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(LensError, match="not an arcscope tuned lens"):
        TunedLens.load(tmp_path / "other.safetensors")
    with pytest.raises(LensError, match="test_fraction"):
        train_tuned_lens(None, [s], test_fraction=1.5)
    with pytest.raises(LensError, match="weight 'layers'"):
        lens_curve([logit_lens(s)], weight="layers")


# ---- the bundled model ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_model_last_layer_and_decided_cells():
    from arcscope.models import load_model
    from arcscope.tasks import load

    loaded = load_model(None, device="cpu", dtype="float32")
    task = load("arc1:evaluation")["66e6c45b"]  # one of the shortest prompts (221 tokens, 16 cells)
    s = Subject.from_task(loaded, task)
    res = logit_lens(s, layers=[0, 10, 20, 29])
    with torch.no_grad():
        ref = s.logits()
    assert np.array_equal(res.logprob[-1], Metric("logprob").per_cell(ref, s.answer)[0].double().numpy())
    assert np.array_equal(res.pick[-1], s.predicted_grid(ref)[s.answer.row, s.answer.col])
    grid = res.decided_layer
    assert grid.shape == (4, 4) and set(np.unique(grid)) <= {NEVER, 0, 10, 20, 29}
    assert np.array_equal(grid[res.row, res.col] == NEVER, ~res.correct[-1])
