"""word2vec text and binary files, checked against gensim in both directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors

from rnn_models.word_vectors import init_embedding, load_word2vec, save_word2vec

WORDS = ["[UNK]", "the", "l'", "émigré", "naïve", "x"]


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip_through_gensim(tmp_path, binary):
    vectors = torch.randn(len(WORDS), 7, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "v"
    save_word2vec(path, WORDS, vectors, binary=binary)
    loaded = KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert loaded.index_to_key == WORDS
    assert np.allclose(loaded.vectors, vectors.numpy(), rtol=1e-5, atol=1e-6)

    gensim_path = tmp_path / "g"
    loaded.save_word2vec_format(str(gensim_path), binary=binary)
    words, ours = load_word2vec(gensim_path, binary=binary)
    assert words == WORDS and torch.allclose(ours, vectors, rtol=1e-5, atol=1e-6)


def test_unwritable_words_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        save_word2vec(tmp_path / "v", ["a b"], torch.zeros(1, 2))
    with pytest.raises(ValueError, match="2 words for 3 vectors"):
        save_word2vec(tmp_path / "v", ["a", "b"], torch.zeros(3, 2))
    (tmp_path / "bad.txt").write_text("1 3\nword 0.1 0.2\n")
    with pytest.raises(ValueError, match="line 2 has 2 values"):
        load_word2vec(tmp_path / "bad.txt")


def test_pretrained_vectors_are_matched_by_token_then_by_lowercase_form():
    embedding = torch.nn.Embedding(5, 3)
    untouched = embedding.weight[4].detach().clone()
    tokens = ["[PAD]", "Paris", "paris", "London", "zz"]
    words = ["paris", "london", "Paris"]
    vectors = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    coverage = init_embedding(embedding, tokens, words, vectors, freeze=False)
    assert (coverage.exact, coverage.lowercased, coverage.missing) == (2, 1, 1)
    weight = embedding.weight.detach()
    assert torch.equal(weight[1], vectors[2])  # "Paris" has a vector of its own
    assert torch.equal(weight[2], vectors[0])
    assert torch.equal(weight[3], vectors[1])  # "London" takes "london"'s
    assert torch.equal(weight[4], untouched) and coverage.missing_examples == ["zz"]
