"""Monolingual shards as one flat token stream, and each training worker's share of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.contract.specials import EOS_ID


@dataclass
class TokenShare:
    """A contiguous slice of the stream: token ids and the (global) sentence of each token."""

    tokens: np.ndarray
    sentences: np.ndarray
    start: int
    total: int


def read_token_share(
    data_dir: Path, files: Sequence[str], rank: int, world: int, max_tokens: int = 0, eos: bool = False
) -> TokenShare:
    """Worker ``rank`` of ``world`` gets tokens ``[rank * T / world, (rank + 1) * T / world)`` of the
    stream made by the ``ids`` of ``files`` in order (``T`` capped at ``max_tokens`` when > 0), so
    shares differ by at most one token; with ``eos`` every example (document) is followed by
    ``<eos>``. Only the files that overlap the share are read."""
    extra = int(eos)
    lengths = [
        pq.read_table(Path(data_dir) / f, columns=["ids_len"]).column(0).to_numpy().astype(np.int64) + extra
        for f in files
    ]
    file_tokens = np.array([int(x.sum()) for x in lengths], dtype=np.int64)
    total = int(file_tokens.sum()) if max_tokens <= 0 else min(int(file_tokens.sum()), max_tokens)
    lo, hi = rank * total // world, (rank + 1) * total // world
    tokens, sentences = [], []
    file_start, first_sentence = 0, 0
    for name, file_lengths, count in zip(files, lengths, file_tokens):
        file_end = file_start + int(count)
        if file_end > lo and file_start < hi:
            ids = pc.list_flatten(pq.read_table(Path(data_dir) / name, columns=["ids"]).column(0))
            ids = ids.to_numpy().astype(np.int32)
            if eos:  # after each example's ids
                ids = np.insert(ids, np.cumsum(file_lengths - 1), EOS_ID)
            rows = np.repeat(
                np.arange(first_sentence, first_sentence + len(file_lengths), dtype=np.int64), file_lengths
            )
            a, b = max(lo, file_start) - file_start, min(hi, file_end) - file_start
            tokens.append(ids[a:b])
            sentences.append(rows[a:b])
        file_start, first_sentence = file_end, first_sentence + len(file_lengths)

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    return TokenShare(cat(tokens, np.int32), cat(sentences, np.int64), lo, total)
