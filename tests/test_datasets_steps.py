"""arcscope.datasets: records I/O, filter expressions, canonical forms, dedupe, split, lengths."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from arcscope.datasets import (
    DatasetError,
    Expression,
    Rec,
    RecordWriter,
    canonical_form,
    canonical_hash,
    dedupe,
    filter_records,
    length_stats,
    lengths,
    read_records,
    report_path,
    split,
)
from arcscope.datasets.steps import assign_split
from arcscope.tasks import Task, augment_task, load, random_augmentation
from arcscope.tasks.writers import task_record
from tests.conftest import random_task


def make_char_tokenizer():
    """A fast tokenizer with one token per character (so token counts are text lengths), no chat template."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"[UNK]": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture(scope="module")
def char_tokenizer():
    """One token per character."""
    return make_char_tokenizer()


def write_jsonl(path, rows, bad_lines=None):
    """Write records one per line; ``bad_lines`` maps a 1-based line number to raw text put there."""
    lines = [json.dumps(r) for r in rows]
    for n, text in sorted((bad_lines or {}).items()):
        lines.insert(n - 1, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_out(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ records


def test_hostile_records_are_one_line_errors_that_skip_can_pass(tmp_path):
    rows = [{"id": i} for i in range(4)]
    src = write_jsonl(tmp_path / "in.jsonl", rows, {2: '{"x": ' + "9" * 5000 + "}", 4: "[" * 100_000})
    with pytest.raises(DatasetError, match=r"in.jsonl line 2: holds an integer longer than \d+ digits"):
        list(read_records(src))
    skipped = []
    recs = list(read_records(f"jsonl:{src}", "skip", skipped))
    assert [r.data for r in recs] == rows
    assert [w for w, _ in skipped] == [f"{src} line 2", f"{src} line 4"]
    assert "nested deeper than the reader follows" in skipped[1][1]
    report = filter_records(src, tmp_path / "o.jsonl", where="id >= 0", on_error="skip")
    assert report.records_out == 4 and report.n_skipped == 2


def test_generic_jsonl_roundtrip_keeps_bytes_and_names_bad_lines(tmp_path):
    rows = [{"id": i, "reward": i / 10, "module_name": f"m{i % 3}"} for i in range(6)]
    src = write_jsonl(tmp_path / "in.jsonl", rows, {3: "{not json", 5: "[1, 2]"})
    with pytest.raises(DatasetError, match=r"in.jsonl line 3: invalid JSON"):
        list(read_records(src))
    skipped = []
    recs = list(read_records(f"jsonl:{src}", "skip", skipped))
    assert [r.data for r in recs] == rows
    assert [w for w, _ in skipped] == [f"{src} line 3", f"{src} line 5"]
    assert "must be a JSON object" in skipped[1][1]
    out = tmp_path / "out.jsonl"
    # Odd spacing survives: an unchanged record is copied as read.
    (tmp_path / "spaced.jsonl").write_text('{"a":  1,   "b": [1,2]}\n')
    with RecordWriter(out) as w:
        for r in read_records(tmp_path / "spaced.jsonl"):
            w.write(r)
    assert out.read_text() == '{"a":  1,   "b": [1,2]}\n'


def test_parquet_and_task_outputs_roundtrip(tmp_path):
    rows = [{"id": f"t{i}", "meta": {"k": i} if i % 2 else {"other": [1, 2]}, "score": i} for i in range(5)]
    rows[3]["score"] = 2.5  # an int column that turns float later in the first group
    out = tmp_path / "x.parquet"
    with RecordWriter(f"parquet:{out}") as w:
        for r in rows:
            w.write(r)
    back = [r.data for r in read_records(f"parquet:{out}")]
    assert back == [{**r, "score": float(r["score"])} for r in rows]
    tasks = load("arc1:training", limit=3)
    with RecordWriter(tmp_path / "t.parquet") as w:
        for t in tasks:
            w.write(task_record(t))
    assert list(load(f"parquet:{tmp_path / 't.parquet'}")) == list(tasks)
    with RecordWriter(f"dir:{tmp_path / 'tasks'}") as w:
        for t in tasks:
            w.write(task_record(t))
    assert sorted(p.stem for p in (tmp_path / "tasks").iterdir()) == sorted(tasks.ids)


def test_writer_leaves_nothing_when_the_step_fails(tmp_path):
    out = tmp_path / "o.jsonl"
    with pytest.raises(RuntimeError):
        with RecordWriter(out) as w:
            w.write({"a": 1})
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ filter


def test_expressions_fields_properties_and_errors(make_task):
    t = make_task("a", seed=1, n_train=3, size=(4, 5))
    rec = Rec({**task_record(t), "reward": 0.9, "meta": {"source": "seed-7"}}, "f.jsonl line 4")
    assert Expression("reward > 0.85 and n_train == 3 and max_side == 5")(rec)
    assert Expression("meta.source.startswith('seed') and meta['source'] in ('seed-7', 'x')")(rec)
    assert Expression("n_colours == len(colours) and total_cells == 20 * 8")(rec)
    assert Expression("has('reward') and not has('nope') and get('nope', 3) == 3")(rec)
    with pytest.raises(DatasetError, match=r"f.jsonl line 4: missing field 'difficulty'"):
        Expression("difficulty == 'high'")(rec)
    with pytest.raises(DatasetError, match=r"missing field 'meta.author'"):
        Expression("meta.author == 'x'")(rec)
    for bad in ("__import__('os')", "reward.__class__", "[x for x in colours]", "lambda: 1"):
        with pytest.raises(DatasetError, match="not allowed|may be called|is float"):
            Expression(bad)(rec)
    with pytest.raises(DatasetError, match="exponent 1000 is too large"):
        Expression("2 ** 1000 > 1")(rec)
    generic = Rec({"reward": 1}, "g.jsonl line 1")
    with pytest.raises(DatasetError, match=r"g.jsonl line 1: not an ARC task record"):
        Expression("n_train > 1")(generic)


HOSTILE_EXPRESSIONS = [
    # (expression, the rule its DatasetError must name); each took from 43 s to minutes, or crashed the parser.
    ("(((10**64)**64)**64)**64 > 0", "rec.jsonl line 7: the power would have about 13607 bits"),
    ("matches(x, '(a+)+$')", None),  # linear-time matching: simply False, at once
    ("matches(x, '(a|aa)*' + 'a*' * 10 + 'b')", None),
    ("x * 10**7 == ''", "rec.jsonl line 7: repeating a str of 31 items 10000000 times exceeds 1000000"),
    ("'%099999999d' % 1 == ''", "'%' formatting of text is not allowed"),
    ("round(n, -10**7) == 0", "round() takes ndigits within -400..400"),
    (r"matches(x, '(a)\\1')", "a backreference is not supported"),
    ("1+" * 1500 + "1 > 0", "levels deep; at most 100 are allowed"),
    ("-" * 3000 + "1 > 0", "nested too deeply to parse"),
    ("n == " + "1" * 5000, "the expression has 5005 characters; at most 4096"),
]


def test_expressions_cannot_ask_for_unbounded_work():
    # A child process, killed by pid if it outlives its limit: a regression is a failure, not a hung suite.
    code = (
        "import json, sys\n"
        "from arcscope.datasets import DatasetError, Expression, Rec\n"
        "rec = Rec({'x': 'a' * 30 + '!', 'n': 5}, 'rec.jsonl line 7')\n"
        "out = []\n"
        "for text in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        out.append(['ok', Expression(text)(rec)])\n"
        "    except DatasetError as e:\n"
        "        out.append(['error', str(e)])\n"
        "print(json.dumps(out))\n"
    )
    texts = [t for t, _ in HOSTILE_EXPRESSIONS]
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(texts)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for (text, rule), (kind, value) in zip(HOSTILE_EXPRESSIONS, json.loads(proc.stdout), strict=True):
        if rule is None:
            assert [kind, value] == ["ok", False], text
        else:
            assert kind == "error" and rule in value and "\n" not in value, (text, value)


def test_safe_matches_agrees_with_re():
    import re

    from arcscope.datasets.safe_re import PatternError, search

    patterns = [
        r"^seed-\d{2,4}$",
        r"(?i)SEED",
        r"a|b+c",
        r"\bcat\b",
        r"[^\W\d]+_\d",
        r"(?m)^x$",
        r"(?s)a.b",
        r"(ab|a)*c?$",
        r"\B",
        r"é",
        r"(?a)\w+é",
    ]
    texts = ["seed-123", "Seed-12345", "a cat!", "bbc", "tom_7", "y\nx\nz", "a\nb", "ababac", "", "Éé", "x"]
    for p in patterns:
        for t in texts:
            assert search(p, t) == (re.search(p, t) is not None), (p, t)
    for bad in [r"(?=a)", r"(?<!a)b", r"a*+", r"(?>a)", r"(a)?(?(1)b|c)"]:
        with pytest.raises(PatternError, match="not supported"):
            search(bad, "a")
    with pytest.raises(PatternError, match="more than 1000 steps"):
        search(r"(a|b)*c", "ab" * 1000, max_steps=1000)


def test_filter_generic_records_skips_and_counts(tmp_path):
    rows = [{"id": i, "reward": r} for i, r in enumerate([0.9, 0.5, 0.95, 0.86])]
    rows.insert(2, {"id": "x"})  # no reward
    src = write_jsonl(tmp_path / "in.jsonl", rows, {4: "oops"})
    with pytest.raises(DatasetError, match=r"in.jsonl line 3: missing field 'reward'"):
        filter_records(src, tmp_path / "o.jsonl", where="reward > 0.85")
    assert not (tmp_path / "o.jsonl").exists()
    rep = filter_records(src, tmp_path / "o.jsonl", where="reward > 0.85", on_error="skip")
    assert [r["id"] for r in read_out(tmp_path / "o.jsonl")] == [0, 2, 3]
    assert rep.n_skipped == 2 and {w.split()[-1] for w, _ in rep.skipped} == {"3", "4"}
    saved = json.loads(report_path(tmp_path / "o.jsonl").read_text())
    assert saved["records_out"] == 3 and saved["n_skipped"] == 2


def test_filter_task_properties_on_a_task_source(tmp_path):
    rep = filter_records("arc1:training", tmp_path / "o.jsonl", where=["n_train >= 4", "max_side <= 10"])
    expect = [
        t.id
        for t in load("arc1:training")
        if len(t.train) >= 4
        and max(max(g.shape) for p in t.pairs for g in (p.input, p.output) if g is not None) <= 10
    ]
    assert [r["id"] for r in read_out(tmp_path / "o.jsonl")] == expect
    assert rep.records_in == 400 and rep.records_out == len(expect) > 0


def test_filter_prompt_tokens_with_a_char_tokenizer(tmp_path, char_tokenizer):
    from arcscope.tasks import build_prompt

    tasks = [random_task(f"t{i}", seed=i, n_train=1 + i % 3) for i in range(8)]
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [task_record(t) for t in tasks])
    lens = {t.id: len(build_prompt(t, "minimal", None, include_answer=True).text) for t in tasks}
    cut = sorted(lens.values())[4]
    filter_records(src, tmp_path / "o.jsonl", where=f"prompt_tokens < {cut}", tokenizer=char_tokenizer)
    assert [r["id"] for r in read_out(tmp_path / "o.jsonl")] == [t.id for t in tasks if lens[t.id] < cut]


# --------------------------------------------------------------------------------------------- canonical


def test_canonical_form_is_invariant_under_augmentation_and_separates_tasks():
    for seed in range(12):
        t = random_task("x", seed=seed, n_train=3)
        h = canonical_hash(t, "all", pair_order=True)
        for aug_seed in range(4):
            aug = random_augmentation(aug_seed, keep_background=False, n_train=3)
            assert canonical_hash(aug.apply(t), "all", pair_order=True) == h, (seed, aug.name)
        # Without pair order, reordering the train pairs makes a different task.
        swapped = Task("x", (t.train[1], t.train[0], t.train[2]), t.test)
        assert canonical_hash(swapped, "all") != canonical_hash(t, "all")
        other = random_task("y", seed=seed + 100, n_train=3)
        assert canonical_hash(other, "all", pair_order=True) != h
    # The returned augmentation really maps the task onto the canonical form.
    t = random_task("x", seed=3)
    form, aug = canonical_form(t, "all")
    assert canonical_form(aug.apply(t), "all")[0] == form


def test_canonical_keep_background_and_dihedral_only():
    t = random_task("x", seed=5, size=(3, 4))
    recoloured = random_augmentation(1, dihedral=False, pair_order=False, keep_background=False).apply(t)
    assert canonical_hash(recoloured, "colours") == canonical_hash(t, "colours")
    assert canonical_hash(recoloured, "dihedral") != canonical_hash(t, "dihedral")
    bg_moved = random_augmentation(2, dihedral=False, pair_order=False, keep_background=False)
    assert bg_moved.apply(t).content_hash() != t.content_hash()
    kept = random_augmentation(3, dihedral=False, pair_order=False, keep_background=True).apply(t)
    assert canonical_hash(kept, "colours", keep_background=True) == canonical_hash(
        t, "colours", keep_background=True
    )


# ------------------------------------------------------------------------------------------------ dedupe


def _augmented_set(tmp_path):
    base = [random_task(f"b{i}", seed=i, n_train=3) for i in range(5)]
    rows = []
    for i, t in enumerate(base):
        rows.append({**task_record(t), "reward": 0.1})
        for j, (_, a) in enumerate(augment_task(t, i, seed=i)):  # task i gets i augmentations
            rows.append({**task_record(a.with_id(f"{t.id}-a{j}")), "reward": 0.2 + j / 10})
    rows.append({**task_record(base[0].with_id("b0-copy")), "reward": 0.9})  # an exact duplicate
    return write_jsonl(tmp_path / "aug.jsonl", rows), rows


def test_dedupe_exact_and_up_to_symmetry_with_best(tmp_path):
    src, rows = _augmented_set(tmp_path)
    rep = dedupe(src, tmp_path / "exact.jsonl")
    assert rep.records_out == len(rows) - 1
    assert rep.figures["group_sizes"] == {"1": len(rows) - 2, "2": 1}
    rep = dedupe(src, tmp_path / "sym.jsonl", symmetry="all", pair_order=True)
    assert [r["id"] for r in read_out(tmp_path / "sym.jsonl")] == [f"b{i}" for i in range(5)]
    assert rep.figures["group_sizes"] == {"2": 2, "3": 1, "4": 1, "5": 1}
    assert rep.figures["largest_groups"][0] == {"kept": f"{src} line 11", "size": 5}
    dedupe(src, tmp_path / "best.jsonl", symmetry="all", pair_order=True, best="reward")
    best = {r["id"] for r in read_out(tmp_path / "best.jsonl")}
    assert best == {"b0-copy", "b1-a0", "b2-a1", "b3-a2", "b4-a3"}
    dedupe(src, tmp_path / "low.jsonl", symmetry="all", pair_order=True, best="reward", lowest=True)
    assert {r["id"] for r in read_out(tmp_path / "low.jsonl")} == {f"b{i}" for i in range(5)}


def test_dedupe_by_key_on_generic_records_and_bad_settings(tmp_path):
    rows = [
        {"module_name": m, "reward": r} for m, r in [("a", 0.5), ("b", 0.9), ("a", 0.7), ("c", 1), ("b", 0.1)]
    ]
    rows.append({"reward": 2})  # no key
    src = write_jsonl(tmp_path / "g.jsonl", rows)
    with pytest.raises(DatasetError, match=r"g.jsonl line 6: missing field 'module_name'"):
        dedupe(src, tmp_path / "o.jsonl", key="module_name", best="reward")
    rep = dedupe(src, tmp_path / "o.jsonl", key="module_name", best="reward", on_error="skip")
    assert read_out(tmp_path / "o.jsonl") == [rows[1], rows[2], rows[3]]
    assert rep.n_skipped == 1 and rep.figures["groups"] == 3
    with pytest.raises(DatasetError, match="unknown symmetry 'mirror'"):
        dedupe(src, tmp_path / "o.jsonl", symmetry="mirror")
    with pytest.raises(DatasetError, match=r"unknown setting 'kee' \(did you mean 'key'\?\)"):
        dedupe(src, tmp_path / "o.jsonl", kee="x")
    with pytest.raises(DatasetError, match="needs ARC task records"):
        dedupe(src, tmp_path / "o.jsonl", symmetry="all")


# ------------------------------------------------------------------------------------------------- split


def test_split_is_deterministic_group_aware_and_near_the_fractions(tmp_path):
    src, rows = _augmented_set(tmp_path)
    split(src, tmp_path / "s.jsonl", fractions="train=0.5,test=0.5", seed=1)
    first = read_out(tmp_path / "s.jsonl")
    split(src, tmp_path / "s2.jsonl", fractions={"train": 0.5, "test": 0.5}, seed=1)
    assert (tmp_path / "s2.jsonl").read_bytes() == (tmp_path / "s.jsonl").read_bytes()
    side = {}
    for r in first:
        side.setdefault(r["id"].split("-")[0], set()).add(r["split"])
    assert all(len(s) == 1 for s in side.values())  # every augmentation with its original
    many = [{"id": i} for i in range(4000)]
    msrc = write_jsonl(tmp_path / "many.jsonl", many)
    rep = split(msrc, tmp_path / "m-{split}.jsonl", fractions="train=0.8,validation=0.1,test=0.1")
    counts = {k: len(read_out(tmp_path / f"m-{k}.jsonl")) for k in ("train", "validation", "test")}
    assert counts == rep.figures["counts"] and sum(counts.values()) == 4000
    assert abs(counts["train"] / 4000 - 0.8) < 0.03 and abs(counts["test"] / 4000 - 0.1) < 0.03
    assert assign_split("g", {"a": 0.5, "b": 0.5}, 0) == assign_split("g", {"a": 0.5, "b": 0.5}, 0)
    with pytest.raises(DatasetError, match="add up to 1"):
        split(msrc, tmp_path / "x.jsonl", fractions="train=0.8,test=0.1")


def test_split_by_key_field(tmp_path):
    rows = [{"module": f"m{i % 7}", "n": i} for i in range(70)]
    src = write_jsonl(tmp_path / "g.jsonl", rows)
    split(src, tmp_path / "s.jsonl", key="module", fractions="a=0.5,b=0.5")
    by = {}
    for r in read_out(tmp_path / "s.jsonl"):
        by.setdefault(r["module"], set()).add(r["split"])
    assert all(len(v) == 1 for v in by.values()) and len({next(iter(v)) for v in by.values()}) == 2


# ----------------------------------------------------------------------------------------------- lengths


def test_length_stats_percentiles_and_coverage():
    a = np.arange(1, 1001)
    s = length_stats(a, multiple=64)
    assert s.percentiles["50"] == 500 and s.percentiles["99"] == 990 and s.percentiles["99.5"] == 995
    assert s.percentiles["100"] == 1000 and s.seq_len == {"99": 1024, "99.5": 1024, "100": 1024}
    assert s.over_limits["512"] == 488 and s.over_limits["1024"] == 0
    assert sum(b["count"] for b in s.buckets) == 1000 and s.buckets[0]["count"] == 255
    with pytest.raises(DatasetError, match="no prompts"):
        length_stats([])


def test_lengths_step_writes_json_and_png(tmp_path, char_tokenizer):
    from arcscope.tasks import build_prompt

    tasks = [random_task(f"t{i}", seed=i, n_test=1 + i % 2) for i in range(10)]
    src = write_jsonl(tmp_path / "in.jsonl", [task_record(t) for t in tasks] + [{"id": "generic"}])
    expect = sorted(
        len(build_prompt(t, "minimal", None, test_index=k, include_answer=True).text)
        for t in tasks
        for k in range(len(t.test))
    )
    rep = lengths(
        src,
        tokenizer=char_tokenizer,
        json_out=str(tmp_path / "l.json"),
        png_out=str(tmp_path / "l.png"),
        on_error="skip",
    )
    assert rep.figures["n"] == len(expect) == 15 and rep.figures["max"] == expect[-1]
    assert rep.figures["tokens_total"] == sum(expect) and rep.n_skipped == 1
    saved = json.loads((tmp_path / "l.json").read_text())
    assert saved["figures"]["percentiles"]["100"] == expect[-1]
    assert (tmp_path / "l.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Generic records: the text of one field.
    gsrc = write_jsonl(tmp_path / "g.jsonl", [{"text": "x" * n} for n in (5, 10, 20)])
    rep = lengths(gsrc, tokenizer=char_tokenizer, prompt={"field": "text"})
    assert rep.figures["min"] == 5 and rep.figures["max"] == 20
