"""Token -> id encoding with Arrow's vectorised kernels."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.specials import UNK_ID
from pipelines.contract.vocab import Vocab


def encode_texts(texts: pa.Array | pa.ChunkedArray, vocab_tokens: pa.Array) -> pa.ListArray:
    """Normalized texts (tokens joined by single spaces, never empty) -> ``list<int32>`` ids;
    tokens missing from ``vocab_tokens`` become ``[UNK]``."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    tokens = pc.split_pattern(texts, " ")
    offsets = pc.subtract(tokens.offsets, tokens.offsets[0])
    ids = pc.fill_null(pc.index_in(tokens.flatten(), value_set=vocab_tokens), UNK_ID).cast(pa.int32())
    return pa.ListArray.from_arrays(offsets, ids)


def table_encoder(vocabs: Mapping[str, Vocab], renames: Mapping[str, str]) -> Callable[[pa.Table], pa.Table]:
    """A function replacing each normalized-text column named in ``vocabs`` by its ids and renaming
    columns per ``renames``; it carries the vocabularies when Spark ships it to its workers."""
    tables = {column: list(vocab.tokens) for column, vocab in vocabs.items()}
    value_sets: dict[str, pa.Array] = {}

    def encode(table: pa.Table) -> pa.Table:
        if not value_sets:
            value_sets.update({column: pa.array(tokens, pa.string()) for column, tokens in tables.items()})
        columns = [encode_texts(table[name], value_sets[name]) if name in value_sets else table[name]
                   for name in table.column_names]
        return pa.table(columns, names=[renames.get(n, n) for n in table.column_names])

    return encode
