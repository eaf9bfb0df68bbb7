"""The ARC DSL: M. Hodel's arc-dsl primitives and constants, with fast kernels for the hot primitives.

``from arcscope.dsl import *`` gives a program every primitive (``objects``, ``fill``, ``compose``, ...),
every constant (``ZERO``..``TEN``, ``T``, ``F``, ``UP``, ``ORIGIN``, ...) and the type names (``Grid``,
``Object``, ...), under the original names, with the original argument order, value types and results, so
an existing arc-dsl program runs unchanged.

The functions here are the reference implementations (:mod:`arcscope.dsl.reference`) rebound so that the
hot primitives, wherever they are called from, are the array kernels of :mod:`arcscope.dsl.fast`. Results
are equal to the reference's and, by default, iterate in the same order too; ``ARCSCOPE_DSL_ORDER=fast``
trades the order of the cells inside each ``objects`` object for speed (see :mod:`arcscope.dsl.fast`).
Other entry points, not star-exported:

* :func:`arcscope.dsl.batch.batch_objects` labels thousands of grids at once, on CPU or GPU.
* :func:`arcscope.dsl.runner.run_programs` runs ``solve_<task_id>`` programs against tasks, in parallel.
"""

from __future__ import annotations

import types

from arcscope._lazy import lazy_names
from arcscope.dsl import arc_types as _types
from arcscope.dsl import constants as _constants
from arcscope.dsl import fast as _fast
from arcscope.dsl import reference as _reference
from arcscope.dsl.arc_types import *  # noqa: F403
from arcscope.dsl.constants import *  # noqa: F403
from arcscope.dsl.reference import PRIMITIVES


def _rebind() -> dict[str, types.FunctionType]:
    """The reference functions with a globals dict in which the hot primitives are the fast ones."""
    scope = dict(vars(_reference))
    scope.update({name: getattr(_fast, name) for name in _fast.FAST})
    out = {}
    for name in PRIMITIVES:
        if name in _fast.FAST:
            out[name] = scope[name]
            continue
        f = getattr(_reference, name)
        # Same code object, so co_argcount (read by lbind/rbind) and the signature stay the original's.
        g = types.FunctionType(f.__code__, scope, f.__name__, f.__defaults__, f.__closure__)
        g.__doc__, g.__qualname__, g.__module__ = f.__doc__, f.__qualname__, __name__
        g.__annotations__ = dict(f.__annotations__)
        out[name] = g
    # Private helpers (_elementwise, _frame, ...) keep pointing at this scope, so they see the fast names too.
    scope.update(out)
    return out


globals().update(_rebind())

__all__ = [*PRIMITIVES, *_constants.__all__, *_types.__all__]

_LAZY = {
    "batch_objects": "batch",
    "BatchLabels": "batch",
    "run_programs": "runner",
    "load_programs": "runner",
    "RunReport": "runner",
    "ProgramResult": "runner",
    "ProgramError": "runner",
}

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
