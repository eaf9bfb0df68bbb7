"""Puzzle datasets for recurrent reasoners (HRM, TRM): ARC, Sudoku and Maze builders in the HRM layout.

Names are loaded lazily from their submodules so ``import arcscope.puzzles`` stays fast.
"""

from __future__ import annotations

from arcscope._lazy import lazy_names

_LAZY = {
    # config.py
    "ArcBuildConfig": "config",
    "SudokuBuildConfig": "config",
    "MazeBuildConfig": "config",
    "BuildConfigError": "config",
    # layout.py
    "Metadata": "layout",
    "SetArrays": "layout",
    "PuzzleSplit": "layout",
    "PuzzleDataset": "layout",
    "PuzzleDataError": "layout",
    "DatasetWriter": "layout",
    "open_dataset": "layout",
    "open_split": "layout",
    "iter_puzzles": "layout",
    # arc.py
    "build_arc": "arc",
    "puzzle_name": "arc",
    "parse_puzzle_name": "arc",
    "ArcBuildReport": "arc",
    # sudoku.py
    "build_sudoku": "sudoku",
    "generate": "sudoku",
    "solve": "sudoku",
    "count_solutions": "sudoku",
    "is_solution": "sudoku",
    "shuffle_sudoku": "sudoku",
    "read_sudoku_csv": "sudoku",
    "SudokuError": "sudoku",
    # maze.py
    "build_maze": "maze",
    "generate_maze": "maze",
    "check_maze": "maze",
    "read_maze_csv": "maze",
    "shortest_path": "maze",
    "MazeError": "maze",
    # view.py
    "write_view": "view",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
