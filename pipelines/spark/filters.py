"""Filters: a named drop reason for every record that is not kept, and de-duplication."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

LINE_TOO_LONG = "line_too_long"
EMPTY = "empty"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
LENGTH_RATIO = "length_ratio"
DUPLICATE = "duplicate"
MISSING_LABEL = "missing_label"  # labelled data: an empty label field
UNKNOWN_LABEL = "unknown_label"  # labelled data: a label outside data.labels

HELD_OUT = ("valid", "test")


def too_long_line(raw_columns: Sequence[str], max_chars: int) -> Column:
    """True where a raw line is longer than ``max_chars`` characters (checked before tokenizing).
    A line has at most as many characters as bytes, so only long byte strings are counted."""

    def too_long(c: str) -> Column:
        return F.when(F.octet_length(c) > max_chars, F.length(c) > max_chars).otherwise(F.lit(False))

    checks = [too_long(c) for c in raw_columns]
    return checks[0] if len(checks) == 1 else F.greatest(*checks)


def length_reason(length_columns: Sequence[str], min_len: int, max_len: int, max_ratio: float) -> Column:
    """The drop reason for token counts, or null. Inputs pinned to valid/test skip the max-length
    and ratio rules, so a published test set stays whole; ``min_len`` 0 keeps empty texts."""
    lengths = [F.col(c) for c in length_columns]
    shortest, longest = (F.least(*lengths), F.greatest(*lengths)) if len(lengths) > 1 else (lengths[0], lengths[0])
    pinned = F.coalesce(F.col("fixed_split").isin(*HELD_OUT), F.lit(False))
    too_long = ~pinned & (longest > max_len)
    if min_len > 0:
        reason = (
            F.when(shortest == 0, F.lit(EMPTY))
            .when(shortest < min_len, F.lit(TOO_SHORT))
            .when(too_long, F.lit(TOO_LONG))
        )
    else:  # empty texts kept (monolingual text whose blank lines matter)
        reason = F.when(too_long, F.lit(TOO_LONG))
    if len(lengths) > 1 and max_ratio > 0:
        reason = reason.when(~pinned & (longest > shortest * max_ratio), F.lit(LENGTH_RATIO))
    return reason


def deduplicate(
    df: DataFrame, key_columns: Sequence[str], other_columns: Sequence[str], held_out_inputs: bool = True
) -> DataFrame:
    """Keep one example per distinct normalized text (``key_columns``).

    Examples pinned to valid/test are kept as they are, and other examples equal to one of them are
    dropped, so nothing held out leaks into training. Among the rest, an example pinned to train wins
    over a hash-split one; ties are broken by ``other_columns`` (the raw text), so the result is
    deterministic. ``held_out_inputs=False`` (no input is pinned to valid/test) skips that check.
    """
    held_out = F.coalesce(F.col("fixed_split").isin(*HELD_OUT), F.lit(False))
    free = df.where(~held_out) if held_out_inputs else df
    priority = F.when(F.col("fixed_split") == "train", 0).otherwise(1)
    best = F.min(F.struct(priority.alias("priority"), *[F.col(c) for c in other_columns], F.col("fixed_split")))
    unique = (
        free.groupBy(*key_columns)
        .agg(best.alias("best"))
        .select(*key_columns, *[F.col(f"best.{c}").alias(c) for c in [*other_columns, "fixed_split"]])
    )
    if not held_out_inputs:
        return unique
    pinned = df.where(held_out)
    unique = unique.join(pinned.select(*key_columns).distinct(), list(key_columns), "left_anti")
    return pinned.select(*unique.columns).unionByName(unique)
