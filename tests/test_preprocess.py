"""The preprocessing pipeline end to end: counts, hostile input, determinism, atomic output."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.common.config import load_config, to_dict
from pipelines.contract.errors import ConfigError, InputError, ManifestError, OutputExistsError
from pipelines.contract.manifest import load_manifest
from pipelines.contract.pieces import Codec
from pipelines.contract.specials import SPECIALS
from pipelines.contract.token_stream import read_token_share
from pipelines.contract.vocab import Vocab, given_from_output, load_vocab
from pipelines.spark.preprocess import check_settings, preprocess
from pipelines.spark.readers import resolve_inputs
from pipelines.text.normalize import NormalizeOptions, tokenize


def config(inputs, *overrides, kind="parallel"):
    cfg = to_dict(load_config("preprocess", [f"data.kind={kind}", "output.shards=3", *overrides]))
    cfg["data"]["inputs"] = inputs
    return cfg


def run(spark, tmp_path, inputs, *overrides, name="out", kind="parallel", given=None):
    out = tmp_path / name
    manifest = preprocess(spark, config(inputs, *overrides, kind=kind), out, log=lambda m: None, given=given)
    return out, manifest


def read_split(out: Path, split: str):
    return [row for f in sorted((out / split).glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_toy_pairs(spark, tmp_path, toy_pairs):
    out, m = run(spark, tmp_path, [{"path": str(toy_pairs), "format": "tsv"}])
    assert json.loads((out / "manifest.json").read_text()) == m == load_manifest(out, "parallel")
    counts = m["counts"]
    assert counts["read"] == len(toy_pairs.read_text(encoding="utf-8").splitlines())
    assert counts["read"] == counts["kept"] + sum(counts["dropped"].values())
    assert sum(s["examples"] for s in m["splits"].values()) == counts["kept"]
    src, tgt = Vocab.load(out / "vocab/src.tsv"), Vocab.load(out / "vocab/tgt.tsv")
    assert src.tokens[:6] == SPECIALS and m["vocab"]["src"]["size"] == len(src)
    assert m["vocab"]["tgt"]["fingerprint"] == hashlib.sha256("\n".join(tgt.tokens).encode()).hexdigest()
    rows = read_split(out, "train")
    assert len(rows) == m["splits"]["train"]["examples"]
    assert all(r["src_len"] == len(r["src"]) > 0 and r["tgt_len"] == len(r["tgt"]) > 0 for r in rows)
    # training tokens are all in the vocabulary (min_count 1); ids decode to the normalized text
    assert m["splits"]["train"]["unk"] == {"src": 0, "tgt": 0}
    r = rows[0]
    assert tgt.decode(r["tgt"]) == tokenize(r["tgt_text"], NormalizeOptions.for_language("fr"))
    assert {p.name for p in (out / "train").iterdir()} <= {f"part-0000{i}.parquet" for i in range(3)}
    assert not list(tmp_path.glob(".*tmp*"))


def _same_output(a: Path, b: Path) -> None:
    assert sorted(p.name for p in (a / "vocab").iterdir()) == sorted(p.name for p in (b / "vocab").iterdir())
    for file in (a / "vocab").iterdir():  # vocabularies, and piece models where there are
        assert file.read_bytes() == (b / "vocab" / file.name).read_bytes(), file.name
    for split in ("train", "valid", "test"):
        names = sorted(p.name for p in (a / split).glob("*.parquet"))
        assert names == sorted(p.name for p in (b / split).glob("*.parquet"))
        for name in names:
            assert pq.read_table(a / split / name).equals(pq.read_table(b / split / name)), (split, name)


@pytest.mark.parametrize(
    "vocab",
    [
        ["vocab.min_count=2"],
        ["vocab.kind=unigram", "vocab.max_size=300"],
        ["vocab.kind=bpe", "vocab.max_size=300", "vocab.sample_sentences=200"],
    ],
)
def test_same_output_whatever_the_partitioning(spark, tmp_path, toy_pairs, vocab):
    inputs = [{"path": str(toy_pairs), "format": "tsv"}]
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        spark.conf.set("spark.sql.shuffle.partitions", "1")
        one, m1 = run(spark, tmp_path, inputs, "spark.partitions=1", *vocab, name="one")
        spark.conf.set("spark.sql.shuffle.partitions", "7")
        many, m2 = run(spark, tmp_path, inputs, "spark.partitions=5", *vocab, name="many")
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    _same_output(one, many)
    assert m1["counts"] == m2["counts"] and m1["splits"] == m2["splits"] and m1["vocab"] == m2["vocab"]


def test_subword_pairs(spark, tmp_path, toy_pairs):
    out, m = run(spark, tmp_path, [{"path": str(toy_pairs), "format": "tsv"}], "vocab.kind=bpe", "vocab.max_size=400")
    assert m["vocab_kind"] == "bpe" and load_manifest(out, "parallel") == m
    rows = read_split(out, "train")
    for side, lang in (("src", "en"), ("tgt", "fr")):
        entry = m["vocab"][side]
        vocab, model = load_vocab(out, entry)
        assert entry["kind"] == "bpe" and entry["model"] == f"vocab/{side}.model" and len(vocab) == 400
        assert entry["model_sha256"] == hashlib.sha256((out / entry["model"]).read_bytes()).hexdigest()
        assert entry["settings"]["sampled_examples"] == m["splits"]["train"]["examples"]  # the whole train split
        assert vocab.tokens == model.tokens and vocab.tokens[:6] == SPECIALS
        # the counts are the pieces of the train shards; the length column counts pieces
        assert sum(vocab.counts) == m["splits"]["train"]["tokens"][side] == sum(len(r[side]) for r in rows)
        assert all(r[f"{side}_len"] == len(r[side]) for r in rows)
        words = sum(len(tokenize(r[f"{side}_text"], NormalizeOptions.for_language(lang))) for r in rows)
        assert entry["pieces_per_word"]["train"] == round(sum(vocab.counts) / words, 4) > 1
        # every train shard decodes back to its normalized text
        codec = Codec(vocab.tokens, model)
        for r in rows:
            assert codec.decode(r[side])[0] == tokenize(r[f"{side}_text"], NormalizeOptions.for_language(lang))
    assert m["splits"]["train"]["unk"] == {"src": 0, "tgt": 0}


def test_shared_piece_model(spark, tmp_path, toy_pairs):
    out, m = run(
        spark,
        tmp_path,
        [{"path": str(toy_pairs), "format": "tsv"}],
        "vocab.kind=unigram",
        "vocab.max_size=500",
        "vocab.shared=true",
    )
    assert (out / "vocab/src.model").read_bytes() == (out / "vocab/tgt.model").read_bytes()
    assert (out / "vocab/src.tsv").read_bytes() == (out / "vocab/tgt.tsv").read_bytes()
    vocab, _ = load_vocab(out, m["vocab"]["src"])
    assert sum(vocab.counts) == sum(m["splits"]["train"]["tokens"].values())  # both sides counted


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_a_new_corpus_encoded_with_an_earlier_vocabulary(spark, tmp_path, toy_pairs, kind):
    inputs = [{"path": str(toy_pairs), "format": "tsv"}]
    first, m = run(spark, tmp_path, inputs, f"vocab.kind={kind}", "vocab.max_size=300")
    # another corpus (half the pairs, and a line of words the first has never seen), with the
    # first one's vocabularies: the same ids, unseen words [UNK] (words) and counted
    lines = toy_pairs.read_text(encoding="utf-8").splitlines()[::2] + ["zyxwv qqqq.\tzyxwv qqqq."]
    corpus = tmp_path / "new.tsv"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    given = given_from_output(first)
    out, new = run(
        spark,
        tmp_path,
        [{"path": str(corpus), "format": "tsv"}],
        "split.test=0.0",
        f"vocab.from={first}",
        name="new",
        given=given,
    )
    for side in ("src", "tgt"):
        assert new["vocab"][side]["fingerprint"] == m["vocab"][side]["fingerprint"]
        assert new["vocab"][side]["from"] == str(first) and new["vocab_kind"] == kind
        assert new["vocab"][side].get("model_sha256") == m["vocab"][side].get("model_sha256")
        vocab, _ = load_vocab(out, new["vocab"][side])
        assert sum(vocab.counts) == new["splits"]["train"]["tokens"][side]  # counted in the new shards
    unk = sum(new["splits"][s]["unk"]["src"] for s in ("train", "valid"))
    assert unk > 0 if kind == "word" else unk == 0  # pieces spell unseen words out of seen characters
    # vocabularies made for another language or normalization are refused, naming the key
    with pytest.raises(ConfigError, match="normalize.lowercase=True on the src side, this config gives False"):
        run(spark, tmp_path, inputs, "normalize.lowercase=false", name="x", given=given)
    with pytest.raises(ConfigError, match="its tgt side is 'fr', this data's is 'de'"):
        run(spark, tmp_path, inputs, "data.tgt_lang=de", name="y", given=given)
    # one-sided text takes the side in its language: English text gets the English (source) side
    english = tmp_path / "english.txt"
    english.write_text("\n".join(line.split("\t")[0] for line in lines) + "\n", encoding="utf-8")
    text, mono = run(
        spark,
        tmp_path,
        [{"path": str(english), "format": "text"}],
        "split.test=0.0",
        f"vocab.from={first}",
        kind="monolingual",
        name="text",
        given=given,
    )
    words = mono["vocab"]["words"]
    assert (words["fingerprint"], words.get("model_sha256")) == (
        m["vocab"]["src"]["fingerprint"],
        m["vocab"]["src"].get("model_sha256"),
    )
    if kind == "bpe":
        assert (text / "vocab/words.model").read_bytes() == (first / "vocab/src.model").read_bytes()
    with pytest.raises(
        ConfigError, match="has vocabularies for .'src': 'en', 'tgt': 'fr'.; this data needs one in 'de'"
    ):
        run(
            spark,
            tmp_path,
            [{"path": str(english), "format": "text"}],
            "data.src_lang=de",
            kind="monolingual",
            name="z",
            given=given,
        )


def test_a_piece_model_that_does_not_match_the_shards_is_refused(spark, tmp_path, toy_pairs):
    inputs = [{"path": str(toy_pairs), "format": "tsv"}]
    out, m = run(spark, tmp_path, inputs, "vocab.kind=unigram", "vocab.max_size=300")
    other, _ = run(spark, tmp_path, inputs, "vocab.kind=unigram", "vocab.max_size=300", "seed=1", name="other")
    assert (other / "vocab/src.model").read_bytes() != (out / "vocab/src.model").read_bytes()
    (out / "vocab/src.model").write_bytes((other / "vocab/src.model").read_bytes())
    with pytest.raises(ManifestError, match="not the piece model the shards were encoded with"):
        load_vocab(out, m["vocab"]["src"])
    (out / "vocab/src.model").unlink()
    with pytest.raises(ManifestError, match="src.model is missing"):
        load_vocab(out, m["vocab"]["src"])


def test_a_corpus_too_small_for_the_piece_vocabulary(spark, tmp_path, toy_pairs):
    with pytest.raises(InputError, match=r"vocab.max_size=20000 is more than the \d+ unigram pieces"):
        run(spark, tmp_path, [{"path": str(toy_pairs), "format": "tsv"}], "vocab.kind=unigram", "vocab.max_size=20000")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def hostile_tsv(path: Path) -> dict:
    """A TSV of bad records; returns the expected drop counts."""
    lines = [
        b"Hello there.\tBonjour.",  # kept
        b"Bad \xff\xfe bytes.\tMauvais octets.",  # invalid_utf8
        b"",  # missing_column (an empty line has no tab)
        b"no tab on this line",  # missing_column
        b"Extra columns.\tColonnes en plus.\tCC-BY x",  # kept, extra column ignored
        b"a " * 500_000 + b"\tb",  # line_too_long (1 MB)
        b"Ctrl\x07 char\x1b here.\tContr\x00ole ici.",  # kept: control characters become spaces
        b"\tVide.",  # empty
        b"Yes.\tOui , bien s\xc3\xbbr , tout \xc3\xa0 fait .",  # length_ratio
        b" ".join([b"w"] * 60) + b"\t" + b" ".join([b"m"] * 60),  # too_long
        b"HELLO THERE.\tBonjour.",  # duplicate (same tokens after lowercasing)
        b"Windows line.\tLigne Windows.\r",  # kept, CR stripped
        b"Replacement \xef\xbf\xbd char.\tCaract\xc3\xa8re.",  # invalid_utf8 (U+FFFD)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return {
        "invalid_utf8": 2,
        "missing_column": 2,
        "line_too_long": 1,
        "empty": 1,
        "length_ratio": 1,
        "too_long": 1,
        "duplicate": 1,
        "too_short": 0,
    }


def test_hostile_input_is_kept_or_counted(spark, tmp_path):
    expected = hostile_tsv(tmp_path / "hostile.tsv")
    out, m = run(
        spark, tmp_path, [{"path": str(tmp_path / "hostile.tsv"), "format": "tsv"}], "split.valid=0.0", "split.test=0.0"
    )
    counts = m["counts"]
    assert counts["read"] == 13
    assert counts["dropped"] == expected
    assert counts["kept"] == 4 and counts["notes"] == {"extra_columns_ignored": 1}
    texts = sorted((r["src_text"], r["tgt_text"]) for r in read_split(out, "train"))
    assert ("Windows line.", "Ligne Windows.") in texts
    assert ("Ctrl\x07 char\x1b here.", "Contr\x00ole ici.") in texts


def test_aligned_files_of_different_lengths_stop_the_job(spark, tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n")
    with gzip.open(tmp_path / "a.fr.gz", "wt") as f:
        f.write("un\ndeux\n")
    with pytest.raises(InputError) as err:
        run(spark, tmp_path, [{"src": str(tmp_path / "a.en"), "tgt": str(tmp_path / "a.fr.gz")}])
    assert "a.en has 3 lines" in str(err.value) and "a.fr.gz has 2" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*")), "a failed run left a temporary directory behind"


def test_aligned_inputs_with_pinned_splits(spark, tmp_path):
    """Multi30k's layout: official splits; a training pair equal to a test pair is dropped."""

    def write(name, lines):
        with gzip.open(tmp_path / name, "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    write("train.en.gz", ["A dog runs.", "Two cats sleep.", "A man sings.", "A very long sentence " * 20])
    write("train.fr.gz", ["Un chien court.", "Deux chats dorment.", "Un homme chante.", "Une phrase " * 20])
    write("test.en.gz", ["A man sings.", "A very long test sentence " * 20])
    write("test.fr.gz", ["Un homme chante.", "Une phrase de test " * 20])
    inputs = [
        {"src": str(tmp_path / "train.en.gz"), "tgt": str(tmp_path / "train.fr.gz"), "split": "train"},
        {"src": str(tmp_path / "test.en.gz"), "tgt": str(tmp_path / "test.fr.gz"), "split": "test"},
    ]
    out, m = run(spark, tmp_path, inputs)
    assert m["splits"]["train"]["examples"] == 2 and m["splits"]["valid"]["examples"] == 0
    assert m["counts"]["dropped"]["duplicate"] == 1 and m["counts"]["dropped"]["too_long"] == 1
    test_rows = read_split(out, "test")
    assert sorted(r["src_text"] for r in test_rows) == sorted(["A man sings.", "A very long test sentence " * 20])


def test_monolingual(spark, tmp_path, toy_text):
    out, m = run(
        spark,
        tmp_path,
        [{"path": str(toy_text), "format": "text"}],
        "vocab.max_size=100",
        "filter.max_len=1000",
        "filter.dedup=false",
        kind="monolingual",
    )
    assert m["kind"] == "monolingual" and list(m["vocab"]) == ["words"]
    assert len(Vocab.load(out / "vocab/words.tsv")) == 100
    rows = read_split(out, "train")
    assert set(rows[0]) == {"hash", "ids", "ids_len", "text"}
    assert 0.5 < m["splits"]["train"]["coverage"]["words"] < 1.0
    with pytest.raises(ManifestError, match="parallel data expected"):
        load_manifest(out, "parallel")


def test_monolingual_pieces_read_as_a_token_stream(spark, tmp_path, toy_text):
    out, m = run(
        spark,
        tmp_path,
        [{"path": str(toy_text), "format": "text"}],
        "vocab.kind=unigram",
        "vocab.max_size=500",
        "filter.max_len=1000",
        kind="monolingual",
    )
    vocab, model = load_vocab(out, m["vocab"]["words"])
    assert m["vocab"]["words"]["model"] == "vocab/words.model" and model is not None and len(vocab) == 500
    share = read_token_share(out, m["splits"]["train"]["files"], 0, 1, 0)
    assert len(share.tokens) == m["splits"]["train"]["tokens"]["words"] == sum(vocab.counts)
    assert m["vocab"]["words"]["pieces_per_word"]["train"] > 1


def _stream(out, manifest, split):
    """A split's text as the language model reads it: ids in order, <eos> after each line."""
    vocab = Vocab.load(out / "vocab/words.tsv")
    return [vocab.tokens[i] for i in read_token_share(out, manifest["splits"][split]["files"], 0, 1, eos=True).tokens]


def test_a_text_kept_in_order_by_characters_and_split_by_offset(spark, tmp_path):
    speeches = [
        ["First Citizen:", "Before we proceed any further, hear me speak."],
        ["All:", "Speak, speak."],
        ["Second Citizen:", "  One word, good citizens: 3 or 4!"],
    ]
    lines = [line for n in range(40) for speech in speeches[n % 3 :] + [[f"Line {n}."]] for line in speech + [""]]
    path = tmp_path / "play.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = [
        "vocab.kind=char",
        "normalize.tokenize=none",
        "normalize.lowercase=false",
        "filter.min_len=0",
        "filter.dedup=false",
        "output.order=input",
        "filter.max_len=1000",
    ]
    inputs = [{"path": str(path), "format": "text", "split_at": [0.8, 0.9]}]
    out, m = run(spark, tmp_path, inputs, *settings, kind="monolingual")
    # by hand: a line goes where the character offset of its start falls
    total = sum(len(line) + 1 for line in lines)
    expected, offset = {"train": [], "valid": [], "test": []}, 0
    for line in lines:
        split = "train" if offset < int(total * 0.8) else "valid" if offset < int(total * 0.9) else "test"
        expected[split] += [*line, "<eos>"]
        offset += len(line) + 1
    for split in ("train", "valid", "test"):
        assert _stream(out, m, split) == expected[split], split
    assert m["order"] == "input" and m["counts"]["dropped"]["empty"] == 0
    assert m["splits"]["train"]["examples"] + m["splits"]["valid"]["examples"] + m["splits"]["test"]["examples"] == len(
        lines
    )
    vocab = Vocab.load(out / "vocab/words.tsv")
    assert set(vocab.tokens[len(SPECIALS) :]) == set(expected["train"]) - {"<eos>"}  # the train characters
    assert vocab.counts[vocab.index[" "]] == expected["train"].count(" ") and vocab.counts[1] == 0
    # the same shards whatever the partitioning
    again, _ = run(spark, tmp_path, inputs, *settings, "spark.partitions=5", name="again", kind="monolingual")
    for split in ("train", "valid", "test"):
        assert read_split(out, split) == read_split(again, split)
    assert (out / "vocab/words.tsv").read_bytes() == (again / "vocab/words.tsv").read_bytes()


def test_a_tokenized_corpus_read_as_it_is(spark, tmp_path):
    files = {
        "train": [" the <unk> rose N N to $ N <unk> ", " it 's n't over ", " it 's n't over ", " a b-c "],
        "valid": [" the rose <unk> "],
        "test": [" new-york rose "],
    }
    inputs = []
    for split, lines in files.items():
        (tmp_path / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        inputs.append({"path": str(tmp_path / f"ptb.{split}.txt"), "format": "text", "split": split})
    out, m = run(
        spark,
        tmp_path,
        inputs,
        "normalize.tokenize=spaces",
        "normalize.unk_token=<unk>",
        "normalize.unicode=none",
        "normalize.lowercase=false",
        "filter.dedup=false",
        "output.order=input",
        kind="monolingual",
    )
    vocab = Vocab.load(out / "vocab/words.tsv")
    assert "<unk>" not in vocab.index and "n't" in vocab.index and "$" in vocab.index and "b-c" in vocab.index
    assert vocab.counts[1] == 2  # the corpus's own <unk>s are [UNK]
    for split, lines in files.items():
        words = [
            ("[UNK]" if w == "<unk>" or w not in vocab.index else w) for line in lines for w in line.split() + ["<eos>"]
        ]
        assert _stream(out, m, split) == words, split
    assert m["splits"]["test"]["unk"]["words"] == 1  # new-york is not in train
    assert m["splits"]["train"]["examples"] == 4  # the repeated line kept


def test_existing_output_is_kept_unless_overwrite(spark, tmp_path, toy_pairs):
    inputs = [{"path": str(toy_pairs), "format": "tsv"}]
    out, first = run(spark, tmp_path, inputs)
    with pytest.raises(OutputExistsError):
        run(spark, tmp_path, inputs)
    assert load_manifest(out) == first
    out, second = run(spark, tmp_path, inputs, "overwrite=true", "vocab.max_size=50")
    assert second["vocab"]["src"]["size"] == 50 and not list(tmp_path.glob(".out*"))


def test_bad_inputs_are_named(spark, tmp_path):
    with pytest.raises(InputError, match="no file matches"):
        run(spark, tmp_path, [{"path": str(tmp_path / "missing*.tsv"), "format": "tsv"}])
    with pytest.raises(InputError, match="unknown keys"):
        run(spark, tmp_path, [{"path": "x", "format": "tsv", "colum": 1}])
    with pytest.raises(InputError, match="does not fit"):
        run(spark, tmp_path, [{"path": "x", "format": "text"}])
    assert not (tmp_path / "out").exists()


def test_shared_vocabulary(spark, tmp_path, toy_pairs):
    out, m = run(spark, tmp_path, [{"path": str(toy_pairs), "format": "tsv"}], "vocab.shared=true")
    src, tgt = (out / "vocab/src.tsv").read_bytes(), (out / "vocab/tgt.tsv").read_bytes()
    assert src == tgt and m["shared_vocab"] and m["vocab"]["src"]["fingerprint"] == m["vocab"]["tgt"]["fingerprint"]
    vocab = Vocab.load(out / "vocab/src.tsv").index
    assert "the" in vocab and "le" in vocab  # English and French words in one table
    assert m["splits"]["train"]["unk"] == {"src": 0, "tgt": 0}


@pytest.mark.parametrize(
    "override, message",
    [
        ("split.valid=-0.1", r"split.valid must be a finite number in \[0, 1\], got -0.1"),
        ("split.valid=0.96", "leave room for train"),
        ("vocab.max_size=-3", "vocab.max_size must be an integer >= 6"),
        ("output.shards=0", "output.shards must be"),
        ("filter.min_len=0", "filter.min_len must be"),
        ("data.kind=images", "data.kind must be one of"),
        ("filter.max_ratio=-1", "filter.max_ratio must be a finite number >= 0"),
        ("vocab.kind=chars", "vocab.kind must be one of"),
        ("vocab.sample_sentences=0", "vocab.sample_sentences must be"),
        ("vocab.character_coverage=0.5", "vocab.character_coverage must be"),
        ("normalize.tokenize=none", "needs vocab.kind=char"),
        ("output.order=input", "it is for monolingual data"),
        ("output.order=random", "output.order must be one of hash, input"),
        ("normalize.tokenize=lines", "normalize.tokenize must be one of"),
    ],
)
def test_bad_settings_are_refused_before_any_work(override, message):
    with pytest.raises(ConfigError, match=message):
        check_settings(config([{"path": "unused", "format": "tsv"}], override))


def test_bad_stream_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="set filter.dedup=false"):
        check_settings(config([], "output.order=input", kind="monolingual"))
    with pytest.raises(ConfigError, match="unk_token works with word and char"):
        check_settings(
            config([], "normalize.tokenize=spaces", "normalize.unk_token=<unk>", "vocab.kind=bpe", kind="monolingual")
        )
    (tmp_path / "a.txt").write_text("x\n")
    for split_at in ([0.9], [0.95, 0.9], [0, 0.5], "0.9"):
        with pytest.raises(InputError, match="split_at must be two character fractions"):
            resolve_inputs([{"path": str(tmp_path / "a.txt"), "split_at": split_at}], "monolingual")
    with pytest.raises(InputError, match="split or split_at, not both"):
        resolve_inputs([{"path": str(tmp_path / "a.txt"), "split_at": [0.8, 0.9], "split": "train"}], "monolingual")


def labelled_tsv(path: Path) -> dict[str, int]:
    """Labelled lines, hostile ones included; returns the drops expected with data.labels=[neg, pos]."""
    lines = [
        b"pos\tA fine film.",
        b"neg\tA dull film.",
        b" pos \tLabels are trimmed.",
        b"neg\tThe same text.",
        b"pos\tThe same text.",  # duplicates by text: one is dropped
        b"\tNo label here.",  # missing_label
        b"meh\tAn unknown label.",  # unknown_label
        b"pos",  # missing_column
        b"neg\t",  # empty
        b"pos\tBad \xff byte.",  # invalid_utf8
        b"neg\tExtra\tcolumn.",
    ]  # kept, noted
    path.write_bytes(b"\n".join(lines) + b"\n")
    return {"missing_label": 1, "unknown_label": 1, "missing_column": 1, "empty": 1, "invalid_utf8": 1, "duplicate": 1}


def test_labelled_text_keeps_and_counts_its_labels(spark, tmp_path):
    expected = labelled_tsv(tmp_path / "labelled.tsv")
    out, m = run(
        spark,
        tmp_path,
        [{"path": str(tmp_path / "labelled.tsv"), "format": "labelled"}],
        "data.labels=[neg,pos]",
        "split.valid=0.0",
        "split.test=0.0",
        kind="labelled",
    )
    assert m["kind"] == "labelled" and list(m["vocab"]) == ["words"]
    assert {k: v for k, v in m["counts"]["dropped"].items() if v} == expected
    assert m["counts"]["read"] == 11 and m["counts"]["kept"] == 5
    assert m["counts"]["notes"] == {"extra_columns_ignored": 1}
    rows = read_split(out, "train")
    assert set(rows[0]) == {"hash", "ids", "ids_len", "label", "text"}
    by_text = {r["text"]: r["label"] for r in rows}
    assert by_text["A fine film."] == 1 and by_text["A dull film."] == 0 and by_text["Labels are trimmed."] == 1
    assert by_text["Extra"] == 0  # the text column of a line with one column too many
    assert m["labels"]["names"] == ["neg", "pos"] and m["labels"]["from"] == "data.labels"
    assert m["labels"]["counts"]["train"] == [sum(1 for v in by_text.values() if v == k) for k in (0, 1)]
    assert (out / "vocab/labels.tsv").read_text().splitlines() == [
        "id\tlabel\tcount",
        f"0\tneg\t{m['labels']['counts']['train'][0]}",
        f"1\tpos\t{m['labels']['counts']['train'][1]}",
    ]


def test_labels_taken_from_the_data_sorted_as_numbers(spark, tmp_path):
    (tmp_path / "l.tsv").write_text("10\tten\n2\ttwo\n-1\tminus one\n2\tdeux\n\tnone\n")
    out, m = run(
        spark, tmp_path, [{"path": str(tmp_path / "l.tsv")}], "split.valid=0.0", "split.test=0.0", kind="labelled"
    )
    assert m["labels"]["names"] == ["-1", "2", "10"] and m["labels"]["from"] == "data"
    assert {r["text"]: r["label"] for r in read_split(out, "train")} == {"ten": 2, "two": 1, "minus one": 0, "deux": 1}
    assert m["counts"]["dropped"]["missing_label"] == 1 and m["counts"]["dropped"]["unknown_label"] == 0


def test_labelled_output_is_the_same_whatever_the_partitioning(spark, tmp_path):
    inputs = [{"path": str(Path(__file__).parent.parent / "data/sample/sentiment-en.tsv.gz"), "format": "labelled"}]
    one, _ = run(spark, tmp_path, inputs, "spark.partitions=1", "output.shards=2", name="one", kind="labelled")
    four, m = run(spark, tmp_path, inputs, "spark.partitions=4", "output.shards=2", name="four", kind="labelled")
    _same_output(one, four)
    assert sum(m["labels"]["counts"]["test"]) == m["splits"]["test"]["examples"] > 0


@pytest.mark.parametrize(
    "override, message",
    [("data.labels=[pos]", "two or more distinct labels"), ("data.labels=[a,a]", "two or more distinct labels")],
)
def test_bad_label_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        check_settings(config([], override, kind="labelled"))
    with pytest.raises(ConfigError, match="data.labels is for data.kind=labelled"):
        check_settings(config([], "data.labels=[a,b]"))
    with pytest.raises(InputError, match="does not fit data.kind='labelled'"):
        resolve_inputs([{"path": __file__, "format": "tsv"}], "labelled")
    with pytest.raises(InputError, match="label_column and text_column must be different"):
        resolve_inputs([{"path": __file__, "label_column": 1}], "labelled")


def test_labelled_trees_give_sentences_or_every_phrase(spark, tmp_path):
    trees = [
        "(3 (2 It) (4 (2 's) (4 good)))",
        "(1 (2 Not) (1 (2 so) (0 bad)))",
        "(4 (4 Fine)",  # unbalanced
        "(0 (1 Awful) (0 !))",
    ]
    (tmp_path / "train.txt").write_text("\n".join(trees) + "\n")
    (tmp_path / "test.tsv").write_text("1\tIt 's fine .\n0\tNot good .\n")
    inputs = [
        {
            "path": str(tmp_path / "train.txt"),
            "format": "trees",
            "phrases": True,
            "split": "train",
            "label_map": {0: 0, 1: 0, 3: 1, 4: 1},
        },
        {"path": str(tmp_path / "test.tsv"), "format": "labelled", "split": "test"},
    ]
    out, m = run(spark, tmp_path, inputs, "data.labels=[0,1]", kind="labelled", name="phrases")
    rows = {r["text"]: r["label"] for r in read_split(out, "train")}
    # every node of the good trees but the neutral (2) ones, once each; the test file's labels unmapped
    assert rows == {
        "It 's good": 1,
        "'s good": 1,
        "good": 1,
        "Not so bad": 0,
        "so bad": 0,
        "bad": 0,
        "Awful !": 0,
        "Awful": 0,
        "!": 0,
    }
    assert {r["text"]: r["label"] for r in read_split(out, "test")} == {"It 's fine .": 1, "Not good .": 0}
    dropped = m["counts"]["dropped"]
    assert dropped["bad_tree"] == 1 and dropped["unknown_label"] == 4 and dropped["duplicate"] == 0
    assert m["counts"]["read"] == 9 + 1 + 4 + 2  # kept phrases, the bad tree, the neutral ones, the test lines
    # without phrases: one example per tree, its root
    out, m = run(
        spark,
        tmp_path,
        [{**inputs[0], "phrases": False}],
        "data.labels=[0,1]",
        "split.valid=0.0",
        "split.test=0.0",
        kind="labelled",
        name="roots",
    )
    assert {r["text"]: r["label"] for r in read_split(out, "train")} == {"It 's good": 1, "Not so bad": 0, "Awful !": 0}
    with pytest.raises(InputError, match="label_map must map labels to labels"):
        resolve_inputs([{"path": str(tmp_path / "train.txt"), "format": "trees", "label_map": [1, 2]}], "labelled")
