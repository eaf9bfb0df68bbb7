"""ARC tasks: grids, sources, writers, augmentation, encoding, prompts, scoring.

Names are loaded lazily from their submodules so ``import arcscope.tasks`` stays fast.
"""

from __future__ import annotations

from arcscope._lazy import lazy_names
from arcscope.tasks.core import Grid, Pair, Task, TaskSet, as_grid, grid_to_list, grids_equal

_LAZY = {
    # sources.py
    "load": "sources",
    "iter_tasks": "sources",
    "parse_spec": "sources",
    "SOURCE_HELP": "sources",
    # writers.py
    "save": "writers",
    # augment.py
    "Augmentation": "augment",
    "Dihedral": "augment",
    "ColourPermutation": "augment",
    "PairOrder": "augment",
    "Compose": "augment",
    "Identity": "augment",
    "parse_augmentation": "augment",
    "random_augmentation": "augment",
    "augment_task": "augment",
    # encoding.py
    "GridEncoder": "encoding",
    "get_encoder": "encoding",
    "ENCODERS": "encoding",
    "Digits": "encoding",
    "RowNumbers": "encoding",
    "ShapeHeader": "encoding",
    "CodeFence": "encoding",
    "compose": "encoding",
    "EncoderSpecError": "encoding",
    # prompts.py
    "PromptTemplate": "prompts",
    "TEMPLATES": "prompts",
    "get_template": "prompts",
    "PromptError": "prompts",
    "GridSegment": "prompts",
    "ROLE_CODES": "prompts",
    "token_cell_maps": "prompts",
    "Prompt": "prompts",
    "build_prompt": "prompts",
    "parse_response": "prompts",
    "ParseResult": "prompts",
    "token_cell_map": "prompts",
    "TokenCellMap": "prompts",
    "Role": "prompts",
    # hrm.py
    "hrm_encode": "hrm",
    "hrm_decode": "hrm",
    # scoring.py
    "score": "scoring",
    "ScoreReport": "scoring",
    "pass_at_k": "scoring",
    "vote": "scoring",
    "read_submission": "scoring",
    "write_submission": "scoring",
    "submission_dict": "scoring",
    "predictions_from_votes": "scoring",
    "Voted": "scoring",
    "TaskScore": "scoring",
    "hrm_translation": "hrm",
    "AugmentationError": "augment",
}

__all__ = ["Grid", "Pair", "Task", "TaskSet", "as_grid", "grid_to_list", "grids_equal", *_LAZY]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
