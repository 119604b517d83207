"""The normalization rules of ``pipelines.text.normalize`` as Spark SQL expressions (JVM only, no
Python UDF): the same steps in the same order, from the same rule definitions."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.contract.specials import NUM, UNK, URL
from pipelines.text.normalize import (
    ASCII_IN_TABLE,
    CHAR_TABLE,
    REPLACEMENT,
    URL_HINTS,
    NormalizeOptions,
    patterns,
    unk_pattern,
)


def spark_normalize(
    df: DataFrame, text_column: str, output_column: str, options: NormalizeOptions, where: Column | None = None
) -> DataFrame:
    """Add ``output_column``: the normalized text of ``text_column`` as ``normalize`` gives it
    (tokens joined by single spaces; rows where ``where`` is false get null). JVM only."""
    java = patterns(java=True)
    text = F.col(text_column)
    if options.unicode_form != "none":
        # reflect() counts as non-deterministic, so Spark would evaluate it once per reference:
        # it gets a projection of its own and later steps refer to its result.
        text = F.call_function(
            "reflect",
            F.lit("com.ibm.icu.text.Normalizer"),
            F.lit("compose"),
            text,
            F.lit(options.unicode_form == "NFKC"),
        )
    wanted = F.col(text_column).isNotNull() & (F.lit(True) if where is None else where)
    df = df.withColumn(output_column, F.when(wanted, text))
    text = F.col(output_column)
    # translate(): characters of `source` past the end of `target` are deleted.
    kept = {c: r for c, r in CHAR_TABLE.items() if r}
    deleted = [c for c, r in CHAR_TABLE.items() if not r]
    source = "".join(chr(c) for c in list(kept) + deleted)
    needs_table = (F.length(text) != F.octet_length(text)) | text.rlike(ASCII_IN_TABLE)
    text = F.when(needs_table, F.translate(text, source, "".join(kept.values()))).otherwise(text)
    if options.lowercase:
        text = F.lower(text)
    if options.tokenize == "words":
        has_url_hint = F.lit(False)
        for hint in URL_HINTS:
            if not (options.lowercase and hint != hint.lower()):
                has_url_hint = has_url_hint | text.contains(hint)  # not instr(): see readers._invalid
        text = F.when(has_url_hint, F.regexp_replace(text, java.url, f" {URL} ")).otherwise(text)
        text = F.regexp_replace(text, java.num, f" {NUM} ")
        text = F.regexp_replace(text, java.punct, REPLACEMENT[options.apostrophe][1])
    if options.unk_token:
        text = F.regexp_replace(text, unk_pattern(options.unk_token), UNK)
    if options.tokenize != "none":
        text = F.regexp_replace(F.trim(text), "  +", " ")
    return df.withColumn(output_column, text)


def spark_token_count(normalized: Column, options: NormalizeOptions | None = None) -> Column:
    """Number of tokens (words) in a normalized text (spaces + 1, or 0 for the empty text; text kept
    as it is, ``tokenize=none``, counts its space-separated words)."""
    if options is not None and options.tokenize == "none":
        normalized = F.regexp_replace(F.trim(normalized), "  +", " ")
    spaces = F.octet_length(normalized) - F.octet_length(F.replace(normalized, F.lit(" "), F.lit("")))
    return F.when(normalized == "", F.lit(0)).otherwise(spaces + 1)
