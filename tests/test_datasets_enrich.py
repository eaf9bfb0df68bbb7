"""enrich against a real OpenAI-compatible HTTP server started on 127.0.0.1 by the test."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arcscope.datasets import DatasetError, enrich
from arcscope.datasets.llm import EnrichError, parse_answer, render_prompt
from arcscope.datasets.records import Rec
from arcscope.datasets.testserver import ChatServer

SECRET = "sk-test-SECRET-4242"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_out(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def server():
    with ChatServer() as s:
        yield s


@pytest.fixture
def records(tmp_path):
    rows = [{"id": i, "code": f"def f{i}(x): return x * {i}", "reward": i / 10} for i in range(12)]
    return write_jsonl(tmp_path / "in.jsonl", rows)


def run(src, out, server, **kw):
    """enrich with fast retries and a cache in the test's folder."""
    opts = dict(base_url=server.url, model="local-test", preset="difficulty", backoff=0.001, max_backoff=0.01)
    opts.update(kw)
    return enrich(src, out, **opts)


def test_adds_fields_accounts_tokens_and_a_rerun_pays_nothing(tmp_path, server, records):
    cache = tmp_path / "cache.sqlite"
    rep = run(records, tmp_path / "o.jsonl", server, cache=str(cache), concurrency=4)
    rows = read_out(tmp_path / "o.jsonl")
    assert [r["id"] for r in rows] == list(range(12))  # input order kept under concurrency
    assert {r["difficulty"] for r in rows} <= {"low", "medium", "high"}
    assert all(r["enrich_status"] == "ok" and r["rationale"] and r["enrich_error"] is None for r in rows)
    assert rep.figures["requests"] == 12 == server.requests and rep.figures["ok"] == 12
    assert rep.figures["prompt_tokens"] == sum(len(p.split()) for p in server.prompts)
    assert rep.figures["total_tokens"] == rep.figures["prompt_tokens"] + rep.figures["completion_tokens"] > 0
    first = (tmp_path / "o.jsonl").read_bytes()
    rep2 = run(records, tmp_path / "o2.jsonl", server, cache=str(cache), concurrency=4)
    assert server.requests == 12 and rep2.figures["cache_hits"] == 12 and rep2.figures["requests"] == 0
    assert (tmp_path / "o2.jsonl").read_bytes() == first
    # Another model is another cache key: it is asked again.
    run(records, tmp_path / "o3.jsonl", server, cache=str(cache), model="other", limit=3)
    assert server.requests == 15


def test_retries_429_5xx_and_timeouts(tmp_path, records):
    with ChatServer(slow_seconds=1.0) as server:
        server.script(429, 500, 503, "slow")
        rep = run(records, tmp_path / "o.jsonl", server, cache=None, concurrency=1, timeout=0.3, limit=4)
        assert rep.figures["retries"] == 4 and rep.figures["ok"] == 4 and rep.figures["failed"] == 0
        assert server.requests == 8 and server.statuses[429] == 1 and server.statuses[500] == 1
        # Retries run out: the record is written as failed with the reason, the run goes on.
        server.script(*([500] * 3))
        rep = run(records, tmp_path / "o2.jsonl", server, cache=None, concurrency=1, max_retries=2, limit=2)
        rows = read_out(tmp_path / "o2.jsonl")
        assert rows[0]["enrich_status"] == "failed" and "HTTP 500" in rows[0]["enrich_error"]
        assert rows[0]["difficulty"] is None and rows[1]["enrich_status"] == "ok"


def test_unparseable_replies_are_retried_then_failed_and_not_cached(tmp_path, server, records):
    cache = str(tmp_path / "c.sqlite")
    server.script("garbage", "unparseable", "unparseable", "unparseable", "ok")
    rep = run(records, tmp_path / "o.jsonl", server, cache=cache, concurrency=1, parse_retries=2, limit=3)
    rows = read_out(tmp_path / "o.jsonl")
    assert rows[0]["enrich_status"] == "failed" and "does not parse" in rows[0]["enrich_error"]
    assert rows[0]["enrich_raw"] == "I think it is fairly hard, honestly."
    assert [r["enrich_status"] for r in rows[1:]] == ["ok", "ok"]
    assert rep.figures["parse_retries"] == 3 and rep.figures["failed"] == 1
    before = server.requests
    rep = run(records, tmp_path / "o2.jsonl", server, cache=cache, concurrency=1, limit=3)
    assert server.requests == before + 1 and rep.figures["cache_hits"] == 2  # only the failed one again
    assert all(r["enrich_status"] == "ok" for r in read_out(tmp_path / "o2.jsonl"))


def test_concurrency_is_bounded(tmp_path, records):
    with ChatServer(latency=0.05) as server:
        run(records, tmp_path / "o.jsonl", server, cache=None, concurrency=3)
        assert 2 <= server.max_in_flight <= 3


def test_key_never_leaks_and_a_wrong_key_stops_with_a_clear_error(tmp_path, records, monkeypatch, capsys):
    from arcscope.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with ChatServer(api_key=SECRET) as server:
        server.script("echo-auth")
        cache = tmp_path / "c.sqlite"
        out = tmp_path / "o.jsonl"
        with pytest.raises(SystemExit) as e:
            main(
                [
                    "data",
                    "enrich",
                    str(records),
                    str(out),
                    "-m",
                    "m",
                    "--preset",
                    "difficulty",
                    "--base-url",
                    server.url,
                    "--cache",
                    str(cache),
                    "--limit",
                    "4",
                    "-q",
                ]
            )
        assert e.value.code in (0, None)
        # The server echoed the header into one reply (whichever request came first); it was scrubbed.
        assert sum("you sent Bearer ***" in r["rationale"] for r in read_out(out)) == 1
        printed = capsys.readouterr()
        for blob in (
            out.read_text(),
            Path(f"{out}.report.json").read_text(),
            printed.out,
            printed.err,
            cache.read_bytes().decode("latin-1"),
        ):
            assert SECRET not in blob
        assert "4 ok" in printed.out
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-SECRET-77")
        with pytest.raises(SystemExit) as e:
            main(
                [
                    "data",
                    "enrich",
                    str(records),
                    str(tmp_path / "w.jsonl"),
                    "-m",
                    "m",
                    "--preset",
                    "difficulty",
                    "--base-url",
                    server.url,
                    "--no-cache",
                    "-q",
                ]
            )
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "HTTP 401" in " ".join(err.split()) and "$OPENAI_API_KEY" in err
        assert "sk-wrong-SECRET-77" not in err and not (tmp_path / "w.jsonl").exists()
        monkeypatch.delenv("OPENAI_API_KEY")
        with pytest.raises(EnrichError, match=r"it is not set"):
            run(records, tmp_path / "w.jsonl", server, cache=None)


def test_unreachable_endpoint_is_a_clear_error(tmp_path, records):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(
        EnrichError, match=r"cannot reach http://127.0.0.1:\d+/v1/chat/completions: connection refused"
    ):
        enrich(
            records,
            tmp_path / "o.jsonl",
            base_url=url,
            model="m",
            preset="difficulty",
            max_retries=1,
            backoff=0.001,
            cache=None,
        )
    assert not (tmp_path / "o.jsonl").exists()


def test_limit_bad_records_and_templates(tmp_path, server):
    rows = [{"id": i, "q": f"question {i}"} for i in range(6)]
    rows[2] = {"id": 2}  # no 'q'
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    kw = dict(prompt="Answer {q} as JSON with field 'answer'", fields="answer", cache=None)
    with pytest.raises(DatasetError, match=r"in.jsonl line 3: missing field 'q'.*prompt template"):
        run(src, tmp_path / "o.jsonl", server, preset=None, **kw)
    server.responder = lambda p: json.dumps({"answer": p.split()[2]})
    rep = run(src, tmp_path / "o.jsonl", server, preset=None, on_error="skip", **kw)
    assert [r["answer"] for r in read_out(tmp_path / "o.jsonl")] == ["0", "1", "3", "4", "5"]
    assert rep.n_skipped == 1
    rep = run(src, tmp_path / "o5.jsonl", server, preset=None, limit=2, **kw)
    assert rep.records_out == 2 == len(read_out(tmp_path / "o5.jsonl"))
    with pytest.raises(DatasetError, match="needs a model"):
        enrich(src, tmp_path / "x.jsonl", preset="difficulty")
    with pytest.raises(DatasetError, match="unknown preset"):
        enrich(src, tmp_path / "x.jsonl", model="m", preset="nope")


def test_prompt_rendering_and_answer_parsing():
    from arcscope.tasks import load
    from arcscope.tasks.writers import task_record

    t = load("arc1:training", limit=1)[0]
    rec = Rec(task_record(t), "x")
    text = render_prompt(rec, "{{literal}} {task} id={id}")
    assert text.startswith("{literal} Example 1\nInput:\n") and text.endswith(f"id={t.id}")
    assert "Test 1\nInput:" in text
    fields, choices = ["difficulty"], {"difficulty": ["low", "high"]}
    assert parse_answer('Sure!\n```json\n{"difficulty": "HIGH"}\n```', fields, choices) == {
        "difficulty": "high"
    }
    for bad, why in (
        ("no json", "no JSON object"),
        ('{"d": 1}', "no field"),
        ('{"difficulty": "mid"}', "not one of"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_answer(bad, fields, choices)


def test_a_killed_run_resumes_from_the_cache(tmp_path):
    rows = [{"id": i, "text": f"sample {i}"} for i in range(30)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    cache = tmp_path / "c.sqlite"
    out = tmp_path / "o.jsonl"
    with ChatServer(latency=0.1) as server:
        cmd = [
            sys.executable,
            "-m",
            "arcscope",
            "data",
            "enrich",
            str(src),
            str(out),
            "-m",
            "m",
            "--preset",
            "difficulty",
            "--base-url",
            server.url,
            "--cache",
            str(cache),
            "-c",
            "2",
            "-q",
        ]
        env = {**os.environ, "OPENAI_API_KEY": SECRET}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while server.requests < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert server.requests >= 8 and not out.exists()
        with sqlite3.connect(cache) as db:
            cached = db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
        assert 6 <= cached < 30
        sent_before = server.requests
        rep = enrich(
            src, out, base_url=server.url, model="m", preset="difficulty", cache=str(cache), concurrency=2
        )
        assert rep.figures["cache_hits"] == cached
        assert server.requests - sent_before == 30 - cached  # nothing paid twice
        assert [r["id"] for r in read_out(out)] == list(range(30))
        assert all(r["enrich_status"] == "ok" for r in read_out(out))
    # The killed run's temporary output was removed by the rerun.
    assert not [f.name for f in tmp_path.iterdir() if ".tmp-" in f.name]


def files_under(folder: Path):
    """Every file below ``folder`` (hidden ones and SQLite's -wal/-shm files included)."""
    return [p for p in folder.rglob("*") if p.is_file()]


def test_bad_numbers_are_one_line_errors_in_the_library_the_cli_and_pipelines(tmp_path, records, capsys):
    from arcscope.cli import main
    from arcscope.datasets import run_pipeline

    for key, value, rule in (
        ("timeout", -1.0, "> 0"),
        ("timeout", 0, "> 0"),
        ("backoff", -0.5, ">= 0"),
        ("max_backoff", float("nan"), ">= 0"),
        ("concurrency", 0, ">= 1"),
        ("max_retries", -1, ">= 0"),
        ("parse_retries", -2, ">= 0"),
    ):
        with pytest.raises(DatasetError, match=rf"enrich: {key} \(--{key.replace('_', '-')}\) must .*{rule}"):
            enrich(records, tmp_path / "o.jsonl", model="m", preset="difficulty", **{key: value})
    for flag in ("--timeout", "--backoff"):
        with pytest.raises(SystemExit) as e:
            main(
                [
                    "data",
                    "enrich",
                    str(records),
                    str(tmp_path / "o.jsonl"),
                    "-m",
                    "m",
                    "--preset",
                    "difficulty",
                    flag,
                    "-1",
                ]
            )
        err = " ".join(capsys.readouterr().err.split())
        assert e.value.code == 2 and f"{flag}) must be a finite number of seconds" in err
        assert "Traceback" not in err and err.count("error:") == 1
    p = tmp_path / "p.yaml"
    p.write_text(f"input: {records}\nsteps:\n  - enrich: {{model: m, preset: difficulty, timeout: -3}}\n")
    with pytest.raises(DatasetError, match=r"p.yaml step 1 \(enrich\): enrich: timeout .* got -3"):
        run_pipeline(p)
    assert not (tmp_path / "o.jsonl").exists()


def test_a_run_where_every_record_failed_exits_2_and_says_how_many(tmp_path, server, records, capsys):
    from arcscope.cli import main

    server.responder = lambda prompt: "no idea"  # never parses
    out = tmp_path / "o.jsonl"
    with pytest.raises(EnrichError, match=r"all 3 record\(s\) failed \(first: .*in.jsonl line 1: the reply"):
        run(records, out, server, cache=None, parse_retries=0, limit=3)
    # The records are written with their reasons, for a look at what went wrong.
    assert [r["enrich_status"] for r in read_out(out)] == ["failed"] * 3
    argv = ["data", "enrich", str(records), str(out), "-m", "m", "--preset", "difficulty", "--no-cache"]
    with pytest.raises(SystemExit) as e:
        main(argv + ["--base-url", server.url, "--parse-retries", "0", "-n", "4", "-q"])
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 2 and "all 4 record(s) failed" in err and "Traceback" not in err
    # One record that came back is a run that worked: it exits 0 and the failures are counted.
    server.responder = lambda prompt: (
        "no idea" if "f0(" in prompt else json.dumps({"difficulty": "low", "rationale": "r"})
    )
    with pytest.raises(SystemExit) as e:
        main(argv + ["--base-url", server.url, "--parse-retries", "0", "-n", "2", "-q"])
    assert e.value.code in (0, None) and "1 ok, 1 failed" in capsys.readouterr().out


def test_no_file_a_run_writes_holds_a_key_from_the_environment_or_the_url(tmp_path, records):
    """Keys in $OPENAI_API_KEY, in the base URL's query and as its password, echoed deep in every reply."""
    import base64

    url_key, password = "urlkey-SECRET-9137", "pw-SECRET-5521"
    basic = base64.b64encode(f"user:{password}".encode()).decode()
    secrets = [SECRET, url_key, password, basic]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with ChatServer() as server:
        host = server.url.removeprefix("http://")
        server.script(*["echo-nested"] * 12)
        runs = [
            ({"OPENAI_API_KEY": SECRET}, server.url, "plain.jsonl"),
            ({"OPENAI_API_KEY": SECRET}, f"http://{host}?key={url_key}", "a.jsonl"),
            ({}, f"http://user:{password}@{host}", "b.jsonl"),
        ]
        for env_extra, url, name in runs:
            env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | env_extra
            cmd = [sys.executable, "-m", "arcscope", "data", "enrich", str(records), str(run_dir / name)]
            cmd += ["-m", "m", "--prompt", "{code}", "--fields", "difficulty,echo", "-n", "4", "-c", "2"]
            cmd += ["--base-url", url, "--cache", str(run_dir / "cache.sqlite")]
            proc = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
            assert proc.returncode == 0, proc.stderr.decode()
            for blob in [proc.stdout, proc.stderr] + [f.read_bytes() for f in files_under(run_dir)]:
                assert not any(s.encode() in blob for s in secrets), name
        # The keys did reach the server, and came back in the replies' nested fields, masked.
        a, b = read_out(run_dir / "a.jsonl"), read_out(run_dir / "b.jsonl")
        assert {r["echo"]["request"]["headers"][0]["authorization"] for r in a} == {"Bearer ***"}
        assert {r["echo"]["request"]["path"] for r in a} == {"/v1/chat/completions?key=***"}
        assert {r["echo"]["request"]["headers"][0]["authorization"] for r in b} == {"Basic ***"}
        report = json.loads((run_dir / "a.jsonl.report.json").read_text())["config"]
        assert report["endpoint"] == f"http://{host}/chat/completions?key=***"
        assert report["base_url"] == f"http://{host}?key=***"
        report = json.loads((run_dir / "b.jsonl.report.json").read_text())["config"]
        assert report["endpoint"] == f"http://user:***@{host}/chat/completions"
        # A pipeline writes the report into its done file too.
        p = tmp_path / "p.yaml"
        p.write_text(
            f"input: {records}\nworkdir: {run_dir / 'work'}\nlimit: 3\nsteps:\n"
            f"  - enrich: {{base_url: 'http://{host}?key={url_key}', model: m, preset: difficulty}}\n"
        )
        from arcscope.datasets import run_pipeline

        server.script(*["echo-nested"] * 3)
        run_pipeline(p)
    written = files_under(run_dir)
    assert {f.name for f in written} >= {"a.jsonl", "b.jsonl", "01-enrich.done.json", "cache.sqlite"}
    for f in written:
        data = f.read_bytes()
        assert not any(s.encode() in data for s in secrets), f


def test_the_reply_cache_is_per_endpoint(tmp_path, records):
    cache = str(tmp_path / "c.sqlite")
    with ChatServer() as a, ChatServer() as b:
        a.responder = lambda p: json.dumps({"difficulty": "low", "rationale": "from a"})
        b.responder = lambda p: json.dumps({"difficulty": "high", "rationale": "from b"})
        run(records, tmp_path / "a.jsonl", a, cache=cache, limit=3)
        rep = run(records, tmp_path / "b.jsonl", b, cache=cache, limit=3)  # same model name, another server
        assert rep.figures["cache_hits"] == 0 and b.requests == 3
        assert {r["rationale"] for r in read_out(tmp_path / "b.jsonl")} == {"from b"}
        # The same endpoint with another key (masked in the cache key) is the same endpoint: served from the cache.
        run(records, tmp_path / "a1.jsonl", a, cache=cache, limit=3, base_url=f"{a.url}?key=first-key-0")
        rep = run(
            records, tmp_path / "a2.jsonl", a, cache=cache, limit=3, base_url=f"{a.url}?key=other-key-1"
        )
        assert rep.figures["cache_hits"] == 3 and a.requests == 6
        assert {r["rationale"] for r in read_out(tmp_path / "a2.jsonl")} == {"from a"}
