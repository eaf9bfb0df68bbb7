"""Sudoku: a generator of puzzles with unique solutions, a solver, HRM's augmentations, the CSV reader, the builder.

Boards are ``uint8`` arrays ``(n, n)`` with 0 for a blank and 1..n for digits; ``n`` is 4 (2x2 boxes), 6 (2x3
boxes: 2 rows by 3 columns) or 9 (3x3 boxes). Tokens follow sapientinc/HRM ``build_sudoku_dataset.py``:
``PAD`` = 0, blank = 1, digit ``d`` = ``d + 1`` (vocabulary ``n + 2``, 11 for 9x9), labels hold the solution.

Difficulty has two knobs. ``givens`` is the number of clues left (fewer is harder); the generator removes
clues in random order while the solution stays unique, and gives up on a board that becomes minimal (no
clue can go) before reaching ``givens``, starting again from a new board. ``min_guesses`` asks for search
effort: the puzzle is kept only when the reference solver (most-constrained cell first, no other
inference) needs at least that many branching guesses.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.config import make_config
from arcscope.errors import ArcscopeError
from arcscope.progress import ProgressFn, emit, relabel
from arcscope.puzzles.config import SudokuBuildConfig
from arcscope.puzzles.layout import BLANK, DatasetWriter

BOXES: dict[int, tuple[int, int]] = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
"""Board side -> (box rows, box columns)."""

DEFAULT_GIVENS: dict[int, int] = {4: 6, 6: 14, 9: 28}
"""Default number of clues per board side."""

__all__ = [
    "BOXES",
    "DEFAULT_GIVENS",
    "SudokuError",
    "Solution",
    "solve",
    "count_solutions",
    "is_solution",
    "random_solution",
    "generate",
    "shuffle_sudoku",
    "read_sudoku_csv",
    "build_sudoku",
    "encode_board",
    "decode_board",
]


class SudokuError(ArcscopeError, ValueError):
    """A board, CSV file or generator setting breaks the Sudoku rules."""


def _box(n: int) -> tuple[int, int]:
    if n not in BOXES:
        raise SudokuError(f"Sudoku boards are 4x4, 6x6 or 9x9, not {n}x{n}")
    return BOXES[n]


def _board(board: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(board)
    if arr.ndim == 1:
        side = int(round(len(arr) ** 0.5))
        if side * side != len(arr):
            raise SudokuError(f"a flat board must have a square number of cells, got {len(arr)}")
        arr = arr.reshape(side, side)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise SudokuError(f"a board is a square 2-d array, got shape {arr.shape}")
    side = arr.shape[0]
    _box(side)
    if n is not None and side != n:
        raise SudokuError(f"expected a {n}x{n} board, got {side}x{side}")
    if arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > side:
        raise SudokuError(f"board cells must be integers 0 (blank) .. {side}")
    return arr.astype(np.uint8)


# ------------------------------------------------------------------------------------------------- solver


@dataclass
class Solution:
    """What the solver found: up to ``limit`` solutions and the effort it took."""

    solutions: list[np.ndarray]
    guesses: int
    """Branching points: cells tried with more than one candidate."""
    nodes: int
    """Cells filled in total over the whole search."""

    @property
    def unique(self) -> bool:
        """Exactly one solution."""
        return len(self.solutions) == 1


def _units(n: int) -> tuple[list[int], list[int]]:
    br, bc = _box(n)
    rows = [i // n for i in range(n * n)]
    boxes = [(i // n) // br * (n // bc) + (i % n) // bc for i in range(n * n)]
    return rows, boxes


def solve(board: Any, limit: int = 2) -> Solution:
    """Search for up to ``limit`` solutions (most-constrained cell first); a board breaking the rules has none."""
    b = _board(board)
    n = b.shape[0]
    rows_of, boxes_of = _units(n)
    cells = [int(x) for x in b.reshape(-1)]
    full = (1 << (n + 1)) - 2  # bits 1..n
    row_m, col_m, box_m = [0] * n, [0] * n, [0] * n
    for i, v in enumerate(cells):
        if v:
            bit = 1 << v
            r, c, x = rows_of[i], i % n, boxes_of[i]
            if (row_m[r] | col_m[c] | box_m[x]) & bit:
                return Solution([], 0, 0)
            row_m[r] |= bit
            col_m[c] |= bit
            box_m[x] |= bit
    empties = [i for i, v in enumerate(cells) if v == 0]
    found: list[np.ndarray] = []
    stats = [0, 0]  # guesses, nodes

    def search(todo: list[int]) -> bool:
        if not todo:
            found.append(np.array(cells, dtype=np.uint8).reshape(n, n))
            return len(found) >= limit
        best, best_opts, best_count = -1, 0, n + 1
        for j, i in enumerate(todo):
            opts = full & ~(row_m[rows_of[i]] | col_m[i % n] | box_m[boxes_of[i]])
            cnt = opts.bit_count()
            if cnt < best_count:
                best, best_opts, best_count = j, opts, cnt
                if cnt <= 1:
                    break
        if best_count == 0:
            return False
        if best_count > 1:
            stats[0] += 1
        i = todo[best]
        rest = todo[:best] + todo[best + 1 :]
        r, c, x = rows_of[i], i % n, boxes_of[i]
        opts = best_opts
        while opts:
            bit = opts & -opts
            opts ^= bit
            stats[1] += 1
            cells[i] = bit.bit_length() - 1
            row_m[r] |= bit
            col_m[c] |= bit
            box_m[x] |= bit
            stop = search(rest)
            row_m[r] ^= bit
            col_m[c] ^= bit
            box_m[x] ^= bit
            cells[i] = 0
            if stop:
                return True
        return False

    search(empties)
    return Solution(found, stats[0], stats[1])


def count_solutions(board: Any, limit: int = 2) -> int:
    """The number of solutions, counted up to ``limit``."""
    return len(solve(board, limit).solutions)


def is_solution(grid: Any, puzzle: Any | None = None) -> bool:
    """True when ``grid`` is a full valid board (and agrees with every clue of ``puzzle`` when given)."""
    g = _board(grid)
    n = g.shape[0]
    br, bc = _box(n)
    want = set(range(1, n + 1))
    for k in range(n):
        if set(g[k].tolist()) != want or set(g[:, k].tolist()) != want:
            return False
    for r0 in range(0, n, br):
        for c0 in range(0, n, bc):
            if set(g[r0 : r0 + br, c0 : c0 + bc].reshape(-1).tolist()) != want:
                return False
    if puzzle is not None:
        p = _board(puzzle, n)
        if np.any((p != 0) & (p != g)):
            return False
    return True


def random_solution(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random full board: a randomised search from the empty board (a shuffled pattern if it runs long)."""
    br, bc = _box(n)
    sol = _random_fill(np.zeros((n, n), np.uint8), rng)
    if sol is None:  # pragma: no cover - the search from an empty board practically never runs out
        base = np.array(
            [[(bc * (r % br) + r // br + c) % n + 1 for c in range(n)] for r in range(n)], np.uint8
        )
        sol = _shuffle_one(base, rng)
    return sol


def _random_fill(partial: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    n = partial.shape[0]
    rows_of, boxes_of = _units(n)
    cells = [int(x) for x in partial.reshape(-1)]
    full = (1 << (n + 1)) - 2
    row_m, col_m, box_m = [0] * n, [0] * n, [0] * n
    for i, v in enumerate(cells):
        if v:
            bit = 1 << v
            row_m[rows_of[i]] |= bit
            col_m[i % n] |= bit
            box_m[boxes_of[i]] |= bit
    budget = [20000]

    def fill(todo: list[int]) -> bool:
        if not todo:
            return True
        budget[0] -= 1
        if budget[0] < 0:
            return False
        best, best_opts, best_count = -1, 0, n + 1
        for j, i in enumerate(todo):
            opts = full & ~(row_m[rows_of[i]] | col_m[i % n] | box_m[boxes_of[i]])
            cnt = opts.bit_count()
            if cnt < best_count:
                best, best_opts, best_count = j, opts, cnt
        if best_count == 0:
            return False
        i = todo[best]
        rest = todo[:best] + todo[best + 1 :]
        digits = [d for d in range(1, n + 1) if best_opts >> d & 1]
        r, c, x = rows_of[i], i % n, boxes_of[i]
        for d in rng.permutation(digits).tolist():
            bit = 1 << d
            cells[i] = d
            row_m[r] |= bit
            col_m[c] |= bit
            box_m[x] |= bit
            if fill(rest):
                return True
            row_m[r] ^= bit
            col_m[c] ^= bit
            box_m[x] ^= bit
            cells[i] = 0
        return False

    if not fill([i for i, v in enumerate(cells) if v == 0]):
        return None
    return np.array(cells, dtype=np.uint8).reshape(n, n)


def generate(
    n: int = 9,
    givens: int | None = None,
    *,
    seed: int | np.random.Generator = 0,
    min_guesses: int = 0,
    max_tries: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """One puzzle ``(board, solution)`` with exactly ``givens`` clues and a unique solution.

    See the module docstring for ``givens`` and ``min_guesses``. Raises :class:`SudokuError` when
    ``max_tries`` boards in a row could not reach the asked difficulty.
    """
    _box(n)
    givens = DEFAULT_GIVENS[n] if givens is None else int(givens)
    if not 0 < givens <= n * n:
        raise SudokuError(f"givens must be 1..{n * n} for a {n}x{n} board, got {givens}")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        sol = random_solution(n, rng)
        board = sol.copy()
        count = n * n
        for i in rng.permutation(n * n).tolist():
            if count <= givens:
                break
            r, c = divmod(i, n)
            keep = board[r, c]
            board[r, c] = 0
            if count_solutions(board, 2) == 1:
                count -= 1
            else:
                board[r, c] = keep
        if count != givens:
            continue
        if min_guesses and solve(board, 1).guesses < min_guesses:
            continue
        return board, sol
    raise SudokuError(
        f"could not make a {n}x{n} Sudoku with {givens} givens"
        + (f" needing >= {min_guesses} guesses" if min_guesses else "")
        + f" in {max_tries} tries; ask for more givens or fewer guesses"
    )


def shuffle_sudoku(
    board: np.ndarray, solution: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """HRM's Sudoku augmentation: relabel digits, maybe transpose, shuffle bands and stacks and the lines in them.

    Transposing needs square boxes, so 6x6 boards (2x3 boxes) are never transposed.
    """
    b, s = _board(board), _board(solution)
    n = b.shape[0]
    br, bc = _box(n)
    digits = np.concatenate([[0], rng.permutation(np.arange(1, n + 1))]).astype(np.uint8)
    transpose = br == bc and bool(rng.random() < 0.5)
    bands = rng.permutation(n // br)
    row_perm = np.concatenate([band * br + rng.permutation(br) for band in bands])
    stacks = rng.permutation(n // bc)
    col_perm = np.concatenate([st * bc + rng.permutation(bc) for st in stacks])

    def move(x: np.ndarray) -> np.ndarray:
        if transpose:
            x = x.T
        return digits[x[row_perm][:, col_perm]]

    return move(b), move(s)


def _shuffle_one(board: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return shuffle_sudoku(board, board, rng)[1]


# ------------------------------------------------------------------------------------------------- tokens


def encode_board(board: np.ndarray) -> np.ndarray:
    """Flat HRM tokens: blank -> 1, digit d -> d + 1."""
    return (np.asarray(board, dtype=np.uint8).reshape(-1) + 1).astype(np.uint8)


def decode_board(tokens: np.ndarray, n: int | None = None) -> np.ndarray:
    """The board behind flat tokens (PAD and blank both read as 0)."""
    t = np.asarray(tokens).reshape(-1).astype(np.int64)
    side = n or int(round(len(t) ** 0.5))
    return np.clip(t - 1, 0, None).astype(np.uint8).reshape(side, side)


# -------------------------------------------------------------------------------------------------- CSV


def read_sudoku_csv(
    path: str | os.PathLike[str],
    *,
    min_rating: int | None = None,
    limit: int | None = None,
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a sudoku-extreme CSV (``source,question,answer,rating``; ``.`` or ``0`` for a blank).

    Returns ``(boards [N, 9, 9], solutions [N, 9, 9], ratings [N])``. ``check`` verifies every answer is a
    valid solution of its question; a bad row raises :class:`SudokuError` naming the file and line.
    """
    src = str(path)
    boards, sols, ratings = [], [], []
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise SudokuError(f"{src}: cannot read ({e.strerror or e})") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:4]] != [
            "source",
            "question",
            "answer",
            "rating",
        ]:
            raise SudokuError(
                f"{src} line 1: expected the header 'source,question,answer,rating', got {header!r}"
            )
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 4:
                raise SudokuError(
                    f"{src} line {line}: expected 4 columns (source,question,answer,rating), got {len(row)}"
                )
            _, q, a, rating = row[:4]
            try:
                r = int(float(rating))
            except ValueError:
                raise SudokuError(f"{src} line {line}: rating {rating!r} is not a number") from None
            if min_rating is not None and r < min_rating:
                continue
            if len(q) != 81 or len(a) != 81:
                raise SudokuError(
                    f"{src} line {line}: question and answer must have 81 cells, got {len(q)} and {len(a)}"
                )
            if not all(c in ".0123456789" for c in q) or not all(c in "123456789" for c in a):
                raise SudokuError(f"{src} line {line}: question cells are '.' or 0..9 and answer cells 1..9")
            board = np.frombuffer(q.replace(".", "0").encode(), dtype=np.uint8).reshape(9, 9) - ord("0")
            sol = np.frombuffer(a.encode(), dtype=np.uint8).reshape(9, 9) - ord("0")
            if check and not is_solution(sol, board):
                raise SudokuError(f"{src} line {line}: the answer is not a valid solution of the question")
            boards.append(board)
            sols.append(sol)
            ratings.append(r)
            if limit is not None and len(boards) >= limit:
                break
    if not boards:
        raise SudokuError(
            f"{src}: no puzzles" + (f" with rating >= {min_rating}" if min_rating is not None else "")
        )
    return np.stack(boards), np.stack(sols), np.asarray(ratings, dtype=np.int64)


# ------------------------------------------------------------------------------------------------ builder


def generate_many(
    count: int,
    n: int = 9,
    givens: int | None = None,
    *,
    seed: int = 0,
    min_guesses: int = 0,
    exclude: set[bytes] | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct generated puzzles ``(boards [count, n, n], solutions)``, none of them in ``exclude``."""
    rng = np.random.default_rng(seed)
    seen = set(exclude or ())
    boards, sols = [], []
    while len(boards) < count:
        b, s = generate(n, givens, seed=rng, min_guesses=min_guesses)
        key = b.tobytes()
        if key in seen:
            continue
        seen.add(key)
        boards.append(b)
        sols.append(s)
        emit(progress, "puzzles", len(boards), count)
    if not boards:
        return np.zeros((0, n, n), np.uint8), np.zeros((0, n, n), np.uint8)
    return np.stack(boards), np.stack(sols)


def build_sudoku(
    out: str | os.PathLike[str],
    config: SudokuBuildConfig | dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Build a Sudoku dataset in the HRM layout, generated or read from sudoku-extreme CSV files.

    With ``train_csv``/``test_csv`` the puzzles come from those files (``train`` then subsamples the train
    file when smaller than it, as HRM's ``--subsample-size``); otherwise ``train`` and ``test`` distinct
    puzzles are generated (test puzzles never repeat a train puzzle). Each train puzzle gets ``num_aug``
    HRM augmentations in its group; every puzzle uses the blank identifier 0, as in HRM. ``config`` and
    keyword ``settings`` are :class:`~arcscope.puzzles.config.SudokuBuildConfig` fields.
    """
    cfg = make_config(SudokuBuildConfig, config, settings)
    n, train, test, givens, min_guesses = cfg.n, cfg.train, cfg.test, cfg.givens, cfg.min_guesses
    num_aug, seed, min_rating = cfg.num_aug, cfg.seed, cfg.min_rating
    train_csv, test_csv = cfg.train_csv, cfg.test_csv
    rng = np.random.default_rng(seed)
    if (train_csv is None) != (test_csv is None) and train_csv is None:
        raise SudokuError("give --train-csv together with --test-csv, or neither to generate puzzles")
    source: dict[str, Any]
    if train_csv is not None:
        tb, ts, _ = read_sudoku_csv(train_csv, min_rating=min_rating)
        if train and train < len(tb):
            pick = np.sort(rng.choice(len(tb), size=train, replace=False))
            tb, ts = tb[pick], ts[pick]
        eb, es, _ = read_sudoku_csv(test_csv, min_rating=min_rating)  # type: ignore[arg-type]
        if test and test < len(eb):
            pick = np.sort(rng.choice(len(eb), size=test, replace=False))
            eb, es = eb[pick], es[pick]
        n = 9
        source = {"train_csv": str(train_csv), "test_csv": str(test_csv), "min_rating": min_rating}
    else:
        _box(n)
        g = DEFAULT_GIVENS[n] if givens is None else givens
        tb, ts = generate_many(
            train,
            n,
            g,
            seed=int(rng.integers(2**63)),
            min_guesses=min_guesses,
            progress=relabel(progress, "train puzzles"),
        )
        eb, es = generate_many(
            test,
            n,
            g,
            seed=int(rng.integers(2**63)),
            min_guesses=min_guesses,
            exclude={b.tobytes() for b in tb},
            progress=relabel(progress, "test puzzles"),
        )
        source = {"generated": True, "givens": g, "min_guesses": min_guesses}
    with DatasetWriter(out, seq_len=n * n, vocab_size=n + 2, overwrite=overwrite) as writer:
        for split, boards, sols, augs in (("train", tb, ts, num_aug), ("test", eb, es, 0)):
            w = writer.split(split)
            for b, s in zip(boards, sols, strict=True):
                group = [(0, encode_board(b)[None], encode_board(s)[None])]
                for _ in range(augs):
                    ab, asol = shuffle_sudoku(b, s, rng)
                    group.append((0, encode_board(ab)[None], encode_board(asol)[None]))
                w.add_group(group)
        info = {
            "kind": "sudoku",
            "format": "hrm",
            "n": n,
            "box": list(BOXES[n]),
            "seed": seed,
            "num_aug": num_aug,
            "train": int(len(tb)),
            "test": int(len(eb)),
            "tokens": {"pad": 0, "blank": 1, "digit_offset": 1},
            **source,
        }
        # HRM writes mean_puzzle_examples=1 for Sudoku (one example per puzzle).
        writer.finish([BLANK], info, mean_puzzle_examples={"train": 1.0, "test": 1.0})
    return {**info, "path": str(Path(out))}
