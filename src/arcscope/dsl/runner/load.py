"""Loading programs files: ``solve_<task_id>`` functions (or one ``entry``) from Python source, with arc-dsl's
``from dsl import *`` style imports resolved to :mod:`arcscope.dsl` while the file runs."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import traceback
import types
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from arcscope.errors import ArcscopeError


class ProgramError(ArcscopeError):
    """A programs file cannot be read, compiled or loaded, or it has no program to run."""


@dataclass
class ProgramSource:
    """Program source text and the name it is reported under (the file path)."""

    name: str
    text: str

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ProgramSource:
        """Read a programs file; a missing or unreadable file is a ProgramError naming it."""
        p = Path(path)
        try:
            return cls(str(p), p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProgramError(f"{p}: no such programs file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ProgramError(f"{p}: cannot read the programs file ({e})") from None


_ALIASES = {
    "dsl": "arcscope.dsl",
    "constants": "arcscope.dsl.constants",
    "arc_types": "arcscope.dsl.arc_types",
}
_alias_lock = threading.Lock()


@contextmanager
def _dsl_aliases():
    """Make ``import dsl`` / ``constants`` / ``arc_types`` mean arcscope's modules while a file loads."""
    import importlib

    with _alias_lock:
        added = []
        for alias, target in _ALIASES.items():
            if alias not in sys.modules:
                sys.modules[alias] = importlib.import_module(target)
                added.append(alias)
        try:
            yield
        finally:
            for alias in added:
                sys.modules.pop(alias, None)


def load_programs(
    source: ProgramSource | str | os.PathLike[str], entry: str | None = None
) -> dict[str, Callable]:
    """The programs of a file: ``{task_id: fn}`` for ``solve_<task_id>``, or ``{"*": fn}`` for ``entry``."""
    src = source if isinstance(source, ProgramSource) else ProgramSource.read(source)
    try:
        code = compile(src.text, src.name, "exec")
    except SyntaxError as e:
        raise ProgramError(f"{src.name} line {e.lineno}: syntax error: {e.msg}; fix the file") from None
    digest = hashlib.sha1(src.text.encode()).hexdigest()[:12]
    module = types.ModuleType(f"arcscope_programs_{digest}")
    module.__file__ = src.name
    with _dsl_aliases():
        try:
            exec(code, module.__dict__)
        except Exception as e:  # noqa: BLE001 - any error in user code is reported, with its line
            line = _user_line(e, src.name)
            where = f" line {line}" if line else ""
            raise ProgramError(
                f"{src.name}{where}: loading the file raised {type(e).__name__}: {e}; "
                "a programs file must import and define functions without errors"
            ) from None
    if entry is not None:
        fn = module.__dict__.get(entry)
        if not callable(fn):
            raise ProgramError(f"{src.name}: no function named {entry!r} (asked for with --entry)")
        return {"*": fn}
    found = {
        name[len("solve_") :]: fn
        for name, fn in module.__dict__.items()
        if name.startswith("solve_") and callable(fn) and len(name) > len("solve_")
    }
    if not found:
        raise ProgramError(
            f"{src.name}: no solve_<task_id> functions found; name them after their task, or use --entry NAME"
        )
    return found


def _user_line(e: BaseException, filename: str) -> int | None:
    """The deepest line of ``filename`` in the traceback (the program's own line)."""
    line = None
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    return line
