"""Writing the preprocessing output: an atomically published directory of Parquet shards."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame

from pipelines.readers import SPLITS


class OutputExistsError(FileExistsError):
    """The output directory exists and overwriting was not asked for."""


@contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success rename it to ``target``, on failure
    delete it. A reader never sees a half-written ``target``."""
    target = target.resolve()
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; pass overwrite=true to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_shards(df: DataFrame, directory: Path, shards: int, sort_columns: Sequence[str]) -> dict[str, list[str]]:
    """Write ``df`` (with ``split`` and ``shard`` columns) as ``<split>/part-NNNNN.parquet``.

    Rows are grouped by shard and sorted by ``sort_columns`` within it, so shard contents depend only
    on the data, not on Spark's partitioning. Returns the shard files of each split (relative paths).
    """
    staging = directory / "_staging"
    (df.repartition(shards, "shard")
       .sortWithinPartitions("split", "shard", *sort_columns)
       .write.partitionBy("split", "shard").parquet(str(staging)))
    written: dict[str, list[str]] = {}
    for split in SPLITS:
        (directory / split).mkdir()
        files = []
        for shard in range(shards):
            parts = sorted((staging / f"split={split}" / f"shard={shard}").glob("part-*.parquet"))
            if len(parts) > 1:
                raise RuntimeError(f"shard {shard} of {split} was written as {len(parts)} files")
            if parts:
                name = f"{split}/part-{shard:05d}.parquet"
                os.rename(parts[0], directory / name)
                files.append(name)
        written[split] = files
    shutil.rmtree(staging)
    return written
