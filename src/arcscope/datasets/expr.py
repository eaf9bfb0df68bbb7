"""Filter expressions: a small, safe subset of Python over record fields and task properties.

    reward > 0.85 and difficulty in ('medium', 'high')
    n_train >= 3 and max_side <= 20 and n_colours <= 4
    meta.source.startswith('seed') and prompt_tokens < 2048

A bare name is the record's field of that name when the record has one, else a task property
(:data:`TASK_PROPERTIES`, computed from the record viewed as an ARC task). ``a.b`` and ``a['b']`` read nested
fields. Allowed: literals, ``and or not``, comparisons (``in``, ``not in``, chained), arithmetic, ``x if c
else y``, the functions in :data:`FUNCTIONS` and the string methods in :data:`STR_METHODS`. Nothing else
(no attribute of Python objects, no imports, no lambdas) is evaluated, so an expression from a YAML file or
a command line cannot run code.

Nor can it ask for unbounded work: an expression is at most :data:`MAX_LENGTH` characters and
:data:`MAX_DEPTH` levels deep, integer arithmetic stops at :data:`MAX_INT_BITS` bits and repeated text or
lists at :data:`MAX_ITEMS` items (checked before computing), and ``matches()`` runs in linear time
(:mod:`arcscope.datasets.safe_re`). Each limit is a DatasetError naming the record and the rule.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from arcscope.datasets.records import DatasetError, Rec
from arcscope.datasets.safe_re import PatternError, compile_pattern, search

MAX_LENGTH = 4096
"""Most characters in one expression."""

MAX_DEPTH = 100
"""Most levels of nesting in one expression's syntax tree."""

MAX_INT_BITS = 4096
"""Largest integer (in bits, about 1,233 decimal digits) that arithmetic may produce."""

MAX_ITEMS = 1_000_000
"""Longest text or list that ``*`` may build."""

MAX_ROUND_DIGITS = 400
"""Largest ``ndigits`` (either sign) that ``round()`` takes: ``round(x, -10**7)`` alone takes seconds."""


def _grids(task):
    for p in task.pairs:
        yield p.input
        if p.output is not None:
            yield p.output


def _colours(task) -> list[int]:
    seen = np.zeros(10, dtype=bool)
    for g in _grids(task):
        seen[np.unique(g)] = True
    return [int(c) for c in np.flatnonzero(seen)]


TASK_PROPERTIES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "n_train": (lambda t: len(t.train), "number of demonstration pairs"),
    "n_test": (lambda t: len(t.test), "number of test pairs"),
    "n_pairs": (lambda t: len(t.train) + len(t.test), "train + test pairs"),
    "max_side": (lambda t: max(max(g.shape) for g in _grids(t)), "longest grid side over all grids"),
    "min_side": (lambda t: min(min(g.shape) for g in _grids(t)), "shortest grid side over all grids"),
    "max_height": (lambda t: max(g.shape[0] for g in _grids(t)), "most rows of any grid"),
    "max_width": (lambda t: max(g.shape[1] for g in _grids(t)), "most columns of any grid"),
    "max_cells": (lambda t: max(g.size for g in _grids(t)), "cells of the largest grid"),
    "total_cells": (lambda t: sum(g.size for g in _grids(t)), "cells over all grids"),
    "colours": (_colours, "sorted list of the colours used anywhere"),
    "n_colours": (lambda t: len(_colours(t)), "number of colours used anywhere"),
    "has_test_outputs": (lambda t: t.has_test_outputs, "every test output is known"),
    "same_shape": (
        lambda t: all(p.output is None or p.output.shape == p.input.shape for p in t.pairs),
        "every output has its input's shape",
    ),
    "content_hash": (lambda t: t.content_hash(), "sha256 of the grids"),
    "prompt_tokens": (None, "tokens of the longest prompt (one per test pair), needs a tokenizer"),  # type: ignore[dict-item]
}
"""Task properties by name: (function of the Task, description). ``prompt_tokens`` is computed by the step."""


def _matches(text: Any, pattern: str) -> bool:
    if not isinstance(pattern, str):
        raise TypeError(f"matches() takes the pattern as text, got {type(pattern).__name__}")
    return search(pattern, str(text))


def _round(x: Any, ndigits: Any = None) -> Any:
    if isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise ValueError(
            f"round() takes ndigits within -{MAX_ROUND_DIGITS}..{MAX_ROUND_DIGITS}, got {ndigits}"
        )
    return round(x) if ndigits is None else round(x, ndigits)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "min": min,
    "max": max,
    "abs": abs,
    "sum": sum,
    "any": any,
    "all": all,
    "round": _round,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "matches": _matches,
}
"""Functions an expression may call; ``has('field')`` and ``get('field', default)`` are also there."""

STR_METHODS = frozenset({"startswith", "endswith", "lower", "upper", "strip", "split", "count"})

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Attribute,
    ast.Subscript,
    ast.Tuple,
    ast.List,
    ast.Set,
    *_BINOPS,
    *_CMPOPS,
)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer))


def _too_big(op: ast.operator, left: Any, right: Any) -> str | None:
    """Why ``left op right`` would build a result past the limits, judged before computing it."""
    if isinstance(op, ast.Pow) and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        bits = int(right) * math.log2(abs(int(left)))
        if bits > MAX_INT_BITS:
            return f"the power would have about {bits:.0f} bits; integers may have at most {MAX_INT_BITS}"
    if isinstance(op, ast.Mult):
        if _is_int(left) and _is_int(right):
            bits = int(left).bit_length() + int(right).bit_length()
            if bits > MAX_INT_BITS + 1:
                return f"the product would have about {bits} bits; integers may have at most {MAX_INT_BITS}"
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and _is_int(n) and len(seq) * max(int(n), 0) > MAX_ITEMS:
                return (
                    f"repeating a {type(seq).__name__} of {len(seq)} items {n} times exceeds "
                    f"{MAX_ITEMS} items"
                )
    if isinstance(op, ast.Mod) and isinstance(left, str):
        return "'%' formatting of text is not allowed (a width such as '%9999999d' builds any size of text)"
    return None


class _FieldMissing(Exception):
    def __init__(self, name: str):
        self.name = name


def _depth(tree: ast.AST) -> int:
    """The depth of a syntax tree, found without recursion (the evaluator recurses once per level)."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


class Expression:
    """A compiled filter expression; ``expr(rec)`` evaluates it on one record."""

    def __init__(self, text: str, *, label: str = "expression"):
        self.text = text.strip()
        self.label = label
        if not self.text:
            raise DatasetError(f"{label}: empty expression")
        if len(self.text) > MAX_LENGTH:
            raise DatasetError(
                f"{label} {self.text[:40]!r}...: the expression has {len(self.text)} characters; "
                f"at most {MAX_LENGTH} are allowed (split it into several --where)"
            )
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as e:
            raise DatasetError(f"{label} {text!r}: syntax error at column {e.offset}: {e.msg}") from None
        except (RecursionError, MemoryError):
            # Python's own parser gives up on a few thousand nested operators.
            raise DatasetError(
                f"{label} {self.text[:40]!r}...: nested too deeply to parse; at most {MAX_DEPTH} levels"
            ) from None
        depth = _depth(tree)
        if depth > MAX_DEPTH:
            raise DatasetError(
                f"{label} {self.text[:40]!r}...: nested {depth} levels deep; at most {MAX_DEPTH} are allowed"
            )
        names: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED):
                raise DatasetError(
                    f"{label} {text!r}: {type(node).__name__} is not allowed in an expression "
                    f"(fields, literals, comparisons, and/or/not, arithmetic and {sorted(FUNCTIONS)} only)"
                )
            if isinstance(node, ast.Call):
                f = node.func
                ok = (isinstance(f, ast.Name) and f.id in {*FUNCTIONS, "has", "get"}) or (
                    isinstance(f, ast.Attribute) and f.attr in STR_METHODS
                )
                if not ok or node.keywords:
                    raise DatasetError(
                        f"{label} {text!r}: only {sorted({*FUNCTIONS, 'has', 'get'})} and the string methods "
                        f"{sorted(STR_METHODS)} may be called, positionally"
                    )
                if isinstance(f, ast.Name) and f.id == "matches" and len(node.args) == 2:
                    pat = node.args[1]
                    if isinstance(pat, ast.Constant) and isinstance(pat.value, str):
                        try:
                            compile_pattern(pat.value)
                        except PatternError as e:
                            raise DatasetError(f"{label} {text!r}: pattern {pat.value!r}: {e}") from None
            if isinstance(node, ast.Name):
                names.add(node.id)
        self.tree = tree
        self.names = frozenset(names - set(FUNCTIONS) - {"has", "get", "True", "False", "None"})

    @property
    def needs_tokens(self) -> bool:
        """True when the expression reads ``prompt_tokens`` (the step then tokenizes prompts)."""
        return "prompt_tokens" in self.names

    def __call__(self, rec: Rec, extra: dict[str, Any] | None = None) -> Any:
        """The value of the expression for ``rec``; DatasetError naming the record and field on failure."""
        try:
            return self._eval(self.tree.body, rec, extra or {})
        except _FieldMissing as m:
            props = ", ".join(sorted(TASK_PROPERTIES))
            raise DatasetError(
                f"{rec.where}: missing field '{m.name}' (needed by {self.label} {self.text!r}); the record "
                f"has {sorted(rec.data)}; task properties: {props}"
            ) from None
        except DatasetError:
            raise
        except Exception as e:  # a type or value error inside the user's expression
            raise DatasetError(
                f"{rec.where}: {self.label} {self.text!r} failed: {type(e).__name__}: {e}"
            ) from None

    def _name(self, name: str, rec: Rec, extra: dict[str, Any]) -> Any:
        if name in rec.data:
            return rec.data[name]
        if name in extra:
            return extra[name]
        if name in TASK_PROPERTIES and TASK_PROPERTIES[name][0] is not None:
            return TASK_PROPERTIES[name][0](rec.task())
        if name == "prompt_tokens":
            raise DatasetError(
                f"{self.label} {self.text!r}: prompt_tokens needs a tokenizer (CLI: --tokenizer)"
            )
        raise _FieldMissing(name)

    def _eval(self, node: ast.AST, rec: Rec, extra: dict[str, Any]) -> Any:
        ev = self._eval
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            return self._name(node.id, rec, extra)
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                out: Any = True
                for v in node.values:
                    out = ev(v, rec, extra)
                    if not out:
                        return out
                return out
            out = False
            for v in node.values:
                out = ev(v, rec, extra)
                if out:
                    return out
            return out
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand, rec, extra)
            if isinstance(node.op, ast.Not):
                return not v
            return -v if isinstance(node.op, ast.USub) else +v
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left, rec, extra), ev(node.right, rec, extra)
            if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 64:
                # A huge power would stall the whole run on one record.
                raise DatasetError(
                    f"{rec.where}: exponent {right} is too large (at most 64) in {self.text!r}"
                )
            if rule := _too_big(node.op, left, right):
                raise DatasetError(f"{rec.where}: {rule} (in {self.label} {self.text!r})")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            left = ev(node.left, rec, extra)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = ev(comp, rec, extra)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body, rec, extra) if ev(node.test, rec, extra) else ev(node.orelse, rec, extra)
        if isinstance(node, (ast.Tuple, ast.List)):
            return [ev(e, rec, extra) for e in node.elts]
        if isinstance(node, ast.Set):
            return {ev(e, rec, extra) for e in node.elts}
        if isinstance(node, ast.Attribute):
            base = ev(node.value, rec, extra)
            if isinstance(base, dict):
                if node.attr not in base:
                    raise _FieldMissing(ast.unparse(node))
                return base[node.attr]
            raise DatasetError(
                f"{rec.where}: {ast.unparse(node.value)!r} is {type(base).__name__}, not an object with "
                f"field {node.attr!r} (in {self.label} {self.text!r})"
            )
        if isinstance(node, ast.Subscript):
            base = ev(node.value, rec, extra)
            key = ev(node.slice, rec, extra)
            try:
                return base[key]
            except (KeyError, IndexError, TypeError):
                if isinstance(base, dict):
                    raise _FieldMissing(ast.unparse(node)) from None
                raise
        if isinstance(node, ast.Call):
            args = [ev(a, rec, extra) for a in node.args]
            f = node.func
            if isinstance(f, ast.Attribute):
                obj = ev(f.value, rec, extra)
                if not isinstance(obj, str):
                    raise DatasetError(
                        f"{rec.where}: .{f.attr}() needs text, got {type(obj).__name__} (in {self.text!r})"
                    )
                return getattr(obj, f.attr)(*args)
            assert isinstance(f, ast.Name)
            if f.id in ("has", "get"):
                try:
                    from arcscope.datasets.records import get_field

                    value = get_field(rec.data, str(args[0]), rec.where)
                except DatasetError:
                    return False if f.id == "has" else (args[1] if len(args) > 1 else None)
                return True if f.id == "has" else value
            try:
                return FUNCTIONS[f.id](*args)
            except PatternError as e:
                raise DatasetError(f"{rec.where}: matches() in {self.label} {self.text!r}: {e}") from None
        raise DatasetError(f"{self.label}: cannot evaluate {ast.unparse(node)!r}")  # pragma: no cover


def compile_where(where: str | list[str] | tuple[str, ...], label: str = "--where") -> list[Expression]:
    """Compile one or several expressions (all must hold)."""
    items = [where] if isinstance(where, str) else list(where)
    return [Expression(w, label=label) for w in items]


__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "MAX_ITEMS",
    "MAX_LENGTH",
    "STR_METHODS",
    "TASK_PROPERTIES",
    "Expression",
    "compile_where",
]
