"""Regular-expression search that cannot hang: Python's ``re`` syntax, matched in linear time.

``re`` backtracks, so a pattern such as ``(a+)+$`` or ``a*a*a*a*b`` takes exponential or high-polynomial
time on a short text. A filter expression comes from a command line or a YAML file, so :func:`search`
parses the pattern with ``re``'s own parser and runs it as a Thompson NFA instead: every text position is
visited once, with at most one thread per program instruction, and the work is bounded by
``len(text) * len(program)``. It answers the only question a filter asks (does the pattern occur?), with
``re.search`` semantics for what it supports: literals, ``.``, classes, ``\\d \\w \\s`` and their negations,
``^ $ \\A \\Z \\b \\B``, groups, alternation, greedy and lazy repeats, and the flags ``i m s a x``.
Backreferences, lookarounds, conditionals, atomic groups and possessive repeats need backtracking (or change
what matches) and are refused with :class:`PatternError`.
"""

from __future__ import annotations

import re
import re._constants as C  # noqa: N812 - re's own opcode names
import re._parser as P  # noqa: N812
from collections.abc import Callable
from functools import lru_cache

MAX_PROGRAM = 4000
"""Most NFA instructions one pattern may compile to (counted repeats such as ``x{500}`` copy their body)."""

MAX_STEPS = 2_000_000
"""Most thread steps one :func:`search` may take (about a second); more raises :class:`PatternError`."""

_CHAR, _SPLIT, _JMP, _ASSERT, _MATCH = range(5)


class PatternError(ValueError):
    """A pattern the linear-time matcher does not take, or a search over its step budget."""


def _fold(ch: str, ascii_only: bool = False) -> tuple[str, ...]:
    # Under (?a) re folds the case of ASCII letters only.
    if ascii_only and not ch.isascii():
        return (ch,)
    return (ch, ch.lower(), ch.upper())


def _category(cat, ascii_only: bool) -> Callable[[str], bool]:
    if cat in (C.CATEGORY_DIGIT, C.CATEGORY_NOT_DIGIT):
        f = (lambda c: "0" <= c <= "9") if ascii_only else str.isdecimal
    elif cat in (C.CATEGORY_SPACE, C.CATEGORY_NOT_SPACE):
        f = (lambda c: c in " \t\n\r\f\v") if ascii_only else str.isspace
    elif cat in (C.CATEGORY_WORD, C.CATEGORY_NOT_WORD):
        f = _word_ascii if ascii_only else _word
    else:
        raise PatternError(f"the character category {cat} is not supported")
    if cat in (C.CATEGORY_NOT_DIGIT, C.CATEGORY_NOT_SPACE, C.CATEGORY_NOT_WORD):
        return lambda c: not f(c)
    return f


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _word_ascii(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _char_class(items: list, icase: bool, ascii_only: bool) -> Callable[[str], bool]:
    negate = False
    tests: list[Callable[[str], bool]] = []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            tests.append(lambda c, x=chr(av): c == x)
        elif op is C.RANGE:
            tests.append(lambda c, lo=chr(av[0]), hi=chr(av[1]): lo <= c <= hi)
        elif op is C.CATEGORY:
            tests.append(_category(av, ascii_only))
        else:
            raise PatternError(f"the class item {op} is not supported")

    def plain(c: str) -> bool:
        return any(t(c) for t in tests)

    hit = (lambda c: any(plain(v) for v in _fold(c, ascii_only))) if icase else plain
    return (lambda c: not hit(c)) if negate else hit


class _Compiler:
    def __init__(self) -> None:
        self.op: list[int] = []
        self.arg: list[object] = []

    def emit(self, op: int, arg: object = None) -> int:
        if len(self.op) >= MAX_PROGRAM:
            raise PatternError(
                f"the pattern is too large for the matcher (over {MAX_PROGRAM} steps; shrink counted repeats)"
            )
        self.op.append(op)
        self.arg.append(arg)
        return len(self.op) - 1

    def seq(self, items, flags: int) -> None:
        for op, av in items:
            self.node(op, av, flags)

    def node(self, op, av, flags: int) -> None:
        icase = bool(flags & re.IGNORECASE)
        ascii_only = bool(flags & re.ASCII)
        if op in (C.LITERAL, C.NOT_LITERAL):
            x = chr(av)
            if icase:
                xs = set(_fold(x, ascii_only))

                def same(c: str, xs: set[str] = xs) -> bool:
                    return not xs.isdisjoint(_fold(c, ascii_only))
            else:

                def same(c: str, x: str = x) -> bool:
                    return c == x

            self.emit(_CHAR, same if op is C.LITERAL else (lambda c, same=same: not same(c)))
        elif op is C.ANY:
            self.emit(_CHAR, (lambda c: True) if flags & re.DOTALL else (lambda c: c != "\n"))
        elif op is C.IN:
            self.emit(_CHAR, _char_class(av, icase, ascii_only))
        elif op is C.AT:
            self.emit(_ASSERT, (av, bool(flags & re.MULTILINE), ascii_only))
        elif op is C.SUBPATTERN:
            _group, add, remove, sub = av
            self.seq(sub, (flags | add) & ~remove)
        elif op is C.BRANCH:
            self.branch(av[1], flags)
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
            # Greedy and lazy repeats match the same texts; only which match is reported differs.
            lo, hi, sub = av
            for _ in range(lo):
                self.seq(sub, flags)
            if hi is C.MAXREPEAT:
                loop = self.emit(_SPLIT)
                self.seq(sub, flags)
                self.emit(_JMP, loop)
                self.arg[loop] = (loop + 1, len(self.op))
            else:
                for _ in range(hi - lo):
                    split = self.emit(_SPLIT)
                    self.seq(sub, flags)
                    self.arg[split] = (split + 1, len(self.op))
        else:
            names = {
                C.GROUPREF: "a backreference",
                C.GROUPREF_EXISTS: "a conditional group",
                C.ASSERT: "a lookahead/lookbehind",
                C.ASSERT_NOT: "a negative lookahead/lookbehind",
                C.ATOMIC_GROUP: "an atomic group",
                C.POSSESSIVE_REPEAT: "a possessive repeat",
            }
            what = names.get(op, str(op))
            raise PatternError(
                f"{what} is not supported: matches() runs in linear time, without backtracking"
            )

    def branch(self, alternatives, flags: int) -> None:
        jumps = []
        for i, alt in enumerate(alternatives):
            if i < len(alternatives) - 1:
                split = self.emit(_SPLIT)
                self.seq(alt, flags)
                jumps.append(self.emit(_JMP))
                self.arg[split] = (split + 1, len(self.op))
            else:
                self.seq(alt, flags)
        for j in jumps:
            self.arg[j] = len(self.op)


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> tuple[tuple[int, ...], tuple[object, ...]]:
    """The NFA program of ``pattern``; PatternError for invalid or unsupported syntax."""
    try:
        parsed = P.parse(pattern)
    except re.error as e:
        raise PatternError(f"invalid regular expression: {e}") from None
    except RecursionError:
        raise PatternError("the regular expression is nested too deeply") from None
    comp = _Compiler()
    comp.seq(parsed, parsed.state.flags)
    comp.emit(_MATCH)
    return tuple(comp.op), tuple(comp.arg)


def _at(kind, multiline: bool, ascii_only: bool, text: str, pos: int) -> bool:
    n = len(text)
    if kind is C.AT_BEGINNING:
        return pos == 0 or (multiline and text[pos - 1] == "\n")
    if kind is C.AT_BEGINNING_STRING:
        return pos == 0
    if kind is C.AT_END:
        if multiline:
            return pos == n or text[pos] == "\n"
        return pos == n or (pos == n - 1 and text[pos] == "\n")
    if kind is C.AT_END_STRING:
        return pos == n
    if kind in (C.AT_BOUNDARY, C.AT_NON_BOUNDARY):
        if n == 0:
            return False  # re's own rule: neither \b nor \B matches in an empty text
        word = _word_ascii if ascii_only else _word
        before = pos > 0 and word(text[pos - 1])
        after = pos < n and word(text[pos])
        return (before != after) == (kind is C.AT_BOUNDARY)
    raise PatternError(f"the anchor {kind} is not supported")  # pragma: no cover


def search(pattern: str, text: str, *, max_steps: int = MAX_STEPS) -> bool:
    """True when ``pattern`` occurs in ``text`` (as ``re.search`` would say), in linear time.

    Raises PatternError for a pattern it does not take, and when the search would pass ``max_steps``.
    """
    ops, args = compile_pattern(pattern)
    steps = 0

    def add(threads: list[int], seen: set[int], pc: int, pos: int) -> bool:
        # Follow jumps, splits and anchors from pc; collect the instructions that read a character.
        nonlocal steps
        stack = [pc]
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            steps += 1
            op = ops[pc]
            if op == _CHAR:
                threads.append(pc)
            elif op == _JMP:
                stack.append(args[pc])  # type: ignore[arg-type]
            elif op == _SPLIT:
                a, b = args[pc]  # type: ignore[misc]
                stack += (b, a)
            elif op == _ASSERT:
                if _at(*args[pc], text, pos):  # type: ignore[misc]
                    stack.append(pc + 1)
            else:
                return True
        return False

    threads: list[int] = []
    seen: set[int] = set()
    for pos in range(len(text) + 1):
        if steps > max_steps:
            raise PatternError(
                f"the search took more than {max_steps} steps on a {len(text)}-character text; "
                f"use a simpler pattern or a shorter field"
            )
        # re.search semantics: a new attempt starts at every position.
        if add(threads, seen, 0, pos):
            return True
        if pos == len(text):
            break
        ch = text[pos]
        nxt: list[int] = []
        nseen: set[int] = set()
        for pc in threads:
            if args[pc](ch) and add(nxt, nseen, pc + 1, pos + 1):  # type: ignore[operator]
                return True
        threads, seen = nxt, nseen
        steps += len(threads)
    return False


__all__ = ["MAX_PROGRAM", "MAX_STEPS", "PatternError", "compile_pattern", "search"]
