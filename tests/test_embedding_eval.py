"""Analogy accuracy and WordSim correlation, checked against gensim and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from scipy.stats import spearmanr

from rnn_models.embedding_eval import (
    Analogies,
    analogy_accuracy,
    load_similarity,
    nearest_neighbours,
    similarity_correlation,
    spearman,
)

WORDS = [
    "king",
    "queen",
    "man",
    "woman",
    "paris",
    "france",
    "rome",
    "italy",
    "big",
    "bigger",
    "small",
    "smaller",
    "tall",
    "taller",
    "cold",
    "colder",
]


def _vectors(seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(len(WORDS), 12, generator=g)
    # make some analogies hold: queen = king - man + woman, italy = france - paris + rome, ...
    base[1] = base[0] - base[2] + base[3] + 0.05 * torch.randn(12, generator=g)
    base[7] = base[5] - base[4] + base[6] + 0.05 * torch.randn(12, generator=g)
    base[11] = base[9] - base[8] + base[10] + 0.05 * torch.randn(12, generator=g)
    return base


def _questions(tmp_path):
    path = tmp_path / "questions.txt"
    path.write_text(
        ": family\nKing Queen Man Woman\nMan Woman King Queen\n"
        ": capital-world\nParis France Rome Italy\nParis France Berlin Germany\n"
        ": gram2-comparative\nbig bigger small smaller\nbig bigger tall taller\n"
        "small smaller cold colder\ncold colder tall taller\n"
    )
    return path


def test_analogies_match_gensim(tmp_path):
    vectors = _vectors()
    path = _questions(tmp_path)
    ours = analogy_accuracy(WORDS, vectors, Analogies.load(path), restrict=14)
    kv = KeyedVectors(12)
    kv.add_vectors(WORDS, vectors.numpy())
    overall, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=14, case_insensitive=True)
    gensim_total = next(s for s in sections if s["section"] == "Total accuracy")
    assert ours["covered"] == len(gensim_total["correct"]) + len(gensim_total["incorrect"]) == 5
    assert ours["accuracy"] == pytest.approx(overall)
    assert ours["semantic"] == 1.0 and ours["questions"] == 8


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (40,), generator=g).double()
    y = x + torch.randint(0, 3, (40,), generator=g)
    assert spearman(x, y) == pytest.approx(spearmanr(x.numpy(), y.numpy()).statistic)


def test_similarity_files_and_correlation(tmp_path):
    tsv = tmp_path / "ws.tsv"
    tsv.write_text(
        "# comment\n# Word 1\tWord 2\tHuman\nKing\tqueen\t8.5\nking\tcold\t1.0\nparis\tfrance\t7\n"
        "rome\tunknownword\t5\n"
    )
    csv = tmp_path / "ws.csv"
    csv.write_text(
        "Word 1,Word 2,Human (mean)\r\nking,queen,8.5\r\nking,cold,1.0\r\nparis,france,7\r\nrome,unknownword,5\r\n"
    )
    pairs = load_similarity(tsv)
    assert pairs == load_similarity(csv) and pairs[0] == ("king", "queen", 8.5)
    result = similarity_correlation(WORDS, _vectors(), pairs)
    assert result["covered"] == 3 and result["pairs"] == 4
    unit = torch.nn.functional.normalize(_vectors(), dim=1)
    cosines = [float(unit[WORDS.index(a)] @ unit[WORDS.index(b)]) for a, b, _ in pairs[:3]]
    assert result["spearman"] == pytest.approx(spearmanr(cosines, [8.5, 1.0, 7]).statistic)
    (tmp_path / "bad.tsv").write_text("a\tb\t1\nc\td\tx\n")
    with pytest.raises(ValueError, match="bad.tsv:2"):
        load_similarity(tmp_path / "bad.tsv")


def test_neighbours():
    vectors = torch.eye(4)
    vectors[1] = torch.tensor([1.0, 0.1, 0, 0])
    result = nearest_neighbours(["a", "b", "c", "d"], vectors, ["a", "zzz"], n=2)
    assert list(result) == ["a"] and result["a"][0][0] == "b" and np.isclose(result["a"][0][1], 0.995, atol=1e-3)
