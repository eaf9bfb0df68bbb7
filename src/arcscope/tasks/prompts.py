"""Prompts for language models, response parsing, and the token-to-cell map.

``build_prompt`` writes a task as text (train pairs, then the test input) with every grid's place recorded:
each :class:`GridSegment` knows its pair, role, character span and per-cell character spans in the final
text, also after chat-template wrapping. ``token_cell_map`` lines those spans up with a fast tokenizer's
offset mapping, so each token is known to encode a given cell of a given grid, or formatting.
``generated_cell_map`` does the same for the tokens a model generated after the prompt, from each generated
token's own decoded text (never a re-tokenization), with the response's grid as a GENERATED segment.

Token-to-cell rules (the capture engine stores these next to every activation, so they are strict):

- a token maps to cell ``(r, c)`` when its characters contain that cell's whole text and nothing else but
  whitespace and the encoder's cell separators (``"3"``, ``" 3"``, ``"3\\n"``, ``"3,"``);
- a token touching two or more cells (a BPE merge such as ``"12"``) is *multi-cell*: ``row``/``col`` are -1,
  ``n_cells`` counts the cells, role/segment/pair are kept. No activation is ever given to a wrong cell;
- a token mixing one cell with other formatting (``"1 0"``: a row number and a cell) also gets ``row``/``col``
  -1, with ``n_cells`` 1;
- tokens inside a grid's text that encode no cell (newlines, row numbers, the shape header, fences) keep the
  grid's segment, pair and role; tokens outside every grid get segment -1, pair -1 and ``Role.NONE``.

Pair indices count within the pair's own list: ``train[i]`` for train roles, ``test[i]`` for the test input,
the answer and generated grids.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from arcscope.errors import ArcscopeError, DecodeError, TaskFormatError
from arcscope.tasks.core import Grid, Task, as_grid
from arcscope.tasks.encoding import GridEncoder, RowNumbers, get_encoder


class PromptError(ArcscopeError, ValueError):
    """A prompt cannot be built or mapped as asked (missing answer, bad template, slow tokenizer)."""


# ----------------------------------------------------------------------------------------------- roles


class Role(StrEnum):
    """What a token's grid is in the prompt; ``NONE`` for formatting outside every grid."""

    NONE = "none"
    TRAIN_INPUT = "train_input"
    TRAIN_OUTPUT = "train_output"
    TEST_INPUT = "test_input"
    ANSWER = "answer"
    GENERATED = "generated"

    @property
    def code(self) -> int:
        """The small integer code stored in int8 columns (``NONE`` is -1)."""
        return ROLE_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> Role:
        """The role stored as ``code``."""
        try:
            return _ROLES_BY_CODE[int(code)]
        except KeyError:
            raise ValueError(f"unknown role code {code}; known: {sorted(_ROLES_BY_CODE)}") from None

    @classmethod
    def parse(cls, value: Role | str | int) -> Role:
        """A role from a Role, its string value (``"train_input"``) or its integer code."""
        if isinstance(value, Role):
            return value
        if isinstance(value, (int, np.integer)):
            return cls.from_code(int(value))
        try:
            return cls(str(value).strip().lower().replace("-", "_"))
        except ValueError:
            raise ValueError(f"unknown role {value!r}; known: {', '.join(r.value for r in cls)}") from None


ROLE_CODES: dict[Role, int] = {
    Role.NONE: -1,
    Role.TRAIN_INPUT: 0,
    Role.TRAIN_OUTPUT: 1,
    Role.TEST_INPUT: 2,
    Role.ANSWER: 3,
    Role.GENERATED: 4,
}
"""Role -> int8 code, for storage; ``Role.from_code`` maps back."""
_ROLES_BY_CODE = {v: k for k, v in ROLE_CODES.items()}


# ------------------------------------------------------------------------------------------- templates

_FIELDS = {
    "instruction": {"n_train"},
    "example": {"n", "i", "n_train", "input", "output"},
    "test": {"n", "i", "n_train", "input"},
}
_REQUIRED = {"instruction": set(), "example": {"input", "output"}, "test": {"input"}}


@lru_cache(maxsize=64)
def _parse_template(part: str, text: str) -> tuple[tuple[str, str | None, str], ...]:
    """Split a template string into (literal, field, format spec) triples, checking its fields."""
    try:
        items = [(lit, name, spec or "") for lit, name, spec, _ in string.Formatter().parse(text)]
    except ValueError as e:
        raise PromptError(f"template {part!r} {text!r} is not a valid format string: {e}") from None
    names = [n for _, n, _ in items if n is not None]
    bad = set(names) - _FIELDS[part]
    if bad:
        raise PromptError(
            f"template {part!r} uses unknown field(s) {sorted(bad)}; allowed: {sorted(_FIELDS[part])}"
        )
    for req in _REQUIRED[part]:
        if names.count(req) != 1:
            raise PromptError(f"template {part!r} must contain {{{req}}} exactly once")
    for grid_field in ("input", "output"):
        if grid_field in names and any(n == grid_field and s for _, n, s in items):
            raise PromptError(f"template {part!r}: {{{grid_field}}} takes no format spec")
    return tuple(items)


@dataclass(frozen=True)
class PromptTemplate:
    """The natural-language framing around the grids; Python format strings."""

    instruction: str = (
        "Each example below shows an input grid and the output grid it becomes; colours are digits 0-9. "
        "Find the rule and apply it to the test input. Answer with the output grid only.\n\n"
    )
    """Text before the first example; may use {n_train}."""
    example: str = "Example {n}\nInput:\n{input}\nOutput:\n{output}\n\n"
    """One demonstration pair; {input} and {output} are the grids, {n} counts from 1 ({i} from 0)."""
    test: str = "Test\nInput:\n{input}\nOutput:\n"
    """The test input; the answer (gold or generated) follows it."""
    system: str | None = None
    """System message when a chat template is used (None: the tokenizer's own default)."""

    def __post_init__(self) -> None:
        for part in ("instruction", "example", "test"):
            _parse_template(part, getattr(self, part))


TEMPLATES: dict[str, PromptTemplate] = {
    "default": PromptTemplate(),
    "short": PromptTemplate(
        instruction="", example="input:\n{input}\noutput:\n{output}\n\n", test="input:\n{input}\noutput:\n"
    ),
}
"""Named prompt templates for ``build_prompt(template=...)``."""


def get_template(template: PromptTemplate | str) -> PromptTemplate:
    """A template by name (see TEMPLATES) or the template itself."""
    if isinstance(template, PromptTemplate):
        return template
    try:
        return TEMPLATES[template]
    except KeyError:
        raise PromptError(f"unknown prompt template {template!r}; known: {', '.join(TEMPLATES)}") from None


# --------------------------------------------------------------------------------------------- prompts


@dataclass(frozen=True, eq=False)
class GridSegment:
    """One grid in a prompt: its pair, role, [start, end) in the text, and each cell's [start, end)."""

    role: Role
    pair: int
    start: int
    end: int
    cells: np.ndarray
    """int32 ``[h, w, 2]`` character spans of the cells in the prompt text (-1 where unknown)."""
    grid: Grid

    @property
    def span(self) -> tuple[int, int]:
        """The grid's [start, end) character range in the prompt text."""
        return self.start, self.end

    @property
    def shape(self) -> tuple[int, int]:
        """The grid's (rows, columns)."""
        return self.grid.shape

    def shifted(self, k: int) -> GridSegment:
        """This segment with every character position moved by ``k``."""
        cells = np.where(self.cells >= 0, self.cells + k, -1).astype(np.int32)
        return GridSegment(self.role, self.pair, self.start + k, self.end + k, cells, self.grid)


@dataclass(frozen=True, eq=False)
class Prompt:
    """A task written as model input text, with the place of every grid and cell in it."""

    text: str
    """The final text: chat-templated when a chat template was used, gold answer appended when included."""
    answer: str | None
    """The encoded gold test output when it is known (whether or not it is in ``text``)."""
    segments: tuple[GridSegment, ...]
    """Every grid in ``text``, in order."""
    task_id: str
    test_index: int
    encoder: GridEncoder
    chat: bool
    """True when the text was wrapped with the tokenizer's chat template."""
    answer_start: int | None = None
    """Where the gold answer begins in ``text`` (None when it was not included)."""
    generation_start: int | None = None
    """Where a model's generated text begins in ``text`` (see ``with_generation``)."""

    @property
    def prefix(self) -> str:
        """The text the model is given: everything before an included answer or generation."""
        cut = self.answer_start if self.answer_start is not None else self.generation_start
        return self.text if cut is None else self.text[:cut]

    def segment(self, role: Role | str, pair: int | None = None) -> GridSegment:
        """The first segment with this role (and pair index, when given)."""
        role = Role.parse(role)
        for s in self.segments:
            if s.role is role and (pair is None or s.pair == pair):
                return s
        raise KeyError(f"no {role.value} grid" + (f" for pair {pair}" if pair is not None else ""))

    def answer_token_count(self, tokenizer: Any = None, cell_map: TokenCellMap | None = None) -> int:
        """Tokens of the included gold answer (those starting at ``answer_start``); 0 when not included.

        Pass the prompt's ``cell_map`` when you have it, to avoid tokenizing the text again.
        """
        if self.answer_start is None:
            return 0
        if cell_map is None:
            if tokenizer is None:
                raise PromptError("answer_token_count needs a tokenizer or the prompt's token-cell map")
            cell_map = token_cell_map(self, tokenizer)
        # A token straddling the boundary began in the prompt, so it counts as prompt.
        return int((cell_map.offsets[:, 0] >= self.answer_start).sum())

    def with_generation(self, response: str, *, which: Literal["first", "last"] = "first") -> Prompt:
        """This prompt followed by a model's response, with the response's grid as a GENERATED segment."""
        if self.answer_start is not None or self.generation_start is not None:
            raise PromptError("the prompt already ends with an answer; build it with include_answer=False")
        base = len(self.text)
        segs = list(self.segments)
        res = parse_response(response, self.encoder, which=which)
        if res.ok and res.span is not None:
            assert res.grid is not None
            h, w = res.grid.shape
            if res.exact:
                cells = self.encoder.core.encode_with_spans(res.grid)[1] + (base + res.span[0])
            else:  # a leniently parsed grid: its place is known, its cells' are not
                cells = np.full((h, w, 2), -1, dtype=np.int32)
            segs.append(
                GridSegment(
                    Role.GENERATED,
                    self.test_index,
                    base + res.span[0],
                    base + res.span[1],
                    cells.astype(np.int32),
                    res.grid,
                )
            )
        return Prompt(
            self.text + response,
            self.answer,
            tuple(segs),
            self.task_id,
            self.test_index,
            self.encoder,
            self.chat,
            None,
            base,
        )


class _Builder:
    """Accumulates text and records where each grid and cell lands."""

    def __init__(self, encoder: GridEncoder):
        self.encoder = encoder
        self.parts: list[str] = []
        self.pos = 0
        self.segments: list[GridSegment] = []

    def add(self, s: str) -> None:
        self.parts.append(s)
        self.pos += len(s)

    def add_grid(self, grid: Grid, role: Role, pair: int) -> None:
        text, spans = self.encoder.encode_with_spans(grid)
        self.segments.append(GridSegment(role, pair, self.pos, self.pos + len(text), spans + self.pos, grid))
        self.add(text)

    def render(
        self, part: str, template: str, values: dict[str, Any], grids: dict[str, tuple[Grid, Role, int]]
    ) -> None:
        for literal, name, spec in _parse_template(part, template):
            self.add(literal)
            if name is None:
                continue
            if name in grids:
                self.add_grid(*grids[name])
            else:
                self.add(format(values[name], spec))

    def text(self) -> str:
        return "".join(self.parts)


def _has_chat_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def _wrap_chat(content: str, tokenizer: Any, system: str | None) -> tuple[str, int]:
    """Apply the chat template to ``content`` as a user message; return the text and the content's offset."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": content})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # template errors come in many kinds; name what failed
        raise PromptError(f"the tokenizer's chat template failed: {e}") from e
    if not isinstance(text, str):
        raise PromptError(f"apply_chat_template returned {type(text).__name__}, expected text")
    pos = text.find(content)
    if pos >= 0:
        return text, pos
    # Some templates trim message content; the grids are never in the trimmed whitespace.
    stripped = content.strip()
    pos = text.find(stripped)
    if pos < 0:
        raise PromptError(
            "the chat template changed the message text, so grid positions cannot be kept; "
            "build the prompt with chat=False"
        )
    return text, pos - (len(content) - len(content.lstrip()))


def build_prompt(
    task: Task,
    encoder: GridEncoder | str = "minimal",
    tokenizer: Any = None,
    test_index: int = 0,
    include_answer: bool = False,
    template: PromptTemplate | str = "default",
    *,
    chat: bool | None = None,
) -> Prompt:
    """Write ``task`` (train pairs, then test input ``test_index``) as a prompt with every grid located.

    With a tokenizer that has a chat template (and ``chat`` not False) the text is wrapped as a user
    message with the generation prompt added; ``include_answer`` appends the gold test output after it as
    the assistant's text (teacher forcing), or after the test part when there is no chat template.
    """
    enc = get_encoder(encoder)
    tpl = get_template(template)
    if not 0 <= test_index < len(task.test):
        raise PromptError(
            f"task {task.id}: test index {test_index} is out of range (it has {len(task.test)})"
        )
    if chat is None:
        chat = _has_chat_template(tokenizer)
    elif chat and not _has_chat_template(tokenizer):
        raise PromptError("chat=True needs a tokenizer with a chat template")
    test = task.test[test_index]
    if include_answer and test.output is None:
        raise PromptError(f"task {task.id}: test[{test_index}] has no known output, so it cannot be included")

    b = _Builder(enc)
    n_train = len(task.train)
    b.render("instruction", tpl.instruction, {"n_train": n_train}, {})
    for i, p in enumerate(task.train):
        assert p.output is not None  # Task validation guarantees train outputs
        b.render(
            "example",
            tpl.example,
            {"n": i + 1, "i": i, "n_train": n_train},
            {"input": (p.input, Role.TRAIN_INPUT, i), "output": (p.output, Role.TRAIN_OUTPUT, i)},
        )
    b.render(
        "test",
        tpl.test,
        {"n": test_index + 1, "i": test_index, "n_train": n_train},
        {"input": (test.input, Role.TEST_INPUT, test_index)},
    )
    text = b.text()
    segments = b.segments
    if chat:
        text, shift = _wrap_chat(text, tokenizer, tpl.system)
        segments = [s.shifted(shift) for s in segments]

    answer = None
    answer_start = None
    if test.output is not None:
        answer, spans = enc.encode_with_spans(test.output)
        if include_answer:
            answer_start = len(text)
            segments.append(
                GridSegment(
                    Role.ANSWER,
                    test_index,
                    answer_start,
                    answer_start + len(answer),
                    spans + answer_start,
                    test.output,
                )
            )
            text += answer
    return Prompt(text, answer, tuple(segments), task.id, test_index, enc, chat, answer_start)


# ------------------------------------------------------------------------------------ response parsing


@dataclass(frozen=True, eq=False)
class ParseResult:
    """The grid found in a model's response, or why none was found."""

    grid: Grid | None
    ok: bool
    error: str = ""
    span: tuple[int, int] | None = None
    """[start, end) of the grid's text in the response (fence and surrounding text excluded)."""
    exact: bool = False
    """True when that text is exactly what the encoder writes for the grid (so cell positions are known)."""


# End-of-turn markers: the answer ends at the first one. Other special tokens are blanked out.
_END = re.compile(r"<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<\|end\|>|</s>|<eos>|<end_of_turn>")
_NOISE = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?s>|<bos>|<pad>|<start_of_turn>(?:model|user)?|\[/?INST\]")
# A grid-like line: a "3x4" header, or digits and separators with an optional "1:" / "1." / "1)" row label.
_GRID_LINE = re.compile(
    r"[ \t]*(?:\d+[ \t]*[xX×][ \t]*\d+|(?:\d+[:.)])?[\d ,;|\t\[\]]*\d[\d ,;|\t\[\]]*)[ \t]*,?[ \t]*"
)
_HEADER_LINE = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")
_ROW_NUMBER = re.compile(r"\s*\d+[ \t:.)]+")


def _clean(text: str) -> str:
    """Cut at the first end-of-turn marker after some content; blank other special tokens (same length)."""
    cut = len(text)
    for m in _END.finditer(text):
        if _NOISE.sub("", text[: m.start()]).strip():
            cut = m.start()
            break
    text = text[:cut].replace("\r", " ")
    return _NOISE.sub(lambda m: " " * len(m.group(0)), text)


def _blocks(text: str) -> list[tuple[int, int]]:
    """Character ranges of maximal runs of grid-like lines (stripped of surrounding whitespace)."""
    out: list[tuple[int, int]] = []
    start = end = None
    pos = 0
    for line in text.split("\n"):
        if line.strip() and _GRID_LINE.fullmatch(line):
            lo = pos + (len(line) - len(line.lstrip()))
            if start is None:
                start = lo
            end = pos + len(line.rstrip())
        elif start is not None:
            out.append((start, end))  # type: ignore[arg-type]
            start = None
        pos += len(line) + 1
    if start is not None:
        out.append((start, end))  # type: ignore[arg-type]
    return out


def _lenient(block: str, row_numbers: bool) -> Grid:
    """Parse rows of digits with any separators, an optional shape header line and optional row numbers."""
    lines = [ln for ln in block.split("\n") if ln.strip()]
    shape = None
    m = _HEADER_LINE.fullmatch(lines[0])
    if m is not None and len(lines) > 1:
        shape = (int(m.group(1)), int(m.group(2)))
        lines = lines[1:]
    rows = []
    for r, line in enumerate(lines):
        if row_numbers:
            line = _ROW_NUMBER.sub("", line, count=1)
        line = line.replace("[", " ").replace("]", " ").strip().rstrip(",")
        items = [s for s in re.split(r"[ ,;|\t]+", line) if s]
        if len(items) == 1:
            items = list(items[0])
        if any(len(s) != 1 for s in items):
            raise DecodeError(f"row {r} ({line[:40]!r}) mixes multi-digit numbers with cells")
        rows.append([int(s) for s in items])
    try:
        grid = as_grid(rows)
    except TaskFormatError as e:
        raise DecodeError(e.rule) from None
    if shape is not None and grid.shape != shape:
        raise DecodeError(
            f"the header says {shape[0]}x{shape[1]} but the grid is {grid.shape[0]}x{grid.shape[1]}"
        )
    return grid


def _has_row_numbers(enc: GridEncoder) -> bool:
    while True:
        if isinstance(enc, RowNumbers):
            return True
        inner = getattr(enc, "inner", None)
        if inner is None:
            return False
        enc = inner


def parse_response(
    text: str, encoder: GridEncoder | str = "minimal", *, which: Literal["first", "last"] = "first"
) -> ParseResult:
    """Find the grid in a model's response; never raises on bad text (``ok`` False and ``error`` say why).

    The response is cut at the first end-of-turn marker and other special tokens are ignored. Candidate
    blocks are maximal runs of lines made only of digits and separators (or a ``3x4`` header); code-fence
    lines and prose end a block. ``which`` picks the first plausible block (the default: a model answering
    after ``Output:`` writes the grid first and may ramble after it) or the last (models that reason
    before answering). A block is decoded with the encoder first (``exact`` when it is byte-for-byte the
    encoder's text), then leniently: any separators, an optional header and, for row-number encoders,
    row numbers.
    """
    try:
        enc = get_encoder(encoder)
    except ArcscopeError as e:
        return ParseResult(None, False, str(e))
    if not isinstance(text, str):
        return ParseResult(None, False, f"expected response text, got {type(text).__name__}")
    clean = _clean(text)
    if not clean.strip():
        return ParseResult(None, False, "empty response")
    blocks = _blocks(clean)
    if not blocks:
        return ParseResult(None, False, "no grid-like lines (rows of digits) in the response")
    if which == "last":
        blocks = blocks[::-1]
    elif which != "first":
        return ParseResult(None, False, f"which must be 'first' or 'last', got {which!r}")
    core = enc.core
    row_numbers = _has_row_numbers(core)
    first_error = ""
    for lo, hi in blocks:
        block = clean[lo:hi]
        try:
            grid = core.decode(block)
            return ParseResult(grid, True, "", (lo, hi), core.encode(grid) == block)
        except DecodeError as e:
            strict_error = str(e)
        try:
            return ParseResult(_lenient(block, row_numbers), True, "", (lo, hi), False)
        except DecodeError:
            first_error = first_error or strict_error
    n = len(blocks)
    return ParseResult(
        None, False, f"{n} grid-like block{'s' if n > 1 else ''} found but none decodes: {first_error}"
    )


# ------------------------------------------------------------------------------------ token-to-cell map


@dataclass(frozen=True, eq=False)
class TokenCellMap:
    """Per token of a tokenized prompt: which grid, pair, role, row and column it encodes (-1: none)."""

    input_ids: np.ndarray
    """int32 ``[n]`` token ids."""
    offsets: np.ndarray
    """int32 ``[n, 2]`` each token's [start, end) in the prompt text."""
    segment: np.ndarray
    """int16: index into ``Prompt.segments``, -1 outside every grid."""
    pair: np.ndarray
    """int16: pair index of the token's grid (within train or test), -1 outside every grid."""
    role: np.ndarray
    """int8 role codes (``Role.from_code``), -1 (``Role.NONE``) outside every grid."""
    row: np.ndarray
    """int8: the cell's row when the token encodes exactly one cell, else -1."""
    col: np.ndarray
    """int8: the cell's column when the token encodes exactly one cell, else -1."""
    n_cells: np.ndarray
    """int8: how many cells' text the token touches (2+: a multi-cell merge)."""
    segment_shapes: tuple[tuple[int, int], ...] = field(default=())
    """(rows, columns) of each segment's grid."""

    def __len__(self) -> int:
        return len(self.input_ids)

    def mask(
        self, role: Role | str | int | Iterable[Role | str | int] | None = None, *, cells_only: bool = False
    ) -> np.ndarray:
        """Boolean mask of tokens with the given role(s) (any role when None), optionally cells only."""
        m = np.ones(len(self), dtype=bool)
        if role is not None:
            roles = [role] if isinstance(role, (Role, str, int, np.integer)) else list(role)
            m = np.isin(self.role, [Role.parse(r).code for r in roles])
        if cells_only:
            m &= self.row >= 0
        return m

    def cell_mask(self) -> np.ndarray:
        """Tokens that encode exactly one cell."""
        return self.row >= 0

    def multi_cell_mask(self) -> np.ndarray:
        """Tokens that merge two or more cells (never attributed to a cell)."""
        return self.n_cells > 1

    def cell_token_index(self, segment: int) -> np.ndarray:
        """int32 ``[h, w]``: the token that encodes each cell of a segment, -1 where none does alone."""
        h, w = self.segment_shapes[segment]
        out = np.full((h, w), -1, dtype=np.int32)
        idx = np.flatnonzero((self.segment == segment) & (self.row >= 0))
        out[self.row[idx], self.col[idx]] = idx
        return out

    def roles(self) -> list[Role]:
        """Per-token roles as Role members."""
        return [_ROLES_BY_CODE[int(c)] for c in self.role]

    def columns(self) -> dict[str, np.ndarray]:
        """The per-token arrays by name, with ``position``, ready for a table."""
        return {
            "position": np.arange(len(self), dtype=np.int32),
            "token_id": self.input_ids,
            "start": self.offsets[:, 0],
            "end": self.offsets[:, 1],
            "segment": self.segment,
            "pair": self.pair,
            "role": self.role,
            "row": self.row,
            "col": self.col,
            "n_cells": self.n_cells,
        }

    @classmethod
    def from_offsets(
        cls,
        prompt: Prompt,
        input_ids: Sequence[int] | np.ndarray,
        offsets: Sequence[Sequence[int]] | np.ndarray,
    ) -> TokenCellMap:
        """Build the map from token ids and their character offsets in ``prompt.text``."""
        ids = _int_array(input_ids, np.int32).reshape(-1)
        off = _int_array(offsets, np.int64, pairs=True).reshape(-1, 2)
        if len(ids) != len(off):
            raise PromptError(f"{len(ids)} token ids but {len(off)} offsets")
        n_chars = len(prompt.text)
        if len(off) and (off.min() < 0 or off.max() > n_chars):
            raise PromptError("token offsets fall outside the prompt text: tokenize prompt.text itself")
        a, b = off[:, 0], off[:, 1]
        n = len(ids)
        segs = prompt.segments

        # Which grid each token falls in: the last segment starting before its end that ends after its start.
        seg_lo = np.array([s.start for s in segs], dtype=np.int64)
        seg_hi = np.array([s.end for s in segs], dtype=np.int64)
        j = np.searchsorted(seg_lo, b - 1, side="right") - 1
        jj = np.clip(j, 0, max(len(segs) - 1, 0))
        in_seg = (b > a) & (j >= 0) & (seg_hi[jj] > a) if len(segs) else np.zeros(n, dtype=bool)
        segment = np.where(in_seg, j, -1)
        seg_pair = np.array([s.pair for s in segs] + [-1], dtype=np.int16)
        seg_role = np.array([s.role.code for s in segs] + [-1], dtype=np.int8)

        # All known cells in text order, with their segment, row and column.
        c_lo, c_hi, c_seg, c_row, c_col = [], [], [], [], []
        for k, s in enumerate(segs):
            h, w = s.shape
            lo, hi = s.cells[..., 0].ravel(), s.cells[..., 1].ravel()
            keep = lo >= 0
            c_lo.append(lo[keep])
            c_hi.append(hi[keep])
            c_seg.append(np.full(int(keep.sum()), k, dtype=np.int64))
            rr, cc = np.divmod(np.arange(h * w), w)
            c_row.append(rr[keep])
            c_col.append(cc[keep])
        cat = (lambda xs: np.concatenate(xs).astype(np.int64)) if segs else (lambda xs: np.zeros(0, np.int64))
        c_lo, c_hi, c_seg, c_row, c_col = map(cat, (c_lo, c_hi, c_seg, c_row, c_col))
        order = np.argsort(c_lo, kind="stable")
        c_lo, c_hi, c_seg, c_row, c_col = (x[order] for x in (c_lo, c_hi, c_seg, c_row, c_col))
        if len(c_lo) > 1 and np.any(c_lo[1:] < c_hi[:-1]):
            raise PromptError("cell spans overlap: the encoder wrote inconsistent spans")

        # Characters a cell token may absorb: whitespace anywhere, cell separators inside grids.
        chars = np.frombuffer(prompt.text.encode("utf-32-le"), dtype=np.uint32)
        free = np.isin(chars, [9, 10, 11, 12, 13, 32])
        seps = [ord(ch) for ch in set(prompt.encoder.separators)]
        if seps and len(segs):
            inside = np.zeros(n_chars + 1, dtype=np.int32)
            # Starts are unique and ends are unique (spans are disjoint), so plain fancy += is exact.
            inside[seg_lo] += 1
            inside[seg_hi] -= 1
            free |= np.isin(chars, seps) & (np.cumsum(inside)[:-1] > 0)
        in_cell = np.zeros(n_chars + 1, dtype=np.int32)
        in_cell[c_lo] += 1
        in_cell[c_hi] -= 1
        blocked = ~free & ~(np.cumsum(in_cell)[:-1] > 0)
        n_blocked = np.concatenate([[0], np.cumsum(blocked)])

        # Cells overlapping [a, b): those with end > a and start < b (cells are disjoint and sorted).
        first = np.searchsorted(c_hi, a, side="right")
        stop = np.searchsorted(c_lo, b, side="left")
        n_over = np.clip(stop - first, 0, None)
        n_over[b <= a] = 0
        k = np.clip(first, 0, max(len(c_lo) - 1, 0))
        if len(c_lo):
            whole = (c_lo[k] >= a) & (c_hi[k] <= b)
            clean = (n_over == 1) & whole & ((n_blocked[b] - n_blocked[a]) == 0)
        else:
            clean = np.zeros(n, dtype=bool)
        row = np.where(clean, c_row[k] if len(c_lo) else -1, -1)
        col = np.where(clean, c_col[k] if len(c_lo) else -1, -1)
        return cls(
            input_ids=ids,
            offsets=off.astype(np.int32),
            segment=segment.astype(np.int16),
            pair=seg_pair[segment],
            role=seg_role[segment],
            row=row.astype(np.int8),
            col=col.astype(np.int8),
            n_cells=np.minimum(n_over, 127).astype(np.int8),
            segment_shapes=tuple(s.shape for s in segs),
        )


def _int_array(x: Any, dtype: type, pairs: bool = False) -> np.ndarray:
    """A numpy int array from an array or a (nested) list; fromiter is several times faster on lists."""
    if isinstance(x, np.ndarray) or not isinstance(x, (list, tuple)):
        return np.asarray(x, dtype=dtype)
    if pairs:
        return np.fromiter(itertools.chain.from_iterable(x), dtype=dtype, count=2 * len(x))
    return np.fromiter(x, dtype=dtype, count=len(x))


def _check_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise PromptError(
            f"the token-to-cell map needs a fast tokenizer (offset mapping); got {type(tokenizer).__name__}. "
            "Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )


def token_cell_map(prompt: Prompt, tokenizer: Any, *, add_special_tokens: bool | None = None) -> TokenCellMap:
    """Tokenize ``prompt.text`` with a fast tokenizer and map every token to its grid cell (or none).

    ``add_special_tokens`` defaults to False for chat-templated prompts (the template already wrote them)
    and True otherwise; special tokens the tokenizer adds have empty offsets and map to nothing.
    """
    return token_cell_maps([prompt], tokenizer, add_special_tokens=add_special_tokens)[0]


def token_cell_maps(
    prompts: Sequence[Prompt], tokenizer: Any, *, add_special_tokens: bool | None = None
) -> list[TokenCellMap]:
    """Batched ``token_cell_map``: one fast-tokenizer call per group of prompts."""
    _check_fast(tokenizer)
    out: list[TokenCellMap | None] = [None] * len(prompts)
    groups: dict[bool, list[int]] = {}
    for i, p in enumerate(prompts):
        ast = (not p.chat) if add_special_tokens is None else add_special_tokens
        groups.setdefault(ast, []).append(i)
    for ast, idx in groups.items():
        enc = tokenizer([prompts[i].text for i in idx], add_special_tokens=ast, return_offsets_mapping=True)
        for i, ids, offs in zip(idx, enc["input_ids"], enc["offset_mapping"], strict=True):
            out[i] = TokenCellMap.from_offsets(prompts[i], ids, offs)
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------- generated tokens

_REPLACEMENT = "\ufffd"
# Tokens of context decoded before each token, so that decoders that treat a sequence's first token
# specially (SentencePiece's leading-space strip) and characters split over byte tokens come out right.
_DECODE_WINDOW = 6


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """The exact text of ``ids``: special tokens kept, no clean-up of spaces."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def decode_offsets(tokenizer: Any, ids: Sequence[int] | np.ndarray) -> tuple[str, np.ndarray]:
    """The text that token ``ids`` spell and each token's [start, end) in it (int32 ``[n, 2]``).

    The text is ``tokenizer.decode(ids)`` with special tokens kept and no space clean-up, so it is what the
    model wrote, token for token. A token's span is the text it adds after the tokens before it; a token
    ending inside a multi-byte character adds nothing (empty span) and the token that completes the
    character gets it; a token whose text is empty (some special tokens) has an empty span.
    """
    ids = [int(t) for t in np.asarray(ids, dtype=np.int64).reshape(-1)]
    text = _decode(tokenizer, ids)
    n = len(ids)
    ends = np.zeros(n, dtype=np.int64)
    # Fast path: each token's text as the difference of two short decodes that share the same start.
    pos = 0
    ok = True
    for k in range(n):
        s = max(0, k - _DECODE_WINDOW)
        before = _decode(tokenizer, ids[s:k]).rstrip(_REPLACEMENT)
        after = _decode(tokenizer, ids[s : k + 1]).rstrip(_REPLACEMENT)
        if not after.startswith(before):
            ok = False
            break
        piece = after[len(before) :]
        if text[pos : pos + len(piece)] != piece:
            ok = False
            break
        pos += len(piece)
        ends[k] = pos
    if ok and pos != len(text):
        # only an unfinished character at the very end (the text ends in replacement characters) is left
        ok = text[pos:].strip(_REPLACEMENT) == "" and n > 0
        if ok:
            ends[-1] = len(text)
    if not ok:
        # Exact fallback, quadratic in length: how far each prefix's decoding agrees with the whole text.
        prefixes = tokenizer.batch_decode(
            [ids[: k + 1] for k in range(n)], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        for k, p in enumerate(prefixes):
            m = min(len(p), len(text))
            a = np.frombuffer(p[:m].encode("utf-32-le"), dtype=np.uint32)
            b = np.frombuffer(text[:m].encode("utf-32-le"), dtype=np.uint32)
            diff = np.flatnonzero(a != b)
            ends[k] = int(diff[0]) if len(diff) else m
        ends = np.maximum.accumulate(ends) if n else ends
        if n:
            ends[-1] = len(text)
    starts = np.concatenate([[0], ends[:-1]]) if n else ends
    return text, np.stack([starts, ends], axis=1).astype(np.int32).reshape(-1, 2)


def generated_cell_map(
    prompt: Prompt,
    tokenizer: Any,
    generated_ids: Sequence[int] | np.ndarray,
    *,
    prompt_map: TokenCellMap | None = None,
    which: Literal["first", "last"] = "first",
) -> TokenCellMap:
    """The token-to-cell map of ``prompt`` followed by the tokens a model generated, by the same rules.

    The generated ids are decoded as they are (never re-tokenized: a model may write token sequences the
    tokenizer would not produce), the response's grid is parsed as :meth:`Prompt.with_generation` does
    (a GENERATED segment) and every generated token is placed by its own decoded span, so a generated token
    encoding one cell gets that cell's row and column, and one spanning two cells is multi-cell. A
    response without a grid, or one parsed only leniently (cell positions unknown), maps no generated token
    to a cell. ``prompt_map`` is the prompt's own map, when at hand, to skip tokenizing it again. Offsets
    refer to ``prompt.with_generation(text)`` where ``text`` is :func:`decode_offsets`' text.
    """
    if prompt_map is None:
        prompt_map = token_cell_map(prompt, tokenizer)
    elif len(prompt_map) and int(prompt_map.offsets[:, 1].max()) > len(prompt.text):
        raise PromptError("prompt_map does not belong to this prompt (offsets fall outside its text)")
    gen = np.asarray(generated_ids, dtype=np.int64).reshape(-1)
    response, offsets = decode_offsets(tokenizer, gen)
    full = prompt.with_generation(response, which=which)
    ids = np.concatenate([np.asarray(prompt_map.input_ids, dtype=np.int64), gen])
    offs = np.concatenate([np.asarray(prompt_map.offsets, dtype=np.int64), offsets + len(prompt.text)])
    return TokenCellMap.from_offsets(full, ids, offs.reshape(-1, 2))
