"""Mazes: a generator with start, goal and the shortest path as the label, the maze CSV reader, the builder.

The text form is HRM's (``sapientinc/maze-30x30-hard-1k``): one character per cell, ``#`` wall, space open,
``S`` start, ``G`` goal, ``o`` a cell of the shortest path (answers only). Tokens are the 1-based position
in :data:`CHARSET` (``PAD`` = 0, ``#`` = 1, space = 2, ``S`` = 3, ``G`` = 4, ``o`` = 5), vocabulary 6, as
``build_maze_dataset.py`` writes them.

Generation carves a random spanning tree over the cells at odd coordinates (a "perfect" maze), opens a
fraction ``loops`` of the remaining inner walls to add cycles, picks a start, and picks the goal among the
cells whose shortest path from the start is at least ``min_path`` steps long and unique, so the label is
well defined. ``min_path`` is the hardness control.
"""

from __future__ import annotations

import csv
import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.config import make_config
from arcscope.errors import ArcscopeError
from arcscope.progress import ProgressFn, emit, relabel
from arcscope.puzzles.config import MazeBuildConfig
from arcscope.puzzles.layout import BLANK, DatasetWriter
from arcscope.tasks.augment import Dihedral

CHARSET = "# SGo"
"""Cell characters; token = index + 1 (0 is PAD)."""
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5

__all__ = [
    "CHARSET",
    "MazeError",
    "generate_maze",
    "shortest_path",
    "check_maze",
    "maze_to_text",
    "text_to_maze",
    "read_maze_csv",
    "build_maze",
]


class MazeError(ArcscopeError, ValueError):
    """A maze, CSV file or generator setting breaks the maze rules."""


_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def maze_to_text(tokens: np.ndarray) -> str:
    """The HRM text form of a token grid (row-major, no separators)."""
    t = np.asarray(tokens).reshape(-1)
    if t.min() < 1 or t.max() > len(CHARSET):
        raise MazeError(f"maze tokens are 1..{len(CHARSET)}, found {int(t.min())}..{int(t.max())}")
    return "".join(CHARSET[int(v) - 1] for v in t)


def text_to_maze(text: str, where: str = "maze") -> np.ndarray:
    """The square token grid of a maze text."""
    side = int(round(len(text) ** 0.5))
    if side * side != len(text) or side == 0:
        raise MazeError(f"{where}: a maze has a square number of cells, got {len(text)}")
    bad = set(text) - set(CHARSET)
    if bad:
        raise MazeError(f"{where}: unknown cell characters {sorted(bad)!r}; cells are {CHARSET!r}")
    lut = {c: i + 1 for i, c in enumerate(CHARSET)}
    return np.array([lut[c] for c in text], dtype=np.uint8).reshape(side, side)


def _bfs(open_: np.ndarray, start: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Distances from ``start`` (-1 unreachable) and the number of shortest paths to each cell (capped at 2)."""
    h, w = open_.shape
    dist = np.full((h, w), -1, dtype=np.int64)
    ways = np.zeros((h, w), dtype=np.int64)
    dist[start] = 0
    ways[start] = 1
    q = deque([start])
    while q:
        r, c = q.popleft()
        for dr, dc in _STEPS:
            rr, cc = r + dr, c + dc
            if 0 <= rr < h and 0 <= cc < w and open_[rr, cc]:
                if dist[rr, cc] < 0:
                    dist[rr, cc] = dist[r, c] + 1
                    ways[rr, cc] = ways[r, c]
                    q.append((rr, cc))
                elif dist[rr, cc] == dist[r, c] + 1:
                    ways[rr, cc] = min(2, ways[rr, cc] + ways[r, c])
    return dist, ways


def shortest_path(maze: np.ndarray) -> list[tuple[int, int]] | None:
    """The cells of a shortest path from S to G (both included), None when G cannot be reached."""
    m = np.asarray(maze)
    starts, goals = np.argwhere(m == START), np.argwhere(m == GOAL)
    if len(starts) != 1 or len(goals) != 1:
        raise MazeError(f"a maze needs exactly one S and one G, found {len(starts)} and {len(goals)}")
    s, g = tuple(int(x) for x in starts[0]), tuple(int(x) for x in goals[0])
    dist, _ = _bfs(m != WALL, s)
    if dist[g] < 0:
        return None
    path = [g]
    while path[-1] != s:
        r, c = path[-1]
        for dr, dc in _STEPS:
            rr, cc = r + dr, c + dc
            if 0 <= rr < m.shape[0] and 0 <= cc < m.shape[1] and dist[rr, cc] == dist[r, c] - 1:
                path.append((rr, cc))
                break
    return path[::-1]


def _carve(size: int, rng: np.random.Generator) -> np.ndarray:
    grid = np.full((size, size), WALL, dtype=np.uint8)
    cells = [(r, c) for r in range(1, size - 1, 2) for c in range(1, size - 1, 2)]
    if not cells:
        raise MazeError(f"a maze needs a side of at least 3, got {size}")
    start = cells[int(rng.integers(len(cells)))]
    grid[start] = OPEN
    stack = [start]
    while stack:
        r, c = stack[-1]
        nbrs = [
            (r + 2 * dr, c + 2 * dc)
            for dr, dc in _STEPS
            if 0 < r + 2 * dr < size - 1
            and 0 < c + 2 * dc < size - 1
            and grid[r + 2 * dr, c + 2 * dc] == WALL
        ]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[int(rng.integers(len(nbrs)))]
        grid[(r + nr) // 2, (c + nc) // 2] = OPEN
        grid[nr, nc] = OPEN
        stack.append((nr, nc))
    return grid


def generate_maze(
    size: int = 30,
    *,
    min_path: int | None = None,
    loops: float = 0.05,
    seed: int | np.random.Generator = 0,
    max_tries: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """One maze ``(question, answer)`` as ``(size, size)`` token grids; see the module docstring.

    ``min_path`` defaults to ``2 * size`` steps (about a third of the longest paths in a 30x30 maze).
    """
    if size < 3 or size > 64:
        raise MazeError(f"maze side must be 3..64, got {size}")
    if not 0.0 <= loops <= 1.0:
        raise MazeError(f"loops is a fraction 0..1 of the inner walls to open, got {loops}")
    min_path = 2 * size if min_path is None else int(min_path)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        grid = _carve(size, rng)
        if loops > 0:
            # Inner walls that separate two open cells on a line; opening one closes a cycle.
            inner = [
                (r, c)
                for r in range(1, size - 1)
                for c in range(1, size - 1)
                if grid[r, c] == WALL
                and (
                    (grid[r - 1, c] == OPEN and grid[r + 1, c] == OPEN)
                    or (grid[r, c - 1] == OPEN and grid[r, c + 1] == OPEN)
                )
            ]
            k = int(round(loops * len(inner)))
            for j in rng.permutation(len(inner))[:k].tolist():
                grid[inner[j]] = OPEN
        open_cells = np.argwhere(grid == OPEN)
        s = tuple(int(x) for x in open_cells[int(rng.integers(len(open_cells)))])
        dist, ways = _bfs(grid == OPEN, s)
        ok = np.argwhere((dist >= max(min_path, 1)) & (ways == 1))
        if len(ok) == 0:
            continue
        g = tuple(int(x) for x in ok[int(rng.integers(len(ok)))])
        question = grid.copy()
        question[s] = START
        question[g] = GOAL
        answer = question.copy()
        path = shortest_path(question)
        assert path is not None
        for cell in path[1:-1]:
            answer[cell] = PATH
        return question, answer
    raise MazeError(
        f"no {size}x{size} maze with a unique shortest path of >= {min_path} steps in {max_tries} tries; "
        "lower --min-path or --loops"
    )


def check_maze(question: np.ndarray, answer: np.ndarray, where: str = "maze") -> None:
    """Raise :class:`MazeError` unless ``answer`` marks a shortest S-G path of ``question`` and changes nothing else."""
    q, a = np.asarray(question), np.asarray(answer)
    if q.shape != a.shape:
        raise MazeError(f"{where}: question {q.shape} and answer {a.shape} differ in shape")
    if np.any(q == PATH):
        raise MazeError(f"{where}: the question must not mark path cells ('o')")
    changed = q != a
    if np.any(changed & ~((q == OPEN) & (a == PATH))):
        raise MazeError(f"{where}: the answer may only turn open cells into path cells ('o')")
    path = shortest_path(q)
    if path is None:
        raise MazeError(f"{where}: G cannot be reached from S")
    marked = int(np.sum(a == PATH))
    if marked != len(path) - 2:
        raise MazeError(
            f"{where}: the answer marks {marked} path cells, the shortest path has {len(path) - 2}"
        )
    # A marked set of the right size is a shortest path when it links S to G through marked cells.
    sub = (a == PATH) | (a == START) | (a == GOAL)
    s = tuple(int(x) for x in np.argwhere(q == START)[0])
    g = tuple(int(x) for x in np.argwhere(q == GOAL)[0])
    dist, _ = _bfs(sub, s)
    if dist[g] != len(path) - 1:
        raise MazeError(f"{where}: the marked cells do not form a shortest path from S to G")


def read_maze_csv(
    path: str | os.PathLike[str], *, limit: int | None = None, check: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Read HRM's maze CSV (``source,question,answer,rating``) into token grids ``[N, side, side]`` x 2."""
    src = str(path)
    qs, ans = [], []
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise MazeError(f"{src}: cannot read ({e.strerror or e})") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:3]] != ["source", "question", "answer"]:
            raise MazeError(
                f"{src} line 1: expected the header 'source,question,answer,rating', got {header!r}"
            )
        side = None
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise MazeError(f"{src} line {line}: expected the columns source,question,answer,rating")
            where = f"{src} line {line}"
            q, a = text_to_maze(row[1], where), text_to_maze(row[2], where)
            if side is None:
                side = q.shape[0]
            elif q.shape[0] != side:
                raise MazeError(f"{where}: a {q.shape[0]}x{q.shape[0]} maze among {side}x{side} ones")
            if check:
                check_maze(q, a, where)
            qs.append(q)
            ans.append(a)
            if limit is not None and len(qs) >= limit:
                break
    if not qs:
        raise MazeError(f"{src}: no mazes")
    return np.stack(qs), np.stack(ans)


def generate_mazes(
    count: int,
    size: int = 30,
    *,
    min_path: int | None = None,
    loops: float = 0.05,
    seed: int = 0,
    exclude: set[bytes] | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct mazes ``(questions [count, size, size], answers)``, none of them in ``exclude``."""
    rng = np.random.default_rng(seed)
    seen = set(exclude or ())
    qs, ans = [], []
    while len(qs) < count:
        q, a = generate_maze(size, min_path=min_path, loops=loops, seed=rng)
        if q.tobytes() in seen:
            continue
        seen.add(q.tobytes())
        qs.append(q)
        ans.append(a)
        emit(progress, "mazes", len(qs), count)
    if not qs:
        return np.zeros((0, size, size), np.uint8), np.zeros((0, size, size), np.uint8)
    return np.stack(qs), np.stack(ans)


def build_maze(
    out: str | os.PathLike[str],
    config: MazeBuildConfig | dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Build a maze dataset in the HRM layout, generated or read from maze CSV files.

    ``aug`` adds the 8 dihedral transforms of each train maze to its group (HRM's ``--aug``). With CSV files,
    ``train``/``test`` subsample them when smaller than the files. ``config`` and keyword ``settings`` are
    :class:`~arcscope.puzzles.config.MazeBuildConfig` fields.
    """
    cfg = make_config(MazeBuildConfig, config, settings)
    size, train, test, min_path, loops, aug = cfg.size, cfg.train, cfg.test, cfg.min_path, cfg.loops, cfg.aug
    seed, train_csv, test_csv = cfg.seed, cfg.train_csv, cfg.test_csv
    rng = np.random.default_rng(seed)
    source: dict[str, Any]
    if (train_csv is None) != (test_csv is None):
        raise MazeError("give --train-csv together with --test-csv, or neither to generate mazes")
    if train_csv is not None:
        tq, ta = read_maze_csv(train_csv)
        eq, ea = read_maze_csv(test_csv)  # type: ignore[arg-type]
        if tq.shape[1] != eq.shape[1]:
            raise MazeError(f"{train_csv} and {test_csv} hold mazes of different sizes")
        if train and train < len(tq):
            pick = np.sort(rng.choice(len(tq), size=train, replace=False))
            tq, ta = tq[pick], ta[pick]
        if test and test < len(eq):
            pick = np.sort(rng.choice(len(eq), size=test, replace=False))
            eq, ea = eq[pick], ea[pick]
        size = int(tq.shape[1])
        source = {"train_csv": str(train_csv), "test_csv": str(test_csv)}
    else:
        kw = dict(min_path=min_path, loops=loops)
        tq, ta = generate_mazes(
            train,
            size,
            seed=int(rng.integers(2**63)),
            progress=relabel(progress, "train mazes"),
            **kw,  # type: ignore[arg-type]
        )
        eq, ea = generate_mazes(
            test,
            size,
            seed=int(rng.integers(2**63)),
            exclude={q.tobytes() for q in tq},
            progress=relabel(progress, "test mazes"),
            **kw,  # type: ignore[arg-type]
        )
        source = {"generated": True, "min_path": 2 * size if min_path is None else min_path, "loops": loops}
    with DatasetWriter(out, seq_len=size * size, vocab_size=len(CHARSET) + 1, overwrite=overwrite) as writer:
        for split, qs, ans, augment in (("train", tq, ta, aug), ("test", eq, ea, False)):
            w = writer.split(split)
            for q, a in zip(qs, ans, strict=True):
                group = [
                    (0, Dihedral(k).apply_grid(q).reshape(1, -1), Dihedral(k).apply_grid(a).reshape(1, -1))
                    for k in (range(8) if augment else range(1))
                ]
                w.add_group(group)
        info = {
            "kind": "maze",
            "format": "hrm",
            "size": size,
            "seed": seed,
            "aug": aug,
            "train": int(len(tq)),
            "test": int(len(eq)),
            "charset": CHARSET,
            **source,
        }
        writer.finish([BLANK], info, mean_puzzle_examples={"train": 1.0, "test": 1.0})
    return {**info, "path": str(Path(out))}
