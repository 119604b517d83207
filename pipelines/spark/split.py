"""Train/valid/test assignment by a stable hash of the example's content."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

_BUCKETS = 1_000_000


def example_hash(columns: Sequence[str], seed: int) -> Column:
    """64-bit xxhash of an example's (normalized) content: the same example gets the same hash on
    any cluster."""
    return F.xxhash64(F.lit(seed), *[F.col(c) for c in columns])


def assign_split(hash_column: Column, valid: float, test: float, fixed: Column | None = None) -> Column:
    """``valid`` for the first ``valid`` fraction of hash buckets, then ``test``, else ``train``;
    a non-null ``fixed`` split wins."""
    bucket = F.pmod(hash_column, F.lit(_BUCKETS))
    by_hash = (
        F.when(bucket < int(valid * _BUCKETS), F.lit("valid"))
        .when(bucket < int((valid + test) * _BUCKETS), F.lit("test"))
        .otherwise(F.lit("train"))
    )
    return by_hash if fixed is None else F.coalesce(fixed, by_hash)


def shard_of(hash_column: Column, shards: int) -> Column:
    """Shard number in ``[0, shards)``, independent of the split bucket."""
    return F.pmod(F.xxhash64(F.lit("shard"), hash_column), F.lit(shards)).cast("int")
