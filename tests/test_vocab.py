"""Vocabulary: fixed special ids, deterministic ranking, limits, file round trip, Spark counting."""

from __future__ import annotations

from collections import Counter

import pyarrow.compute as pc
import pytest

from pipelines.contract.errors import ConfigError, InputError
from pipelines.contract.specials import NUM, SPECIALS, UNK, UNK_ID
from pipelines.contract.vocab import Vocab, rank_tokens, select_vocab
from pipelines.spark.count import count_tokens, top_tokens
from pipelines.spark.normalize import spark_normalize
from pipelines.text.normalize import NormalizeOptions, tokenize


def test_special_ids_are_fixed():
    assert SPECIALS == ("[PAD]", "[UNK]", "[NUM]", "[URL]", "<go>", "<eos>")
    vocab = select_vocab([("a", 3)], max_size=10, min_count=1, total=3)
    assert vocab.tokens[:6] == SPECIALS and vocab.index["a"] == 6


def test_ties_are_broken_by_token():
    ranked = rank_tokens([("b", 2), ("a", 2), ("c", 5), ("\u00e9", 2), ("Z", 2)])
    assert ranked == [("c", 5), ("Z", 2), ("a", 2), ("b", 2), ("\u00e9", 2)]
    assert select_vocab(ranked, 50, 1, 13).tokens[6:] == ("c", "Z", "a", "b", "\u00e9")


def test_max_size_counts_specials_and_min_count_filters():
    ranked = rank_tokens([("a", 5), ("b", 4), ("c", 3), ("d", 1), (NUM, 7)])
    vocab = select_vocab(ranked, max_size=8, min_count=2, total=20)
    assert vocab.tokens == SPECIALS + ("a", "b")
    assert vocab.counts[SPECIALS.index(NUM)] == 7
    assert vocab.counts[UNK_ID] == 20 - 7 - 5 - 4  # c and d are not covered
    with pytest.raises(ConfigError, match="vocab.max_size must be at least 6"):
        select_vocab(ranked, max_size=3, min_count=1, total=20)


def test_encode_decode_and_file_round_trip(tmp_path):
    vocab = select_vocab(rank_tokens([("chat", 2), ("le", 3)]), 10, 1, 5)
    assert vocab.encode(["le", "chien", "chat"]) == [6, UNK_ID, 7]
    assert vocab.decode([6, 1, 7]) == ["le", UNK, "chat"]
    vocab.save(tmp_path / "v.tsv")
    loaded = Vocab.load(tmp_path / "v.tsv")
    assert loaded == vocab and loaded.fingerprint() == vocab.fingerprint()
    assert (tmp_path / "v.tsv").read_text().splitlines()[:2] == ["id\ttoken\tcount", "0\t[PAD]\t0"]


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "bad.tsv").write_text("token\tcount\n")
    with pytest.raises(InputError, match="not a vocabulary"):
        Vocab.load(tmp_path / "bad.tsv")


def test_a_corpus_with_its_own_unknown_words():
    # the text's own [UNK]s (normalize.unk_token) and the words left out both count as [UNK]
    ranked = rank_tokens([("a", 5), (UNK, 4), ("b", 2), ("c", 1)])
    vocab = select_vocab(ranked, max_size=8, min_count=1, total=12)
    assert vocab.tokens[6:] == ("a", "b") and vocab.counts[UNK_ID] == 4 + 1 and sum(vocab.counts) == 12


def test_spark_counting_matches_python(spark, toy_text):
    lines = toy_text.read_text(encoding="utf-8").splitlines()
    options = NormalizeOptions()
    expected = Counter(t for line in lines for t in tokenize(line, options))
    df = spark_normalize(spark.createDataFrame([(line,) for line in lines], "text string"), "text", "norm", options)
    counts = count_tokens(df.withColumn("again", df["norm"]), {"one": ["norm"], "both": ["norm", "again"]}).toArrow()
    assert counts.num_rows == 2 * len(expected)
    both = counts.filter(pc.equal(counts["vocab"], "both"))
    assert dict(zip(both["token"].to_pylist(), both["count"].to_pylist())) == {t: 2 * c for t, c in expected.items()}
    ranked, total = top_tokens(counts.filter(pc.equal(counts["vocab"], "one")), max_size=200, min_count=2)
    assert total == sum(expected.values())
    # candidates: the words, plus the specials text can hold ([UNK], [NUM], [URL]), which take no word slot
    python_ranked = [(t, c) for t, c in rank_tokens(expected.items()) if c >= 2 or t == NUM][: 200 - 6 + 3]
    assert ranked == python_ranked
