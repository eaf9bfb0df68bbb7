"""The activation store: a folder (local or fsspec URL) of safetensors shards, Parquet indexes and a manifest.

Write with :class:`StoreWriter`, read with :func:`open_store` (trainers: :meth:`Store.stream`, the one checked
shard reader, with :func:`shuffle_blocks` and :func:`mix_seed`), check with :func:`verify`. A shard becomes
visible only when the manifest listing it is committed, so readers never see partial data and a crashed
job resumes exactly from its last commit.
"""

from arcscope.store.format import FORMAT_VERSION, INDEX_SCHEMA, REQUIRED, ShardInfo
from arcscope.store.reader import (
    ON_DAMAGED,
    VERIFY_MODES,
    ActivationDataset,
    ShardStream,
    Store,
    mix_seed,
    open_store,
    shuffle_blocks,
)
from arcscope.store.verify import Damage, VerifyReport, verify
from arcscope.store.writer import StoreWriter, check_target

__all__ = [
    "FORMAT_VERSION",
    "INDEX_SCHEMA",
    "ON_DAMAGED",
    "REQUIRED",
    "VERIFY_MODES",
    "ActivationDataset",
    "Damage",
    "ShardInfo",
    "ShardStream",
    "Store",
    "StoreWriter",
    "VerifyReport",
    "check_target",
    "mix_seed",
    "open_store",
    "shuffle_blocks",
    "verify",
]
