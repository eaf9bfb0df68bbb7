"""Helpers shared by the benchmark scripts: naming the machine, and recording results in docs/benchmarks.md.

The scripts are run as ``python bench/bench_x.py``, so this folder is ``sys.path[0]`` and they import it
as ``from _doc import ...``. It needs the standard library only (no torch, numpy or arcscope).

Each script owns one section of docs/benchmarks.md, delimited by ``<!-- bench_x:start -->`` and
``<!-- bench_x:end -->`` lines (bench_tokenize's by its heading alone), and rewrites only that section.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
"""The file the benchmarks record their results in."""
HEADER = "# Benchmarks\n"
"""What a new docs/benchmarks.md starts with, before the first section is added."""


def cpu_model(fallback: str | None = None) -> str:
    """The CPU's model name, from the first ``model name`` line of /proc/cpuinfo.

    Where that file cannot be read or has no such line (macOS, many ARM machines), the platform's guess
    (``platform.processor()``), and where that is empty, ``fallback``; ``fallback=None`` (the default)
    means ``platform.machine()`` (e.g. ``x86_64``, ``arm64``).
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or (platform.machine() if fallback is None else fallback)


def machine(*extras: str, fallback: str | None = None) -> str:
    """One line naming the machine: the CPU model, the core count, then ``extras``, joined by ", ".

    ``machine("Python 3.11.7", "torch 2.5.1")`` gives e.g.
    ``"Intel(R) Xeon(R) Processor, 2 cores, Python 3.11.7, torch 2.5.1"``; ``fallback`` is passed to
    :func:`cpu_model`.
    """
    return ", ".join([cpu_model(fallback), f"{os.cpu_count()} cores", *extras])


def write_section(
    text: str,
    start: str | None = None,
    end: str | None = None,
    doc: Path = DOC,
    *,
    heading: str | None = None,
    stop: tuple[str, ...] = ("## ", "<!-- "),
    header: str = HEADER,
    trim_end: bool = False,
) -> None:
    """Replace one benchmark's section of ``doc`` with ``text``, or append ``text`` when there is none.

    The section is looked for in this order, and the first match is replaced (one match only):

    1. By its markers (``start`` and ``end`` given): from a line that is exactly ``start`` to the next
       line that begins with ``end``, the markers included and the newline after ``end`` not. ``text``
       replaces exactly that span, so it must itself begin with ``start`` and a newline and end with
       ``end`` (``f"{start}\\n...\\n{end}"``, no trailing newline) for the next run to find the section.
    2. By its heading (``heading`` given): from a line that is exactly ``heading`` up to the first later
       line beginning with one of ``stop`` (by default the next ``## `` heading or the next section's
       ``<!-- `` marker), or to the end of the file. That span includes the blank lines before the next
       section, so it is replaced by ``text`` (trailing newlines dropped) and one blank line, and the
       file's trailing newlines are then trimmed to one, in case the section was the last.

    With neither found, ``text`` is appended after the file's content (trailing newlines dropped) and one
    blank line, and the file ends with a single newline. A missing ``doc`` is treated as one holding
    ``header``; its folder is created if need be. Everything outside the section is left as it was, except
    that with ``trim_end`` the file's trailing whitespace (spaces too, also before an appended ``text``)
    is always cut down to a single newline.
    """
    if start is None and heading is None:
        raise ValueError("write_section needs the section's start and end markers, its heading, or both")
    old = doc.read_text() if doc.exists() else header
    new = None
    if start is not None:
        if end is None:
            raise ValueError("write_section: a start marker needs its end marker")
        marked = re.compile(rf"^{re.escape(start)}\n.*?^{re.escape(end)}", re.S | re.M)
        if marked.search(old):
            new = marked.sub(lambda _: text, old, count=1)
    if new is None and heading is not None:
        ahead = "".join(f"^{re.escape(s)}|" for s in stop)
        headed = re.compile(rf"^{re.escape(heading)}\n.*?(?={ahead}\Z)", re.S | re.M)
        if headed.search(old):
            new = headed.sub(lambda _: text.rstrip("\n") + "\n\n", old, count=1).rstrip("\n") + "\n"
    if new is None:
        new = old.rstrip(None if trim_end else "\n") + "\n\n" + text.rstrip("\n") + "\n"
    if trim_end:
        new = new.rstrip() + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(new)
