"""Kill tests: run the real CLI in a child process and SIGKILL it right after the n-th call of a function."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from arcscope.cli import main

CHILD = r"""
import sys, time
import torch
torch.set_num_threads(1)
module, name, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
import importlib
mod = importlib.import_module(module)
orig = getattr(mod, name)
calls = [0]
def wrapped(*a, **k):
    out = orig(*a, **k)
    calls[0] += 1
    if calls[0] == nth:  # the call has done its work; what follows it has not happened
        print("STOPPED", flush=True)
        time.sleep(600)
    return out
setattr(mod, name, wrapped)
from arcscope.cli import main
main(sys.argv[4:])
"""


def killed_at(tmp_path: Path, module: str, name: str, nth: int, argv: list[str]) -> None:
    """Run the CLI in a child until the ``nth`` call of ``module.name`` returns, then SIGKILL it by pid."""
    err = tmp_path / "child.err"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(err, "w") as ef:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, module, name, str(nth), *argv],
            stdout=subprocess.PIPE,
            stderr=ef,
            text=True,
            env=env,
        )
        try:
            while (line := proc.stdout.readline()) and line.strip() != "STOPPED":
                pass
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            proc.stdout.close()
    if not line:
        pytest.fail(f"the child never reached call {nth} of {module}.{name}:\n{err.read_text()}")
    assert proc.returncode == -signal.SIGKILL


def cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return int(e.value.code or 0)
