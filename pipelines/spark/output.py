"""Writing the preprocessing output's Parquet shards (published atomically by ``pipelines.contract.atomic``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame

from pipelines.spark.readers import SPLITS


def shard_name(split: str, shard: int) -> str:
    return f"{split}/part-{shard:05d}.parquet"


def write_shards(
    df: DataFrame, directory: Path, shards: int, sort_columns: Sequence[str], transform: Callable[[pa.Table], pa.Table]
) -> dict[str, list[str]]:
    """Write ``df`` (with ``split`` and ``shard`` columns) as ``<split>/part-NNNNN.parquet``.

    Spark gathers each shard's rows in one partition and sorts them by ``sort_columns``; the Python
    worker holding them applies ``transform`` (e.g. token -> id encoding) and writes the file with
    Arrow. Shard contents therefore depend only on the data, not on Spark's partitioning.
    Returns the shard files of each split (paths relative to ``directory``).
    """
    for split in SPLITS:
        (directory / split).mkdir()
    root = str(directory)

    def write_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        keys = list(zip(table["split"].to_pylist(), table["shard"].to_pylist()))
        start = 0
        for end in range(1, len(keys) + 1):
            if end < len(keys) and keys[end] == keys[start]:
                continue
            split, shard = keys[start]
            name = shard_name(split, shard)
            tmp = os.path.join(root, f"{name}.tmp-{uuid.uuid4().hex[:8]}")
            pq.write_table(transform(table.slice(start, end - start).drop_columns(["split", "shard"])), tmp)
            os.replace(tmp, os.path.join(root, name))  # a retried task rewrites the same file
            yield pa.RecordBatch.from_pydict({"file": [name]})
            start = end

    written = (
        df.repartition(shards, "shard")
        .sortWithinPartitions("split", "shard", *sort_columns)
        .mapInArrow(write_partition, "file string")
        .collect()
    )
    names = {r["file"] for r in written}
    return {split: [shard_name(split, s) for s in range(shards) if shard_name(split, s) in names] for split in SPLITS}
