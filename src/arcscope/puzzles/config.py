"""Settings of the dataset builders (ARC, Sudoku, Maze): one dataclass each, the CLI's options come from them."""

from __future__ import annotations

from dataclasses import dataclass

from arcscope.config import Config
from arcscope.errors import ArcscopeError


class BuildConfigError(ArcscopeError, ValueError):
    """A builder setting is unknown or out of range."""


def _at_least(cfg: object, minimum: int, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if v is not None and v < minimum:
            raise BuildConfigError(f"{name} must be >= {minimum}, got {v}")


@dataclass
class ArcBuildConfig(Config):
    """How ARC tasks become an HRM-layout dataset (after HRM's build_arc_dataset.py)."""

    config_error = BuildConfigError
    config_name = "ARC build"

    num_aug: int = 1000
    """Augmented copies per task (dihedral + colour permutations)."""
    seed: int = 42
    """Seed of augmentations and translations."""
    translate: bool = True
    """Translate train examples to a random position on the 30x30 canvas."""
    retries_factor: int = 5
    """Tries per wanted augmentation before a task keeps fewer distinct ones."""
    limit: int | None = None
    """Only the first N tasks of each source (None: all)."""
    on_error: str = "raise"
    """An invalid task: raise (stop and name it) or skip (leave it out, report it)."""

    def validate(self) -> ArcBuildConfig:
        """Check counts and the error policy."""
        _at_least(self, 0, "num_aug")
        _at_least(self, 1, "retries_factor", "limit")
        if self.on_error not in ("raise", "skip"):
            raise BuildConfigError(f"on_error must be raise or skip, got {self.on_error!r}")
        return self


@dataclass
class SudokuBuildConfig(Config):
    """Which Sudoku puzzles to generate (or read from sudoku-extreme CSV files)."""

    config_error = BuildConfigError
    config_name = "Sudoku build"

    n: int = 9
    """Board side: 4, 6 or 9."""
    train: int = 1000
    """Train puzzles (generated, or sampled from train_csv)."""
    test: int = 200
    """Test puzzles (never a train puzzle)."""
    givens: int | None = None
    """Clues per puzzle (None: 6 / 14 / 28 for 4 / 6 / 9)."""
    min_guesses: int = 0
    """Keep only puzzles whose search needs at least this many guesses."""
    num_aug: int = 0
    """HRM augmentations per train puzzle."""
    seed: int = 0
    """Seed of generation, sampling and augmentation."""
    train_csv: str | None = None
    """sudoku-extreme train.csv instead of generating."""
    test_csv: str | None = None
    """sudoku-extreme test.csv (with train_csv)."""
    min_rating: int | None = None
    """CSV: keep puzzles rated at least this."""

    def validate(self) -> SudokuBuildConfig:
        """Check counts."""
        _at_least(self, 0, "train", "test", "min_guesses", "num_aug")
        return self


@dataclass
class MazeBuildConfig(Config):
    """Which mazes to generate (or read from HRM's maze CSV files)."""

    config_error = BuildConfigError
    config_name = "maze build"

    size: int = 30
    """Maze side in cells."""
    train: int = 1000
    """Train mazes."""
    test: int = 200
    """Test mazes."""
    min_path: int | None = None
    """Shortest-path length at least this (None: 2 x size)."""
    loops: float = 0.05
    """Fraction of inner walls opened to add cycles."""
    aug: bool = False
    """Add the 8 dihedral transforms of each train maze to its group (HRM's --aug)."""
    seed: int = 0
    """Seed of generation, sampling and augmentation."""
    train_csv: str | None = None
    """HRM maze train.csv instead of generating."""
    test_csv: str | None = None
    """HRM maze test.csv (with train_csv)."""

    def validate(self) -> MazeBuildConfig:
        """Check counts."""
        _at_least(self, 0, "train", "test")
        _at_least(self, 2, "size")
        return self
