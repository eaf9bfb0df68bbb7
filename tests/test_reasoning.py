"""arcscope.reasoning: HRM / TRM models, losses, optimisers, checkpoints, training, evaluation, capture, CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from arcscope.cli import app, main
from arcscope.puzzles import build_arc, build_sudoku, open_dataset
from arcscope.reasoning.act import resolve_dtype
from arcscope.reasoning.capture import capture_to_store, hook_names, trace
from arcscope.reasoning.checkpoint import CheckpointError, build_model, load_model, save_checkpoint
from arcscope.reasoning.config import (
    ConfigError,
    HRMConfig,
    TrainConfig,
    TRMConfig,
    apply_overrides,
    load_config,
    preset,
)
from arcscope.reasoning.data import eval_batches, train_batches
from arcscope.reasoning.evaluate import Predictions, arc_report, evaluate
from arcscope.reasoning.losses import IGNORE_LABEL_ID, ACTLossHead, stablemax_cross_entropy
from arcscope.reasoning.optim import (
    AdamATan2,
    CastedSparseEmbedding,
    SparseEmbeddingSignSGD,
    cosine_with_warmup,
)
from arcscope.reasoning.train import train
from arcscope.store import open_store

runner = CliRunner()

TINY = dict(
    hidden_size=32,
    num_heads=2,
    expansion=2.0,
    seq_len=16,
    vocab_size=6,
    num_puzzle_identifiers=5,
    batch_size=4,
)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models run fastest on one thread, and the suite shares its cores with other work.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_hrm(**kw) -> HRMConfig:
    return HRMConfig(
        **{**TINY, "H_layers": 1, "L_layers": 1, "halt_max_steps": 3, "forward_dtype": "float32", **kw}
    )


def tiny_trm(**kw) -> TRMConfig:
    return TRMConfig(
        **{
            **TINY,
            "L_layers": 1,
            "H_cycles": 2,
            "L_cycles": 2,
            "halt_max_steps": 3,
            "puzzle_emb_len": 2,
            "forward_dtype": "float32",
            **kw,
        }
    )


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(0, 6, (n, 16), generator=g, dtype=torch.int32),
        "labels": torch.randint(0, 6, (n, 16), generator=g, dtype=torch.int32),
        "puzzle_identifiers": torch.randint(0, 5, (n,), generator=g, dtype=torch.int32),
    }


# ------------------------------------------------------------------------------------------------ losses


def test_stablemax_matches_definition():
    logits = torch.tensor([[[2.0, -1.0, 0.0]], [[0.5, 0.5, -3.0]]])
    labels = torch.tensor([[0], [IGNORE_LABEL_ID]])
    s = torch.tensor([3.0, 0.5, 1.0])  # s(2)=3, s(-1)=1/2, s(0)=1
    loss = stablemax_cross_entropy(logits, labels)
    assert loss.dtype == torch.float64
    assert loss[0, 0].item() == pytest.approx(-math.log(3.0 / s.sum().item()))
    assert loss[1, 0].item() == 0.0


def test_act_loss_head_metrics_count_halted_only():
    torch.manual_seed(0)
    head = ACTLossHead(build_model(tiny_hrm()))
    head.eval()
    b = batch()
    carry = head.initial_carry(b)
    carry, loss, metrics, out, done = head(carry, b, return_keys=["logits"])
    assert not done and metrics["count"].item() == 0 and out["logits"].shape == (4, 16, 6)
    for _ in range(2):
        carry, loss, metrics, out, done = head(carry, b)
    assert done and metrics["count"].item() == 4 and metrics["steps"].item() == 12
    assert torch.isfinite(loss)


# -------------------------------------------------------------------------------------------- optimisers


def test_adam_atan2_first_step_is_bounded_and_minimises():
    p = torch.nn.Parameter(torch.tensor([1e-6, -0.5, 0.25]))
    opt = AdamATan2([p], lr=0.1, betas=(0.9, 0.95))
    p.grad = torch.tensor([1e-3, -2.0, 1e6])
    opt.step()
    # m_hat = g and sqrt(v_hat) = |g| on step one, so every coordinate moves by lr * a * pi/4 whatever its scale.
    moved = torch.tensor([1e-6, -0.5, 0.25]) - p.detach()
    assert torch.allclose(moved.abs(), torch.full((3,), 0.1 * 1.27 * math.pi / 4), atol=1e-6)
    q = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = AdamATan2([q], lr=0.1)
    for _ in range(150):
        opt.zero_grad()
        (q**2).sum().backward()
        opt.step()
    assert q.detach().abs().max() < 0.1


def test_cosine_schedule():
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert cosine_with_warmup(5, **kw) == pytest.approx(0.5)
    assert cosine_with_warmup(10, **kw) == pytest.approx(1.0)
    assert cosine_with_warmup(60, **kw) == pytest.approx(0.55)
    assert cosine_with_warmup(110, **kw) == pytest.approx(0.1)


def test_sparse_embedding_sign_sgd_touches_used_rows_only():
    emb = CastedSparseEmbedding(6, 3, batch_size=4, init_std=1.0, cast_to=torch.float32)
    before = emb.weights.clone()
    opt = SparseEmbeddingSignSGD(emb, lr=0.1, weight_decay=0.5)
    ids = torch.tensor([1, 3, 1, 4], dtype=torch.int32)
    out = emb(ids)
    (
        out * torch.tensor([[1.0, -1.0, 0.0], [2.0, 2.0, 2.0], [1.0, -3.0, 0.0], [-1.0, -1.0, -1.0]])
    ).sum().backward()
    opt.step()
    after = emb.weights
    for row in (0, 2, 5):
        assert torch.equal(after[row], before[row])
    # Row 1 appears twice: gradients add up before the sign ([2, -4, 0] -> [1, -1, 0]).
    want = before[1] * (1 - 0.1 * 0.5) - 0.1 * torch.tensor([1.0, -1.0, 0.0])
    assert torch.allclose(after[1], want)
    assert torch.allclose(after[4], before[4] * 0.95 + 0.1)
    with pytest.raises(ValueError, match="padded"):
        emb(torch.tensor([1, 2], dtype=torch.int32))


# ------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("make", [tiny_hrm, tiny_trm])
def test_gradient_only_through_the_last_updates(make):
    torch.manual_seed(0)
    model = build_model(make())
    model.train()
    b = batch()
    grads: list[tuple[str, int, int, bool]] = []
    carry = model.initial_carry(b)
    model(carry, b, lambda kind, h, l, z: grads.append((kind, h, l, z.requires_grad)))  # noqa: E741
    cfg = model.config
    with_grad = [g for g in grads if g[3]]
    if isinstance(cfg, TRMConfig):
        # TRM: the whole last cycle (L_cycles latent updates + the answer update) keeps its graph.
        assert with_grad == [("z_L", 1, 0, True), ("z_L", 1, 1, True), ("z_H", 1, -1, True)]
    else:
        # HRM's one-step gradient: only the final L and H updates.
        assert with_grad == [("z_L", 1, 1, True), ("z_H", 1, -1, True)]
    assert len(grads) == cfg.H_cycles * (cfg.L_cycles + 1)


def test_eval_runs_max_steps_and_train_halts_on_q():
    torch.manual_seed(0)
    model = build_model(tiny_hrm(halt_max_steps=4, halt_exploration_prob=0.0))
    b = batch()
    model.eval()
    carry = model.initial_carry(b)
    halted = []
    for _ in range(4):
        carry, _ = model(carry, b)
        halted.append(bool(carry.halted.any()))
    assert halted == [False, False, False, True] and carry.steps.tolist() == [4] * 4
    model.train()
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([5.0, -5.0]))  # q_halt > q_continue
    carry, out = model(model.initial_carry(b), b)
    assert carry.halted.all() and "target_q_continue" in out
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([-5.0, 5.0]))
    carry, _ = model(model.initial_carry(b), b)
    assert not carry.halted.any()


def test_trm_halts_on_q_halt_alone_and_exploration_delays():
    torch.manual_seed(0)
    model = build_model(tiny_trm(halt_max_steps=5, halt_exploration_prob=0.0))
    model.train()
    b = batch()
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([1.0, 9.0]))  # q_continue larger, but TRM ignores it
    carry, out = model(model.initial_carry(b), b)
    assert carry.halted.all() and "target_q_continue" not in out
    explore = build_model(tiny_trm(halt_max_steps=5, halt_exploration_prob=1.0, batch_size=64))
    explore.train()
    explore.load_state_dict(model.state_dict())
    carry, _ = explore(explore.initial_carry(batch(64)), batch(64))
    # With exploration every sequence must first run a random minimum of 2..max steps.
    assert not carry.halted.any()


def test_refills_halted_slots_from_new_batch():
    model = build_model(tiny_trm(halt_max_steps=2))
    model.eval()
    b1, b2 = batch(seed=1), batch(seed=2)
    carry = model.initial_carry(b1)
    carry, _ = model(carry, b1)
    carry, _ = model(carry, b2)  # not halted yet: keeps b1
    assert torch.equal(carry.current_data["inputs"], b1["inputs"]) and carry.halted.all()
    carry, _ = model(carry, b2)
    assert torch.equal(carry.current_data["inputs"], b2["inputs"]) and carry.steps.tolist() == [1] * 4


def test_mlp_t_variant_and_default_sizes():
    m = build_model(tiny_trm(mlp_t=True))
    assert "inner.L_level.layers.0.mlp_t.gate_up_proj.weight" in m.state_dict()
    assert not any("self_attn" in k for k in m.state_dict())
    m.eval()
    carry, out = m(m.initial_carry(batch()), batch())
    assert out["logits"].shape == (4, 16, 6)
    # HRM at its default size on 9x9 Sudoku: about 27M parameters, as the paper says.
    with torch.device("meta"):
        from arcscope.reasoning.hrm import HRM

        big = HRM(HRMConfig(seq_len=81, vocab_size=11, forward_dtype="float32", puzzle_emb_ndim=0))
    assert 26e6 < sum(p.numel() for p in big.parameters()) < 28e6


# ------------------------------------------------------------------------------------------ checkpoints

ORIGINAL_KEYS = [
    "inner.H_init",
    "inner.L_init",
    "inner.embed_tokens.embedding_weight",
    "inner.lm_head.weight",
    "inner.q_head.weight",
    "inner.q_head.bias",
    "inner.puzzle_emb.weights",
    "inner.H_level.layers.0.self_attn.qkv_proj.weight",
    "inner.H_level.layers.0.self_attn.o_proj.weight",
    "inner.H_level.layers.0.mlp.gate_up_proj.weight",
    "inner.H_level.layers.0.mlp.down_proj.weight",
    "inner.L_level.layers.0.self_attn.qkv_proj.weight",
]


def test_state_dict_uses_original_names():
    keys = set(build_model(tiny_hrm()).state_dict())
    rest = {
        "inner.L_level.layers.0.self_attn.o_proj.weight",
        "inner.L_level.layers.0.mlp.gate_up_proj.weight",
        "inner.L_level.layers.0.mlp.down_proj.weight",
    }
    assert (
        keys == set(ORIGINAL_KEYS) | rest
    )  # RoPE tables and the puzzle-embedding batch buffers are not saved


def test_loads_original_checkpoint_layout(tmp_path):
    """A torch.save state dict of the compiled loss head (``_orig_mod.model.inner...``) + all_config.yaml."""
    torch.manual_seed(1)
    src = build_model(tiny_hrm(forward_dtype="bfloat16"))
    sd = {f"_orig_mod.model.{k}": v for k, v in src.state_dict().items()}
    folder = tmp_path / "checkpoints" / "Sudoku ACT-torch" / "HierarchicalReasoningModel_ACTV1 happy-cat"
    folder.mkdir(parents=True)
    torch.save(sd, folder / "step_1302")
    arch = {
        "name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
        "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
        "halt_exploration_prob": 0.1,
        "halt_max_steps": 3,
        "H_cycles": 2,
        "L_cycles": 2,
        "H_layers": 1,
        "L_layers": 1,
        "hidden_size": 32,
        "num_heads": 2,
        "expansion": 2,
        "puzzle_emb_ndim": 32,
        "pos_encodings": "rope",
    }
    (folder / "all_config.yaml").write_text(
        yaml.safe_dump({"arch": arch, "data_path": "data/x", "global_batch_size": 4})
    )
    model, extra = load_model(folder, seq_len=16)
    assert extra["global_batch_size"] == 4
    assert (model.config.vocab_size, model.config.num_puzzle_identifiers, model.config.seq_len) == (6, 5, 16)
    src.eval()
    b = batch()
    with torch.no_grad():
        _, a = src(src.initial_carry(b), b)
        _, c = model(model.initial_carry(b), b)
    assert model.inner.forward_dtype == torch.float32  # 'auto' on CPU; the bf16 init states were cast on load
    assert torch.allclose(a["logits"].float(), c["logits"], atol=0.1)
    assert torch.equal(model.inner.puzzle_emb.weights, src.inner.puzzle_emb.weights)


def test_checkpoint_errors_name_the_key(tmp_path):
    m = build_model(tiny_hrm())
    save_checkpoint(tmp_path / "ck", m)
    loaded, _ = load_model(tmp_path / "ck")
    assert all(
        torch.equal(a, b) for a, b in zip(m.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["arch"]["hidden_size"] = 64
    cfg["arch"]["num_heads"] = 4
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"tensor 'inner\.H_init' has shape \[32\] but the model expects \[64\]"
    ):
        load_model(tmp_path / "ck")
    cfg["arch"].update(hidden_size=32, num_heads=2, H_layers=2)
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"lacks .* 'inner\.H_level\.layers\.1\."):
        load_model(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------ config


def test_config_overrides_yaml_and_errors(tmp_path):
    cfg = apply_overrides(preset("hrm"), ["arch.hidden_size=128", "lr=3e-4", "eval_interval=null"])
    assert cfg.arch.hidden_size == 128 and cfg.lr == 3e-4 and cfg.eval_interval is None
    assert cfg.arch.H_layers == 4 and cfg.global_batch_size == 768  # the original defaults
    trm = apply_overrides(cfg, ["arch.name=trm", "arch.mlp_t=true"])
    assert isinstance(trm.arch, TRMConfig) and trm.arch.mlp_t and trm.arch.L_cycles == 6
    (tmp_path / "c.yaml").write_text(trm.to_yaml())
    assert load_config(tmp_path / "c.yaml") == trm
    with pytest.raises(
        ConfigError, match=r"unknown setting 'arch.hiden_size' \(did you mean 'arch.hidden_size'\?\)"
    ):
        apply_overrides(cfg, ["arch.hiden_size=3"])
    with pytest.raises(ConfigError, match="'lr' must be a number"):
        apply_overrides(cfg, ["lr=fast"])
    (tmp_path / "bad.yaml").write_text("arch:\n  name: hrm\n  widht: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown setting 'arch.widht'"):
        load_config(tmp_path / "bad.yaml")
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda") == torch.bfloat16


# --------------------------------------------------------------------------------- data, training, eval


@pytest.fixture(scope="module")
def sudoku_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sud") / "sudoku4"
    build_sudoku(out, n=4, train=48, test=12, seed=0)
    return out


def test_batches_cover_groups_and_pad(sudoku_dir):
    sp = open_dataset(sudoku_dir)["train"]
    it = train_batches(sp, 16, seed=0)
    seen = np.concatenate([next(it).examples for _ in range(3)])
    assert sorted(seen.tolist()) == list(range(48))  # one epoch of one-example groups = every example once
    half = next(train_batches(sp, 16, seed=0, rank=1, world_size=2))
    assert half.tensors["inputs"].shape == (8, 16)
    te = open_dataset(sudoku_dir)["test"]
    bs = list(eval_batches(te, 5))
    assert [int((b.examples >= 0).sum()) for b in bs] == [5, 5, 2]
    last = bs[-1].tensors
    assert (last["labels"][2:] == IGNORE_LABEL_ID).all() and (last["inputs"][2:] == 0).all()


def tiny_train_config(data, out, arch="trm", **kw):
    overrides = [
        f"arch.name={arch}",
        "arch.hidden_size=32",
        "arch.num_heads=2",
        "arch.expansion=2",
        "arch.H_layers=1",
        "arch.L_layers=1",
        "arch.H_cycles=2",
        "arch.L_cycles=2",
        "arch.halt_max_steps=2",
        "arch.puzzle_emb_ndim=8",
        *(["arch.puzzle_emb_len=1"] if arch == "trm" else []),
        "arch.forward_dtype=float32",
        "arch.pos_encodings=learned",
        f"data_path={data}",
        f"checkpoint_path={out}",
        "global_batch_size=16",
        "lr=3e-3",
        "lr_warmup_steps=5",
        "log_every=1",
        "eval_interval=null",
        "tensorboard=false",
    ] + [f"{k}={v}" for k, v in kw.items()]
    return apply_overrides(TrainConfig(), overrides)


@pytest.mark.parametrize("arch", ["hrm", "trm"])
def test_tiny_model_loss_decreases_and_checkpoint_evaluates(sudoku_dir, tmp_path, arch):
    cfg = tiny_train_config(
        sudoku_dir, tmp_path / "run", arch, max_steps=60, ema="true" if arch == "trm" else "false"
    )
    res = train(cfg)
    assert res.steps == 60
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["train/lm_loss"] for x in lines if "train/lm_loss" in x]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    assert "eval/accuracy" in lines[-1] and sum(lines[-1]["eval/halt_histogram"].values()) == 12
    model, extra = load_model(tmp_path / "run")
    assert extra["step"] == 60 and type(model).__name__ == arch.upper()
    ev = evaluate(model, sudoku_dir, global_batch_size=8, out_dir=tmp_path / "ev")
    assert ev.metrics["count"] == 12 and 0.0 <= ev.metrics["accuracy"] <= 1.0
    assert ev.metrics["accuracy"] == pytest.approx(lines[-1]["eval/accuracy"])
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["metrics"]["count"] == 12


def test_resume_continues_from_step(sudoku_dir, tmp_path):
    cfg = tiny_train_config(sudoku_dir, tmp_path / "run", "hrm", max_steps=6)
    train(cfg)
    state = json.loads((tmp_path / "run" / "step_6" / "train_state.json").read_text())
    assert state["step"] == 6
    res = train(replace(cfg, max_steps=9), resume=True)
    assert res.steps == 9
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-4:-1] == [7, 8, 9]


def test_train_rejects_mismatched_checkpoint_and_missing_data(sudoku_dir, tmp_path):
    with pytest.raises(ConfigError, match="data_path is not set"):
        train(TrainConfig())
    with pytest.raises(Exception, match="nothing to resume"):
        train(tiny_train_config(sudoku_dir, tmp_path / "empty", max_steps=1), resume=True)


# --------------------------------------------------------------------------------------------- ARC eval


@pytest.fixture(scope="module")
def arc_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("arc") / "arc"
    build_arc(out, [], ["arc1:evaluation"], num_aug=4, limit=3, seed=0)
    return out


def oracle(arc_dir) -> Predictions:
    te = open_dataset(arc_dir)["test"].sets["all"]
    labels = np.asarray(te.labels)
    n = len(labels)
    return Predictions(
        ["all"] * n, np.arange(n), labels.copy(), labels.copy(), np.zeros(n), np.zeros(n), np.ones(n, int)
    )


def test_arc_protocol_inverts_and_votes(arc_dir, tmp_path):
    ds = open_dataset(arc_dir)
    preds = oracle(arc_dir)
    # Correct answers in every augmented frame vote for the one original grid.
    rep = arc_report(ds, preds, ks=(1, 2), submission=tmp_path / "submission.json")
    assert rep["score"] == 1.0 and rep["pass_at_k"]["1"] == 1.0 and rep["tasks"] == 3
    assert rep["mean_votes_top"] == 5.0
    from arcscope.tasks import load, read_submission, score

    sub = read_submission(tmp_path / "submission.json")
    assert score(load("arc1:evaluation", limit=3), sub).score == 1.0
    # Break the answer of two puzzles of every task: the three right ones still win the vote.
    te = ds["test"].sets["all"]
    owner = te.puzzle_of_examples()
    bad = preds.final.copy()
    for g in range(te.n_groups):
        first = int(te.group_indices[g])
        for p in (first, first + 1):
            for ex in np.flatnonzero(owner == p):
                bad[ex][bad[ex] >= 2] = 2  # all black
    preds.final = bad
    assert arc_report(ds, preds)["score"] == 1.0
    # Two puzzles right, three wrong but agreeing: the vote picks wrong; ties go to the higher halting confidence.
    for g in range(te.n_groups):
        first = int(te.group_indices[g])
        for ex in np.flatnonzero(owner == first + 2):
            bad[ex][bad[ex] >= 2] = 2
    assert arc_report(ds, preds)["pass_at_k"]["1"] == 0.0
    # A tie (two right, two black, one recoloured): the higher mean halting confidence ranks first.
    preds.final = oracle(arc_dir).final
    q = np.zeros(len(preds.final))
    for g in range(te.n_groups):
        first = int(te.group_indices[g])
        for p, fill, conf in (
            (first, 2, -4.0),
            (first + 1, 2, -4.0),
            (first + 2, 3, 0.0),
            (first + 3, None, 4.0),
            (first + 4, None, 4.0),
        ):
            for ex in np.flatnonzero(owner == p):
                if fill is not None:
                    preds.final[ex][preds.final[ex] >= 2] = fill
                q[ex] = conf
    preds.q_halt = q
    assert arc_report(ds, preds)["pass_at_k"]["1"] == 1.0
    preds.q_halt = -q
    rep = arc_report(ds, preds)
    assert rep["pass_at_k"]["1"] == 0.0 and rep["pass_at_k"]["2"] == 1.0


def test_arc_eval_end_to_end(arc_dir, tmp_path):
    torch.manual_seed(0)
    meta = open_dataset(arc_dir)["test"].metadata
    cfg = tiny_hrm(
        seq_len=900, vocab_size=12, num_puzzle_identifiers=meta.num_puzzle_identifiers, halt_max_steps=2
    )
    model = build_model(cfg)
    res = evaluate(model, arc_dir, global_batch_size=8, out_dir=tmp_path, ks=(1, 2, 3))
    assert set(res.arc["pass_at_k"]) == {"1", "2", "3"} and res.arc["tasks"] == 3
    assert (tmp_path / "submission.json").exists() and sum(res.halt_histogram.values()) == res.metrics[
        "count"
    ]


# -------------------------------------------------------------------------------------------- capture


def test_trace_and_capture_to_store(sudoku_dir, tmp_path):
    torch.manual_seed(0)
    ds = open_dataset(sudoku_dir)
    model = build_model(
        tiny_trm(seq_len=16, vocab_size=6, num_puzzle_identifiers=1, puzzle_emb_ndim=8, puzzle_emb_len=1)
    )
    b = next(eval_batches(ds["test"], 4)).tensors
    tr = trace(model, b)
    assert (
        tr.z_H.shape == (3, 2, 4, 17, 32)
        and tr.z_L.shape == (3, 2, 2, 4, 17, 32)
        and tr.q_halt.shape == (3, 4)
    )
    # The answer state read by the LM head at the last step is the traced z_H of the last cycle.
    with torch.no_grad():
        logits = model.inner.lm_head(tr.z_H[-1, -1])[:, 1:]
    assert torch.equal(logits.argmax(-1), tr.preds[-1])
    assert hook_names(model) == ["z_L.0.0", "z_L.0.1", "z_H.0", "z_L.1.0", "z_L.1.1", "z_H.1"]
    summary = capture_to_store(
        model, ds, tmp_path / "store", hooks=["z_H.1", "z_L.0.1"], max_examples=5, batch_size=4
    )
    assert summary["rows"] == 5 * 3 * 16
    st = open_store(tmp_path / "store")
    assert st.n_rows == 240 and set(st.meta["capture"]["hooks"]) == {"z_H.1", "z_L.0.1"}
    x, idx = st.query("z_H.1", act_step=3, sample=1)
    assert x.shape == (16, 32)
    assert torch.allclose(x, tr.z_H[2, 1, 1, 1:], atol=1e-6)
    rows = idx.to_pydict()
    assert rows["row"][5] == 1 and rows["col"][5] == 1 and rows["task_id"][0] == "sudoku-test-0000001"
    assert "q_halt_logit" in rows and rows["role"][0] == "test input"
    with pytest.raises(Exception, match="unknown reasoning hook 'z_X.0'"):
        capture_to_store(model, ds, tmp_path / "s2", hooks=["z_X.0"])


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_train_eval_capture(sudoku_dir, tmp_path, capsys):
    r = runner.invoke(app, ["reasoning", "config", "--arch", "trm"])
    assert r.exit_code == 0 and yaml.safe_load(r.output)["arch"]["L_cycles"] == 6
    out = tmp_path / "run"
    args = [
        "reasoning",
        "train",
        "--arch",
        "trm",
        "--data",
        str(sudoku_dir),
        "--out",
        str(out),
        "-q",
        "max_steps=3",
        "global_batch_size=8",
        "arch.hidden_size=16",
        "arch.num_heads=2",
        "arch.L_layers=1",
        "arch.H_cycles=1",
        "arch.L_cycles=1",
        "arch.halt_max_steps=2",
        "tensorboard=false",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["reasoning", "eval", str(out), "--out", str(tmp_path / "ev"), "--batch-size", "8"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metrics"]["count"] == 12
    r = runner.invoke(
        app,
        [
            "reasoning",
            "capture",
            str(out),
            "--data",
            str(sudoku_dir),
            "--out",
            str(tmp_path / "st"),
            "--hooks",
            "z_H.0",
            "--max-examples",
            "2",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert open_store(tmp_path / "st").n_rows == 2 * 2 * 16
    with pytest.raises(SystemExit) as e:
        main(["reasoning", "train", "--data", str(sudoku_dir), "arch.hiden_size=3"])
    assert e.value.code == 2 and "did you mean 'arch.hidden_size'" in " ".join(
        capsys.readouterr().err.split()
    )


# ------------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_forward_on_gpu():
    model = build_model(tiny_hrm(forward_dtype="auto"), "cuda")
    assert model.inner.forward_dtype == torch.bfloat16
    b = {k: v.cuda() for k, v in batch().items()}
    model.train()
    head = ACTLossHead(model)
    carry, loss, *_ = head(head.initial_carry(b), b)
    loss.backward()
    assert torch.isfinite(loss) and model.inner.puzzle_emb.local_weights.grad is not None


# ------------------------------------------------------------------------------------------------ DDP

_DDP_WORKER = """
import json, os, sys, torch
torch.set_num_threads(1)
from arcscope.reasoning.config import TrainConfig, apply_overrides
from arcscope.reasoning.train import train
cfg = apply_overrides(TrainConfig(), sys.argv[1:])
res = train(cfg)
sums = {k: float(v.double().sum()) for k, v in res.model.state_dict().items()}
with open(os.path.join(cfg.checkpoint_path, f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump(sums, f)
"""


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(sudoku_dir, tmp_path):
    """torchrun-style launch of 2 gloo processes: both train in lock step and rank 0 writes the checkpoint."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tiny_train_config(sudoku_dir, tmp_path / "ddp", "trm", max_steps=4)
    args = [f"{k}={v}" for k, v in cfg.to_dict().items() if k != "arch" and v is not None]
    args += [f"arch.{k}={v}" for k, v in cfg.arch.__dict__.items() if v is not None]
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _DDP_WORKER, *args], env=env, stderr=subprocess.PIPE, text=True
            )
        )
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-2]["step"] == 4 and lines[-1]["eval/count"] == 12
    assert (tmp_path / "ddp" / "model.safetensors").exists()
    # Gradients (and puzzle-embedding updates) were all-reduced: both replicas hold the same weights.
    r0, r1 = (json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in range(2))
    assert r0 == r1


# ------------------------------------------------------------------------------------------- bundled


def test_bundled_model_solves_fresh_4x4_sudoku():
    from arcscope.puzzles.sudoku import decode_board, encode_board, generate_many, is_solution
    from arcscope.reasoning.bundled import bundled_checkpoint

    model, extra = load_model(bundled_checkpoint())
    assert extra["step"] > 0 and model.config.seq_len == 16
    boards, _ = generate_many(40, n=4, seed=2024)
    inputs = torch.from_numpy(np.stack([encode_board(b) for b in boards]).astype(np.int32))
    b = {
        "inputs": inputs,
        "labels": torch.zeros_like(inputs),
        "puzzle_identifiers": torch.zeros(40, dtype=torch.int32),
    }
    preds = trace(model, b).preds[-1].numpy()
    solved = [is_solution(decode_board(p), board) for p, board in zip(preds, boards, strict=True)]
    assert np.mean(solved) >= 0.9  # 99.4% on its 500 held-out test puzzles
