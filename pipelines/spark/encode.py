"""Token -> id encoding on Spark's Arrow workers: whole words with Arrow's vectorised kernels,
characters and pieces in Python (pieces with the SentencePiece model shipped to the workers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.pieces import PieceModel
from pipelines.contract.specials import UNK_ID
from pipelines.contract.vocab import Vocab
from pipelines.text.chars import char_tokens


def encode_texts(texts: pa.Array | pa.ChunkedArray, vocab_tokens: pa.Array) -> pa.ListArray:
    """Normalized texts (tokens joined by single spaces) -> ``list<int32>`` ids; tokens missing
    from ``vocab_tokens`` become ``[UNK]``; an empty text has no ids."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    # an empty text would split into one empty token: split a null instead, which gives no tokens
    texts = pc.if_else(pc.equal(texts, ""), pa.scalar(None, pa.string()), texts)
    tokens = pc.split_pattern(texts, " ")
    offsets = pc.subtract(tokens.offsets, tokens.offsets[0])
    ids = pc.fill_null(pc.index_in(tokens.flatten(), value_set=vocab_tokens), UNK_ID).cast(pa.int32())
    return pa.ListArray.from_arrays(offsets, ids)


def encode_chars(texts: pa.Array | pa.ChunkedArray, index: Mapping[str, int]) -> pa.ListArray:
    """Normalized texts -> ``list<int32>`` ids of their character tokens (``[UNK]`` for characters
    outside the vocabulary)."""
    return pa.array(
        [[index.get(c, UNK_ID) for c in char_tokens(text)] for text in texts.to_pylist()], pa.list_(pa.int32())
    )


def encode_pieces(texts: pa.Array | pa.ChunkedArray, model: PieceModel) -> pa.ListArray:
    """Normalized texts -> ``list<int32>`` piece ids (the most likely segmentation).

    SentencePiece never lets a piece cross a space, so a text's segmentation is its words'
    segmentations one after the other: each distinct word of the batch is segmented once, and the
    texts are assembled from those with Arrow's kernels (the same ids as segmenting each text
    whole, several times faster on real text, where most words repeat)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = pc.if_else(pc.equal(texts, ""), pa.scalar(None, pa.string()), texts)  # "": no words
    words = pc.split_pattern(texts, " ")
    flat = pc.dictionary_encode(words.flatten())
    distinct = pa.array(model.encode(flat.dictionary.to_pylist()), pa.list_(pa.int32()))
    # each word's pieces, in order, and where each text's pieces start
    per_word = distinct.take(flat.indices)
    word_ends = np.concatenate([[0], np.cumsum(pc.list_value_length(per_word).to_numpy(zero_copy_only=False))])
    offsets = word_ends[np.asarray(words.offsets) - words.offsets[0].as_py()].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), per_word.flatten())


def table_encoder(
    vocabs: Mapping[str, Vocab | bytes], renames: Mapping[str, str], lengths: Mapping[str, str], chars: bool = False
) -> Callable[[pa.Table], pa.Table]:
    """A function replacing each normalized-text column named in ``vocabs`` by its ids (a Vocab for
    words, or characters with ``chars``; a serialized piece model for pieces), setting its length
    column (``lengths``) to the number of ids, and renaming columns per ``renames``. It carries the
    vocabularies and models when Spark ships it to its workers."""
    words = {column: list(v.tokens) for column, v in vocabs.items() if isinstance(v, Vocab)}
    pieces = {column: bytes(v) for column, v in vocabs.items() if not isinstance(v, Vocab)}
    encoders: dict[str, Callable[[pa.ChunkedArray], pa.ListArray]] = {}

    def encode(table: pa.Table) -> pa.Table:
        if not encoders:  # built once per worker process, on first use
            for column, tokens in words.items():
                if chars:
                    encoders[column] = lambda texts, i={t: n for n, t in enumerate(tokens)}: encode_chars(texts, i)
                else:
                    encoders[column] = lambda texts, v=pa.array(tokens, pa.string()): encode_texts(texts, v)
            for column, proto in pieces.items():
                encoders[column] = lambda texts, m=PieceModel(proto): encode_pieces(texts, m)
        columns = {
            name: encoders[name](table[name]) if name in encoders else table[name] for name in table.column_names
        }
        for name, length in lengths.items():
            columns[length] = pc.list_value_length(columns[name]).cast(pa.int32())
        return pa.table(list(columns.values()), names=[renames.get(n, n) for n in columns])

    return encode
