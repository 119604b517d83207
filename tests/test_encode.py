"""Token -> id encoding on the Arrow workers, against direct computations."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.contract.pieces import PieceModel, train_piece_model
from pipelines.contract.specials import UNK_ID
from pipelines.spark.encode import encode_pieces, encode_texts
from pipelines.text.normalize import NormalizeOptions, tokenize

WIKIPEDIA = Path(__file__).resolve().parent.parent / "data/sample/wikipedia-en.txt.gz"


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    """2,000 paragraphs of the bundled Wikipedia sample, normalized (numbers become [NUM]), and a
    few odd texts."""
    options = NormalizeOptions.for_language("en")
    with gzip.open(WIKIPEDIA, "rt", encoding="utf-8") as f:
        texts = [" ".join(tokenize(line, options)) for _, line in zip(range(2000), f)]
    return texts + ["", "[NUM]", "a [NUM]b [URL] c", "ça a été naïf à 東京"]


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_pieces_word_by_word_are_the_pieces_of_the_whole_text(paragraphs, kind):
    """Segmenting each distinct word once gives what SentencePiece gives for each text whole."""
    model = PieceModel(train_piece_model(paragraphs[:1000], kind, 2000))
    whole = [model.processor.encode(text) for text in paragraphs]
    assert sum("[NUM]" in text for text in paragraphs) > 100
    assert encode_pieces(pa.array(paragraphs), model).to_pylist() == whole
    sliced = pa.chunked_array([pa.array(paragraphs).slice(7, 300), pa.array(paragraphs[:5])])
    assert encode_pieces(sliced, model).to_pylist() == whole[7:307] + whole[:5]


def test_words_missing_from_the_vocabulary_are_unk():
    ids = encode_texts(pa.array(["the cat", "", "a dog the"]), pa.array(["[PAD]", "[UNK]", "the", "cat"]))
    assert ids.to_pylist() == [[2, 3], [], [UNK_ID, UNK_ID, 2]]
