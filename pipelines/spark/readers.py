"""Reading raw corpora into one row per input record.

Every line read becomes exactly one row, so ``read`` counts are exact: rows that cannot be used
carry a drop ``reason`` instead of disappearing. Output columns: ``src_raw`` (and ``tgt_raw`` for
parallel data, ``label_raw`` for labelled data), ``fixed_split`` (the split an input is pinned to,
or null), ``reason``, ``note``
and ``position`` (where the line is in the inputs, to keep text in order: null unless asked for).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.contract.errors import InputError

FORMATS = ("text", "tsv", "aligned", "labelled", "trees", "csv")
SPLITS = ("train", "valid", "test")
_INPUT_KEYS = {
    "text": {"path", "split", "split_at"},
    "tsv": {"path", "split", "src_column", "tgt_column"},
    "aligned": {"src", "tgt", "split"},
    "labelled": {"path", "split", "label_column", "text_column", "label_map"},
    "trees": {"path", "split", "phrases", "label_map"},
    "csv": {"path"},
}
_KIND_FORMATS = {
    "parallel": ("tsv", "aligned"),
    "monolingual": ("text",),
    "labelled": ("labelled", "trees"),
    "series": ("csv",),
}

# Drop reasons a reader can give.
INVALID_UTF8 = "invalid_utf8"
MISSING_COLUMN = "missing_column"
BAD_TREE = "bad_tree"  # a trees input's line that is not one well-formed labelled tree
# Note for TSV lines with more columns than used (kept; the extra columns are ignored).
EXTRA_COLUMNS = "extra_columns_ignored"
# What Spark's error says when a compressed input cannot be read to its end.
_UNREADABLE = (
    "Unexpected end of input stream",
    "Not in GZIP format",
    "incorrect header check",
    "ZipException",
    "EOFException",
)


@dataclass(frozen=True)
class InputSpec:
    """One configured input, its files resolved (sorted) on the driver."""

    format: str
    files: tuple[str, ...]
    tgt_files: tuple[str, ...] = ()
    split: str | None = None
    src_column: int = 0
    tgt_column: int = 1
    split_at: tuple[float, float] | None = None  # text split by character offset: train | valid | test
    label_column: int = 0  # labelled: the columns of the label and of the text
    text_column: int = 1
    phrases: bool = False  # trees: every labelled node is an example (else the root: the sentence)
    label_map: tuple[tuple[str, str], ...] = ()  # labelled, trees: labels renamed as they are read

    def describe(self) -> list[dict[str, Any]]:
        """Path, size and SHA-256 of every file, for the manifest."""
        files = [_describe_file(p, self.format, self.split) for p in self.files + self.tgt_files]
        return [{**f, "split_at": list(self.split_at)} for f in files] if self.split_at else files


def _describe_file(path: str, fmt: str, split: str | None) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": path, "format": fmt, "split": split, "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def _expand(pattern: str, where: str) -> tuple[str, ...]:
    path = os.path.abspath(os.path.expanduser(pattern))
    files = sorted(p for p in glob.glob(path) if os.path.isfile(p))
    if not files:
        raise InputError(f"{where}: no file matches {pattern!r} (looked for {path})")
    return tuple(files)


def resolve_inputs(inputs: Sequence[Mapping[str, Any]], kind: str) -> list[InputSpec]:
    """Check the ``data.inputs`` entries and expand their paths and globs to absolute file lists."""
    if not inputs:
        raise InputError("data.inputs is empty: give at least one input")
    specs = []
    for n, entry in enumerate(inputs):
        where = f"data.inputs[{n}]"
        entry = dict(entry)
        fmt = entry.pop("format", "aligned" if "src" in entry else _KIND_FORMATS.get(kind, ("tsv",))[0])
        if fmt not in FORMATS:
            raise InputError(f"{where}: format must be one of {FORMATS}, got {fmt!r}")
        unknown = set(entry) - _INPUT_KEYS[fmt]
        if unknown:
            raise InputError(
                f"{where}: unknown keys {sorted(unknown)} for format {fmt!r} (allowed: {sorted(_INPUT_KEYS[fmt])})"
            )
        if fmt not in _KIND_FORMATS.get(kind, ()):
            raise InputError(f"{where}: format {fmt!r} does not fit data.kind={kind!r}")
        split = entry.get("split")
        if split is not None and split not in SPLITS:
            raise InputError(f"{where}: split must be one of {SPLITS} or null, got {split!r}")
        split_at = entry.get("split_at")
        if split_at is not None:
            if split is not None:
                raise InputError(f"{where}: give split or split_at, not both")
            if (
                not isinstance(split_at, (list, tuple))
                or len(split_at) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in split_at)
                or not 0 < split_at[0] <= split_at[1] < 1
            ):
                raise InputError(
                    f"{where}: split_at must be two character fractions 0 < valid start <= test "
                    f"start < 1, such as [0.9, 0.95]; got {split_at!r}"
                )
            split_at = (float(split_at[0]), float(split_at[1]))
        if fmt == "aligned":
            for key in ("src", "tgt"):
                if key not in entry:
                    raise InputError(f"{where}: aligned input needs both 'src' and 'tgt'")
            src, tgt = _expand(entry["src"], where), _expand(entry["tgt"], where)
            if len(src) != len(tgt):
                raise InputError(
                    f"{where}: {entry['src']!r} matches {len(src)} files but {entry['tgt']!r} matches {len(tgt)}"
                )
            specs.append(InputSpec(fmt, src, tgt, split))
        elif fmt == "csv":  # series: the columns are the series.* keys, the split is the hold-out
            if "path" not in entry:
                raise InputError(f"{where}: csv input needs 'path'")
            specs.append(InputSpec(fmt, _expand(entry["path"], where)))
        elif fmt == "trees":
            if "path" not in entry:
                raise InputError(f"{where}: trees input needs 'path'")
            phrases = entry.get("phrases", False)
            if not isinstance(phrases, bool):
                raise InputError(f"{where}: phrases must be true or false, got {phrases!r}")
            specs.append(
                InputSpec(
                    fmt, _expand(entry["path"], where), split=split, phrases=phrases, label_map=_label_map(entry, where)
                )
            )
        else:
            if "path" not in entry:
                raise InputError(f"{where}: {fmt} input needs 'path'")
            names = ("label_column", "text_column") if fmt == "labelled" else ("src_column", "tgt_column")
            first, second = (entry.get(name, default) for name, default in zip(names, (0, 1)))
            if (
                not all(isinstance(c, int) and not isinstance(c, bool) for c in (first, second))
                or min(first, second) < 0
                or first == second
            ):
                raise InputError(
                    f"{where}: {names[0]} and {names[1]} must be different integers >= 0, got {first!r} and {second!r}"
                )
            columns = (
                {"label_column": first, "text_column": second, "label_map": _label_map(entry, where)}
                if fmt == "labelled"
                else {"src_column": first, "tgt_column": second}
            )
            specs.append(InputSpec(fmt, _expand(entry["path"], where), split=split, split_at=split_at, **columns))
    return specs


def _label_map(entry: Mapping[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """An input's ``label_map`` ({label: new label}) as sorted string pairs."""
    mapping = entry.get("label_map") or {}
    if not isinstance(mapping, Mapping):
        raise InputError(f"{where}: label_map must map labels to labels ({{1: 0, 3: 1}}), got {mapping!r}")
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


def _relabelled(rows: DataFrame, spec: InputSpec) -> DataFrame:
    """``label_raw`` trimmed and put through the input's ``label_map`` (other labels stay as they are)."""
    label = F.trim(F.col("label_raw"))
    if spec.label_map:
        table = F.create_map(*(F.lit(x) for pair in spec.label_map for x in pair))
        label = F.coalesce(F.element_at(table, label), label)
    return rows.withColumn("label_raw", label)


def _invalid(text: Column) -> Column:
    """Undecodable bytes, or U+FFFD, the mark a decoder leaves for them."""
    # contains() tests the first byte before comparing; instr() calls a comparison at every character.
    return ~F.call_function("is_valid_utf8", text) | text.contains("\ufffd")


def _strip_cr(column: str) -> Column:
    """Drop the CR of a CRLF line ending (byte-level, no regular expression). Only lines that end
    in CR are trimmed: Spark's trim with a character builds two arrays the length of the line."""
    return F.when(F.col(column).endswith("\r"), F.expr(f"trim(TRAILING '\\r' FROM {column})")).otherwise(F.col(column))


def _read_lines(spark: SparkSession, files: Sequence[str]) -> DataFrame:
    return spark.read.option("lineSep", "\n").text(list(files))


def _read_text(spark: SparkSession, spec: InputSpec, index: int, ordered: bool) -> DataFrame:
    if not (ordered or spec.split_at):
        return _text_rows(_read_lines(spark, spec.files), F.lit(None).cast("long"), F.lit(spec.split))
    # in order: each file read whole, so that line numbers come from the JVM
    lines = _union(
        [
            _numbered_lines(spark, path).select(F.lit(n).alias("file_no"), "line_no", F.col("line").alias("value"))
            for n, path in enumerate(spec.files)
        ]
    )
    position = F.lit(index).cast("long") * (1 << 48) + F.col("file_no").cast("long") * (1 << 32) + F.col("line_no")
    split = F.lit(spec.split)
    if spec.split_at:
        # the character offset where each line starts (its newline counted), over the input's files
        # in order; one window over the whole input, so for corpora of modest size
        chars = F.length("value") + 1
        before = F.coalesce(
            F.sum(chars).over(Window.orderBy("file_no", "line_no").rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)
        )
        total = F.sum(chars).over(Window.partitionBy())
        valid_at, test_at = (F.floor(total * f) for f in spec.split_at)
        split = F.when(before < valid_at, "train").when(before < test_at, "valid").otherwise("test")
    return _text_rows(lines, position, split)


def _text_rows(lines: DataFrame, position: Column, split: Column) -> DataFrame:
    value = F.col("value")
    return lines.select(
        _strip_cr("value").alias("src_raw"),
        F.when(_invalid(value), F.lit(INVALID_UTF8)).alias("reason"),
        F.lit(None).cast("string").alias("note"),
        position.alias("position"),
        split.cast("string").alias("fixed_split"),
    )


def _read_columns(spark: SparkSession, spec: InputSpec, columns: Mapping[str, int]) -> DataFrame:
    """Tab-separated lines -> the ``columns`` (output name -> field index) of each."""
    value = F.col("value")
    fields = F.split(_strip_cr("value"), "\t", -1)
    needed = max(columns.values()) + 1
    return _read_lines(spark, spec.files).select(
        *(F.when(F.size(fields) >= needed, fields[index]).alias(name) for name, index in columns.items()),
        F.when(_invalid(value), F.lit(INVALID_UTF8))
        .when(F.size(fields) < needed, F.lit(MISSING_COLUMN))
        .alias("reason"),
        F.when(F.size(fields) > len(columns), F.lit(EXTRA_COLUMNS)).alias("note"),
    )


def _read_tsv(spark: SparkSession, spec: InputSpec) -> DataFrame:
    return _read_columns(spark, spec, {"src_raw": spec.src_column, "tgt_raw": spec.tgt_column})


def _read_labelled(spark: SparkSession, spec: InputSpec) -> DataFrame:
    """``label<TAB>text`` lines (or the configured columns); the label with surrounding spaces trimmed."""
    return _relabelled(_read_columns(spark, spec, {"label_raw": spec.label_column, "src_raw": spec.text_column}), spec)


def _numbered_lines(spark: SparkSession, path: str) -> DataFrame:
    """``(line_no, line)`` of one file, read whole so line numbers come from the JVM."""
    lines = F.split(F.col("value"), "\n", -1)
    # A final newline ends the last line; it does not start an empty one.
    lines = F.when(F.element_at(lines, -1) == "", F.slice(lines, F.lit(1), F.size(lines) - 1)).otherwise(lines)
    return spark.read.text(path, wholetext=True).select(F.posexplode(lines).alias("line_no", "line"))


def _read_aligned(spark: SparkSession, spec: InputSpec) -> DataFrame:
    parts = []
    for src_file, tgt_file in zip(spec.files, spec.tgt_files):
        src, tgt = _numbered_lines(spark, src_file), _numbered_lines(spark, tgt_file)
        n_src, n_tgt = src.count(), tgt.count()
        if n_src != n_tgt:
            raise InputError(
                f"line-aligned files differ in length: {src_file} has {n_src} lines, {tgt_file} has {n_tgt}"
            )
        joined = src.alias("s").join(tgt.alias("t"), "line_no")
        s, t = F.col("s.line"), F.col("t.line")
        parts.append(
            joined.select(
                _strip_cr("s.line").alias("src_raw"),
                _strip_cr("t.line").alias("tgt_raw"),
                F.when(_invalid(s) | _invalid(t), F.lit(INVALID_UTF8)).alias("reason"),
                F.lit(None).cast("string").alias("note"),
            )
        )
    return _union(parts)


def _union(frames: Sequence[DataFrame]) -> DataFrame:
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


def _read_trees(spark: SparkSession, spec: InputSpec) -> DataFrame:
    """One labelled tree per line (``pipelines.text.trees``): its root's label and sentence, or with
    ``phrases`` one row per labelled node. A line that is not one tree is one row, dropped as
    ``bad_tree``."""
    lines = _read_lines(spark, spec.files).select(
        _strip_cr("value").alias("line"), F.when(_invalid(F.col("value")), F.lit(INVALID_UTF8)).alias("reason")
    )
    every_node = spec.phrases

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pipelines.text.trees import TreeError, tree_phrases

        for batch in batches:
            rows: dict[str, list[str | None]] = {"label_raw": [], "src_raw": [], "reason": []}
            for line, reason in zip(batch.column("line").to_pylist(), batch.column("reason").to_pylist()):
                try:
                    phrases = tree_phrases(line, every_node) if reason is None else []
                except TreeError:
                    phrases, reason = [], BAD_TREE
                for label, phrase in phrases or [(None, None)]:
                    rows["label_raw"].append(label)
                    rows["src_raw"].append(phrase)
                    rows["reason"].append(reason)
            yield pa.RecordBatch.from_pydict(rows, schema=_TREE_ROWS)

    rows = lines.mapInArrow(parse, "label_raw string, src_raw string, reason string")
    return _relabelled(rows, spec).withColumn("note", F.lit(None).cast("string"))


_TREE_ROWS = pa.schema([("label_raw", pa.string()), ("src_raw", pa.string()), ("reason", pa.string())])
_READERS = {"tsv": _read_tsv, "aligned": _read_aligned, "labelled": _read_labelled, "trees": _read_trees}


def read_inputs(spark: SparkSession, specs: Sequence[InputSpec], ordered: bool = False) -> DataFrame:
    """All inputs as one DataFrame of raw records (see the module docstring for its columns);
    ``ordered`` numbers the lines of text inputs by input, file and line."""
    frames = [
        _read_text(spark, spec, n, ordered)
        if spec.format == "text"
        else _READERS[spec.format](spark, spec)
        .withColumn("position", F.lit(None).cast("long"))
        .withColumn("fixed_split", F.lit(spec.split).cast("string"))
        for n, spec in enumerate(specs)
    ]
    return _union(frames)


def explain_read_failure(specs: Sequence[InputSpec], error: BaseException) -> InputError | None:
    """An InputError naming the input file Spark could not read (a truncated or corrupt ``.gz``),
    when ``error`` is such a failure; None for any other error. Each compressed input is read
    through once, on the driver, only after such a failure."""
    if not any(marker in str(error) for marker in _UNREADABLE):
        return None
    for spec in specs:
        for path in spec.files + spec.tgt_files:
            problem = _gzip_problem(path) if path.endswith(".gz") else None
            if problem:
                return InputError(f"{path}: {problem}; repair or remove the file")
    return InputError(f"an input could not be read to its end: {str(error).splitlines()[0][:300]}")


def _gzip_problem(path: str) -> str | None:
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except EOFError:
        return "truncated gzip file (it ends before its end-of-stream marker)"
    except (OSError, zlib.error) as err:
        return f"not a valid gzip file ({err})"
    return None
