"""Counting tokens for the vocabularies: per partition with Arrow, summed by Spark, ranked on the driver."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.contract.specials import SPECIALS, TEXT_SPECIALS
from pipelines.text.chars import char_tokens


def count_tokens(df: DataFrame, groups: Mapping[str, Sequence[str]], chars: bool = False) -> DataFrame:
    """Spark: ``(vocab, token, count)``: for each vocabulary name in ``groups``, the tokens of its
    normalized-text columns (tokens separated by single spaces; with ``chars``, their character
    tokens). Each partition counts with Arrow's C++ kernels (split, value_counts, group_by);
    Spark adds up the partial counts."""
    groups = {group: list(columns) for group, columns in groups.items()}
    columns = sorted({column for group in groups.values() for column in group})

    def count_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        partial = []
        for batch in batches:
            for group, names in groups.items():
                for name in names:
                    texts = batch.column(name).drop_null()
                    if chars:
                        tokens = pa.array([c for text in texts.to_pylist() for c in char_tokens(text)], pa.string())
                    else:
                        tokens = pc.split_pattern(texts, " ").flatten()
                    counted = pc.value_counts(tokens.filter(pc.not_equal(tokens, "")))
                    partial.append(
                        pa.table(
                            {
                                "vocab": pa.array([group] * len(counted), pa.string()),
                                "token": counted.field("values"),
                                "count": counted.field("counts"),
                            }
                        )
                    )
        if partial:
            total = pa.concat_tables(partial).group_by(["vocab", "token"]).aggregate([("count", "sum")])
            yield from total.rename_columns(["vocab", "token", "count"]).to_batches()

    partial = df.select(*columns).mapInArrow(count_partition, "vocab string, token string, count long")
    return partial.groupBy("vocab", "token").agg(F.sum("count").alias("count"))


def top_tokens(counts: pa.Table, max_size: int, min_count: int) -> tuple[list[tuple[str, int]], int]:
    """The ranked candidates for a vocabulary of ``max_size`` from a ``(token, count)`` Arrow table
    (one vocabulary's counts), and the total token count."""
    total = pc.sum(counts["count"]).as_py() or 0
    specials = pa.array(TEXT_SPECIALS, pa.string())
    wanted = pc.or_(pc.greater_equal(counts["count"], min_count), pc.is_in(counts["token"], value_set=specials))
    counts = counts.filter(wanted)
    # Arrow sorts strings by their UTF-8 bytes, which is the tokens' code-point order.
    order = pc.sort_indices(counts, sort_keys=[("count", "descending"), ("token", "ascending")])
    top = counts.take(order[: max_size - len(SPECIALS) + len(TEXT_SPECIALS)])
    return list(zip(top["token"].to_pylist(), top["count"].to_pylist())), int(total)
