"""Vocabulary: special tokens with fixed ids, selection rules and the on-disk format.

Shared by the preprocessing pipeline (which builds vocabularies) and by the jobs that read them.
Ids: the special tokens first, then words by descending count, ties broken by the token (code-point
order, which equals the UTF-8 byte order Spark sorts by), so the same counts give the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

PAD, UNK, NUM, URL, GO, EOS = "[PAD]", "[UNK]", "[NUM]", "[URL]", "<go>", "<eos>"
SPECIALS: tuple[str, ...] = (PAD, UNK, NUM, URL, GO, EOS)
PAD_ID, UNK_ID, NUM_ID, URL_ID, GO_ID, EOS_ID = range(len(SPECIALS))
# Specials that can occur in normalized text and so are counted like words.
COUNTED_SPECIALS = (NUM, URL)


@dataclass(frozen=True)
class Vocab:
    """An id <-> token table with the training-set count of every entry."""

    tokens: tuple[str, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, tokens: Iterable[str]) -> list[int]:
        index = self.index
        return [index.get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def fingerprint(self) -> str:
        """SHA-256 of the token list: two vocabularies with the same ids have the same fingerprint."""
        return hashlib.sha256("\n".join(self.tokens).encode("utf-8")).hexdigest()

    def save(self, path: Path) -> None:
        """Write ``id<TAB>token<TAB>count`` lines with a header."""
        lines = ["id\ttoken\tcount"] + [f"{i}\t{t}\t{c}" for i, (t, c) in enumerate(zip(self.tokens, self.counts))]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        tokens, counts = [], []
        with open(path, encoding="utf-8") as f:
            if f.readline().rstrip("\n") != "id\ttoken\tcount":
                raise ValueError(f"{path}: not a vocabulary file (header 'id<TAB>token<TAB>count' expected)")
            for expected, line in enumerate(f):
                i, token, count = line.rstrip("\n").split("\t")
                if int(i) != expected:
                    raise ValueError(f"{path}: id {i} on line {expected + 2}, expected {expected}")
                tokens.append(token)
                counts.append(int(count))
        return cls(tuple(tokens), tuple(counts))


def select_vocab(ranked: Sequence[tuple[str, int]], max_size: int, min_count: int, total: int) -> Vocab:
    """Build a vocabulary from ``(token, count)`` pairs already ordered by count desc, token asc.

    ``max_size`` counts the special tokens; words below ``min_count`` are left out. ``[NUM]`` and
    ``[URL]`` take their counts from ``ranked`` and never use a word slot. ``total`` is the number of
    tokens counted; what the vocabulary does not cover is the count of ``[UNK]``.
    """
    if max_size < len(SPECIALS):
        raise ValueError(f"vocab.max_size must be at least {len(SPECIALS)} (the special tokens)")
    special_counts = {t: 0 for t in SPECIALS}
    words: list[tuple[str, int]] = []
    for token, count in ranked:
        if token in special_counts:
            special_counts[token] = count
        elif count >= min_count and len(words) < max_size - len(SPECIALS):
            words.append((token, count))
    special_counts[UNK] = total - sum(special_counts.values()) - sum(c for _, c in words)
    if special_counts[UNK] < 0:
        raise ValueError(f"total={total} is smaller than the counts of the selected tokens")
    tokens = SPECIALS + tuple(t for t, _ in words)
    counts = tuple(special_counts[t] for t in SPECIALS) + tuple(c for _, c in words)
    return Vocab(tokens, counts)


def rank_tokens(counts: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Order ``(token, count)`` pairs as vocabularies rank them: count descending, then token."""
    return sorted(counts, key=lambda tc: (-tc[1], tc[0]))


def count_tokens(df: "DataFrame", groups: Mapping[str, Sequence[str]]) -> "DataFrame":
    """Spark: ``(vocab, token, count)``: for each vocabulary name in ``groups``, the tokens of its
    normalized-text columns (tokens separated by single spaces). Each partition counts with
    Arrow's C++ kernels (split, value_counts, group_by); Spark adds up the partial counts."""
    from pyspark.sql import functions as F

    groups = {group: list(columns) for group, columns in groups.items()}
    columns = sorted({column for group in groups.values() for column in group})

    def count_partition(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import pyarrow as pa
        import pyarrow.compute as pc

        partial = []
        for batch in batches:
            for group, names in groups.items():
                for name in names:
                    tokens = pc.split_pattern(batch.column(name).drop_null(), " ").flatten()
                    counted = pc.value_counts(tokens.filter(pc.not_equal(tokens, "")))
                    partial.append(pa.table({"vocab": pa.array([group] * len(counted), pa.string()),
                                             "token": counted.field("values"), "count": counted.field("counts")}))
        if partial:
            total = pa.concat_tables(partial).group_by(["vocab", "token"]).aggregate([("count", "sum")])
            yield from total.rename_columns(["vocab", "token", "count"]).to_batches()

    partial = df.select(*columns).mapInArrow(count_partition, "vocab string, token string, count long")
    return partial.groupBy("vocab", "token").agg(F.sum("count").alias("count"))


def top_tokens(counts: "pa.Table", max_size: int, min_count: int) -> tuple[list[tuple[str, int]], int]:
    """The ranked candidates for a vocabulary of ``max_size`` from a ``(token, count)`` Arrow table
    (one vocabulary's counts), and the total token count."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = pc.sum(counts["count"]).as_py() or 0
    specials = pa.array(COUNTED_SPECIALS, pa.string())
    wanted = pc.or_(pc.greater_equal(counts["count"], min_count), pc.is_in(counts["token"], value_set=specials))
    counts = counts.filter(wanted)
    # Arrow sorts strings by their UTF-8 bytes, which is the tokens' code-point order.
    order = pc.sort_indices(counts, sort_keys=[("count", "descending"), ("token", "ascending")])
    top = counts.take(order[: max_size - len(SPECIALS) + len(COUNTED_SPECIALS)])
    return list(zip(top["token"].to_pylist(), top["count"].to_pylist())), int(total)
