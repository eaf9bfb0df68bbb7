"""The ARC organism: its grid tokenizer, its Llama, the trainer (loss, resume after SIGKILL) and its name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arcscope.errors import ModelError
from arcscope.files import TMP_MARK
from arcscope.models import load_model, resolve_model_path
from arcscope.models import organism as org
from arcscope.models.organism import (
    ORGANISM_NAME,
    OrganismConfig,
    OrganismError,
    TrainLMConfig,
    build_tokenizer,
    save_tokenizer,
)
from arcscope.tasks import Pair, Task, build_prompt, load, save, token_cell_map
from arcscope.tasks.prompts import Role, generated_cell_map
from tests.kill import cli, killed_at

pytestmark = pytest.mark.usefixtures("one_thread")


def flip_tasks(n: int, seed: int = 0, family: str = "flip") -> list[Task]:
    """A tiny family with a known rule: every output is its input mirrored left-right (3 train, 1 test)."""
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n):
        pairs = []
        for _ in range(4):
            h, w = (int(v) for v in rng.integers(2, 5, size=2))
            g = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
            pairs.append(Pair(g, np.ascontiguousarray(g[:, ::-1])))
        tasks.append(Task(f"{family}{i}", tuple(pairs[:3]), tuple(pairs[3:]), {"family": family}))
    return tasks


def tiny(**settings) -> TrainLMConfig:
    base = dict(steps=12, log_every=2, checkpoint_every=3, eval_every=4, eval_count=4, batch_tokens=512)
    base |= dict(sort_window=16, max_len=256, warmup=2, lr=3e-3, threads=1, device="cpu")
    return TrainLMConfig.from_preset("tiny", **{**base, **settings})


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny organism smoke-trained for 30 steps on the flip family (an HF folder)."""
    from arcscope.models.train_lm import train_lm

    out = tmp_path_factory.mktemp("organism") / "run"
    res = train_lm(tiny(steps=30, eval_every=0, checkpoint_every=0), out, tasks=flip_tasks(60))
    assert res.complete and res.steps == 30
    return out


# ---- tokenizer -----------------------------------------------------------------------------------------


def test_tokenizer_is_a_standard_fast_tokenizer_that_round_trips(tok, tmp_path):
    from transformers import AutoTokenizer

    save_tokenizer(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded.is_fast and not getattr(loaded, "chat_template", None)
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
    assert loaded.convert_tokens_to_ids([str(d) for d in range(10)]) == list(range(5, 15))
    assert loaded.convert_tokens_to_ids("\n") == 4
    text = "Example 1\nInput:\n012\n345\nOutput:\n9 8,7\n\nTest ×é ☃\tok"
    ids = loaded(text)["input_ids"]
    assert ids[0] == loaded.bos_token_id
    assert loaded.decode(ids, skip_special_tokens=True) == text
    # digits are always single tokens, and the template's markers are single tokens
    pieces = loaded.convert_ids_to_tokens(loaded("12345\nOutput:\n", add_special_tokens=False)["input_ids"])
    assert pieces == ["1", "2", "3", "4", "5", "\nOutput:\n"]
    instruction = build_prompt(flip_tasks(1)[0]).text.split("Example 1")[0]
    assert len(loaded(instruction, add_special_tokens=False)["input_ids"]) == 1


def test_token_cell_map_finds_every_cell_of_a_real_task(tok):
    task = min(load("arc1:training", limit=40), key=lambda t: sum(p.input.size for p in t.pairs))
    prompt = build_prompt(task, "minimal", tok, include_answer=True)
    m = token_cell_map(prompt, tok)
    assert (m.n_cells <= 1).all()
    assert int((m.row >= 0).sum()) == sum(s.grid.size for s in prompt.segments)
    for k, seg in enumerate(prompt.segments):
        idx = m.cell_token_index(k)
        assert (idx >= 0).all()
        for (r, c), i in np.ndenumerate(idx):
            assert (m.row[i], m.col[i]) == (r, c)
            assert tok.convert_ids_to_tokens(int(m.input_ids[i])) == str(seg.grid[r, c])
    assert prompt.answer_token_count(cell_map=m) == len(prompt.answer)  # one token per character
    # the tokens a model writes map to cells of the GENERATED grid the same way
    plain = build_prompt(task, "minimal", tok)
    gen_ids = tok(prompt.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    g = generated_cell_map(plain, tok, gen_ids)
    gen = g.mask(Role.GENERATED, cells_only=True)
    assert int(gen.sum()) == task.test[0].output.size


@pytest.mark.parametrize("encoder", ["spaced", "shape+row-numbers+comma", "fenced"])
@pytest.mark.parametrize("template", ["default", "short"])
def test_every_cell_is_one_token_whatever_the_encoder_and_template(tok, encoder, template):
    task = flip_tasks(1, seed=3)[0]
    prompt = build_prompt(task, encoder, tok, include_answer=True, template=template)
    m = token_cell_map(prompt, tok)
    assert (m.n_cells <= 1).all()
    assert int((m.row >= 0).sum()) == sum(s.grid.size for s in prompt.segments)


# ---- model and training ----------------------------------------------------------------------------------


def test_configs_check_their_fields():
    assert OrganismConfig().n_params(366) == 3_503_872  # the "small" organism
    with pytest.raises(OrganismError, match="multiple of heads"):
        OrganismConfig(d_model=100, heads=8).validate()
    with pytest.raises(OrganismError, match="augment 'flips'"):
        TrainLMConfig(augment=["flips"]).validate()
    with pytest.raises(OrganismError, match="max_len 4096 exceeds batch_tokens"):
        TrainLMConfig(max_len=4096, batch_tokens=2048).validate()
    with pytest.raises(OrganismError, match="unknown preset"):
        TrainLMConfig.from_preset("huge")


def test_batches_are_deterministic_sorted_and_masked(tok):
    from arcscope.models.train_lm import _Stream, encode_examples

    cfg = tiny(augment=["dihedral", "colours", "pair_order"], rotate_pairs=True)
    tasks = flip_tasks(10)
    a, b = _Stream(tasks, cfg, tok), _Stream(tasks, cfg, tok)
    assert len(a.examples) == 40  # every pair takes a turn as the test
    for c in (0, 3):
        ba, sa = a.chunk(c)
        bb, _ = b.chunk(c)
        assert sa == 0 and len(ba) == len(bb) > 1
        for x, y in zip(ba, bb, strict=True):
            assert (x.x == y.x).all() and (x.y == y.y).all()
            assert x.x.size <= cfg.batch_tokens
    ids, mask = encode_examples(tasks[:1], tok)[0]
    answer = build_prompt(tasks[0]).answer
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[mask][:-1]) == answer  # the loss is on the answer and EOS only
    ids, mask = encode_examples(tasks[:1], tok, outputs=True)[0]
    outs = [build_prompt(tasks[0]).encoder.encode(p.output) for p in tasks[0].train[1:]]
    assert tok.decode(ids[mask][:-1]) == "\n\n".join([*outs, answer])  # each output with its end marker


def test_a_few_steps_lower_the_loss_and_the_folder_loads(trained):
    lines = [json.loads(ln) for ln in (trained / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert losses[-1] < 0.8 * losses[0]
    summary = json.loads((trained / "training.json").read_text())
    assert summary["evaluation"]["n"] == 4 and summary["evaluation"]["families"]["flip"][1] == 4
    assert not (trained / "checkpoints").exists()

    loaded = load_model(trained, device="cpu")
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and loaded.tokenizer.is_fast
    assert loaded.context_length == 256
    prompt = build_prompt(flip_tasks(1, seed=9)[0], tokenizer=loaded.tokenizer)
    m = token_cell_map(prompt, loaded.tokenizer)
    assert int((m.row >= 0).sum()) == sum(s.grid.size for s in prompt.segments)
    ids = loaded.tokenizer(prompt.text, return_tensors="pt")["input_ids"]
    out = loaded.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert ids.shape[1] < out.shape[1] <= ids.shape[1] + 4


def test_evaluation_counts_a_memorised_answer_as_exact(tmp_path):
    from arcscope.models.train_lm import train_lm

    tasks = flip_tasks(2, seed=5)
    cfg = tiny(steps=300, eval_every=0, checkpoint_every=0, lr=1e-2, eval_count=2, log_every=50)
    res = train_lm(cfg, tmp_path / "run", tasks=tasks, eval_tasks=tasks)  # evaluated on what it trained on
    assert res.evaluation == {"accuracy": 1.0, "correct": 2, "n": 2, "families": {"flip": [2, 2]}}


def test_a_finished_run_is_kept_and_other_settings_are_named(trained, tmp_path):
    from arcscope.models.train_lm import train_lm

    cfg = tiny(steps=30, eval_every=0, checkpoint_every=0)
    res = train_lm(cfg, trained, tasks=flip_tasks(60))
    assert res.already_complete and res.steps == 30
    with pytest.raises(OrganismError, match=r"other settings: lr \(saved 0.003, now 0.002\)"):
        train_lm(tiny(steps=30, eval_every=0, checkpoint_every=0, lr=2e-3), trained, tasks=flip_tasks(60))
    with pytest.raises(OrganismError, match="training tasks"):
        train_lm(cfg, trained, tasks=flip_tasks(60, seed=1))
    foreign = tmp_path / "hf"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(OrganismError, match="holds no train-lm run"):
        train_lm(cfg, foreign, tasks=flip_tasks(60), overwrite=True)
    assert sorted(p.name for p in foreign.iterdir()) == ["config.json"]


# ---- the name ----------------------------------------------------------------------------------------------


def test_organism_name_says_clearly_when_none_is_bundled(tmp_path, monkeypatch):
    monkeypatch.setattr(org, "BUNDLED_DIR", tmp_path / "bundled" / "organism")
    with pytest.raises(ModelError) as e:
        resolve_model_path("organism")
    msg = str(e.value)
    assert "bundled organism is not in this install" in msg and "arcscope train-lm" in msg
    assert str(tmp_path / "bundled" / "organism") in msg


def test_organism_name_resolves_to_the_bundled_folder(trained, monkeypatch):
    monkeypatch.setattr(org, "BUNDLED_DIR", trained)
    assert resolve_model_path("organism") == (trained, ORGANISM_NAME)
    assert load_model("organism", device="cpu").name == ORGANISM_NAME


# ---- resume after SIGKILL --------------------------------------------------------------------------------

TRAINER = "arcscope.models.train_lm"


def _args(tasks: Path, out: Path) -> list[str]:
    # 12 steps: a record every 2, a checkpoint every 3, an evaluation every 4 (steps 4, 8, 12)
    args = ["train-lm", "--preset", "tiny", "--tasks", f"jsonl:{tasks}", "--out", str(out), "-q"]
    args += ["--steps", "12", "--eval-count", "4", "--eval-every", "4", "--checkpoint-every", "3"]
    args += ["--batch-tokens", "512", "--max-len", "256", "--threads", "1", "--device", "cpu"]
    args += ["--augment", "dihedral,colours", "--rotate-pairs"]
    return args + ["log_every=2", "sort_window=16", "warmup=2", "lr=0.003"]


TIMING = ("tokens_per_s", "elapsed_s")


def _lines(path: Path) -> list[dict]:
    recs = [json.loads(ln) for ln in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


def _files(root: Path) -> list[str]:
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert not [n for n in names if TMP_MARK in n], names  # nothing a killed writer left behind
    return names


def test_train_lm_command_names_a_bad_preset(capsys):
    assert cli(["train-lm", "--preset", "huge", "-q"]) == 2
    assert "unknown preset 'huge'; known: tiny, small" in " ".join(capsys.readouterr().err.split())


def test_train_lm_killed_at_each_moment_resumes_to_the_same_folder(tmp_path):
    tasks = tmp_path / "flip.jsonl"
    save(flip_tasks(40), f"jsonl:{tasks}")
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert cli(_args(tasks, ref)) == 0
    # after the first record (step 2), before any checkpoint: the rerun starts over
    killed_at(tmp_path, TRAINER, "emit", 1, _args(tasks, out))
    assert (out / "run.json").is_file() and not (out / "checkpoints").exists()
    # while the first checkpoint (step 3) is being written: it never appears
    killed_at(tmp_path, TRAINER, "save_file", 1, _args(tasks, out))
    assert [p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")] == []
    # after the record at step 8, before its evaluation: checkpoints at 3 and 6 are on disk
    killed_at(tmp_path, TRAINER, "emit", 4, _args(tasks, out))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000003", "step_00000006"]
    # resumed from step 6, killed during the evaluation at step 8 (before its record and checkpoint)
    killed_at(tmp_path, TRAINER, "evaluate", 1, _args(tasks, out))
    assert _lines(out / "metrics.jsonl")[-1] == _lines(ref / "metrics.jsonl")[4]  # the step-8 record
    assert cli(_args(tasks, out)) == 0

    assert _files(out) == _files(ref)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "run.json"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert _lines(out / "metrics.jsonl") == _lines(ref / "metrics.jsonl")
    assert [r["step"] for r in _lines(ref / "metrics.jsonl") if "eval/accuracy" in r] == [4, 8, 12]
    summary = [json.loads((f / "training.json").read_text()) for f in (out, ref)]
    for s in summary:
        s.pop("seconds_last_session"), s.pop("tokens_per_s_last_session")
        for k in TIMING:
            s["metrics"].pop(k)
    assert summary[0] == summary[1]
