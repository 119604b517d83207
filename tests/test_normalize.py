"""Normalization rules, and the Spark rendering held equal to the pure-Python twin on real text."""

from __future__ import annotations

import gzip

import pytest
from pyspark.sql import functions as F

from pipelines.contract.errors import ConfigError
from pipelines.spark.normalize import spark_normalize, spark_token_count
from pipelines.text.chars import char_tokens
from pipelines.text.normalize import NormalizeOptions, normalize, tokenize
from tests.conftest import PROJECT

FR = NormalizeOptions.for_language("fr")
EN = NormalizeOptions.for_language("en")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, world!", ["hello", ",", "world", "!"]),
        (
            "It costs 3,5 euros or 1,000.25 $ on 12:30",
            ["it", "costs", "[NUM]", "euros", "or", "[NUM]", "$", "on", "[NUM]", ":", "[NUM]"],
        ),
        ("see https://example.com/a?b=1. and www.x.org, ok", ["see", "[URL]", ".", "and", "[URL]", ",", "ok"]),
        ("http:// alone", ["http", ":", "/", "/", "alone"]),
        ("don't it's O'Brien", ["don", "'t", "it", "'s", "o", "'brien"]),
        ("'quoted' dogs'", ["'", "quoted", "'", "dogs", "'"]),
        ("(\u201cnice\u201d)", ["(", '"', "nice", '"', ")"]),
        ("  many   spaces\t\ttabs  ", ["many", "spaces", "tabs"]),
        ("", []),
        ("MP3 1990s", ["mp", "[NUM]", "[NUM]", "s"]),
    ],
)
def test_english_rules(text, expected):
    assert tokenize(text, EN) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("L'homme qu'on a vu", ["l'", "homme", "qu'", "on", "a", "vu"]),
        ("L\u2019homme", ["l'", "homme"]),
        (
            "Va\u202f! Vraiment\u00a0? \u00ab\u2009oui\u2009\u00bb",
            ["va", "!", "vraiment", "?", "\u00ab", "oui", "\u00bb"],
        ),
        ("aujourd'hui", ["aujourd'", "hui"]),
        ("Est-ce vrai ?", ["est", "-", "ce", "vrai", "?"]),
    ],
)
def test_french_rules(text, expected):
    assert tokenize(text, FR) == expected


def test_invisible_and_control_characters():
    assert tokenize("zero\u200bwidth soft\u00adhyphen \ufeffbom", EN) == ["zerowidth", "softhyphen", "bom"]
    assert tokenize("bell\x07and\x00nul\x1bescape", EN) == ["bell", "and", "nul", "escape"]


def test_unicode_forms():
    decomposed = "Cafe\u0301 \ufb01n"  # e + combining acute, the fi ligature
    assert tokenize(decomposed, NormalizeOptions(unicode_form="NFKC")) == ["caf\u00e9", "fin"]
    assert tokenize(decomposed, NormalizeOptions(unicode_form="NFC")) == ["caf\u00e9", "\ufb01n"]
    assert tokenize(decomposed, NormalizeOptions(unicode_form="none")) == ["cafe\u0301", "\ufb01n"]


def test_lowercase_is_optional():
    assert tokenize("The Cat", NormalizeOptions(lowercase=False)) == ["The", "Cat"]


def test_placeholders_survive_renormalization():
    tokens = tokenize("Call 555 1234 or visit http://x.io today.", EN)
    assert tokens == ["call", "[NUM]", "[NUM]", "or", "visit", "[URL]", "today", "."]
    assert tokenize(" ".join(tokens), NormalizeOptions(lowercase=False)) == tokens


def test_apostrophe_style_by_language():
    assert NormalizeOptions.for_language("fr").apostrophe == "left"
    assert NormalizeOptions.for_language("it").apostrophe == "left"
    assert NormalizeOptions.for_language("en").apostrophe == "right"
    assert NormalizeOptions.for_language("de", apostrophe="left").apostrophe == "left"
    with pytest.raises(ConfigError, match="normalize.apostrophe must be one of"):
        NormalizeOptions(apostrophe="middle")
    with pytest.raises(ConfigError, match="normalize.unicode must be one of"):
        NormalizeOptions(unicode_form="NFD")


HARD_CASES = [
    "Ça coûte 3\u202f000\u00a0€ — voir https://exemple.fr/prix?x=1&y=2.",
    "''Double'' `quotes` and \u2018single\u2019 ones, rock'n'roll, dogs' toys",
    "Tabs\tand\x0bvertical\x0cfeeds\r and \x85 NEL \u2028 LS",
    "\u0130stanbul \u039f\u0394\u039f\u03a3 \u00c9T\u00c9 \u1e9e",
    "Emoji \U0001f600 and CJK \u3001\u3002 and math \u2211 x\u00b2 \u00bd",
    "[NUM] [URL] [UNK] <go> <eos>",
    "www.Example.COM/Path, WWW.X.ORG; HTTP://A.B/C",
    "\ufb01 \ufb02 \uff21\uff42\uff43 \uff11\uff12 \u2460",
    "l\u2019\u00e9t\u00e9 d\u02bcabord qu'il",
]


def _spark_tokens(spark, texts, options):
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i int, text string")
    df = spark_normalize(df, "text", "norm", options)
    rows = df.select("i", "norm", spark_token_count(F.col("norm")).alias("n")).orderBy("i").collect()
    tokens = [r["norm"].split(" ") if r["norm"] else [] for r in rows]
    assert [r["n"] for r in rows] == [len(t) for t in tokens]
    return tokens


@pytest.mark.parametrize(
    "options",
    [
        FR,
        EN,
        NormalizeOptions(unicode_form="NFC", lowercase=False),
        NormalizeOptions(unicode_form="none", apostrophe="left"),
    ],
)
def test_spark_equals_python_on_hard_cases(spark, options):
    assert _spark_tokens(spark, HARD_CASES, options) == [tokenize(t, options) for t in HARD_CASES]


def test_tokenize_spaces_keeps_a_tokenized_corpus_and_maps_its_unknown_mark():
    ptb = NormalizeOptions(unicode_form="none", lowercase=False, tokenize="spaces", unk_token="<unk>")
    line = " pierre <unk> N years old will join the board as a nonexecutive director nov. N <unk>-ish n't $ "
    assert tokenize(line, ptb) == [
        "pierre",
        "[UNK]",
        "N",
        "years",
        "old",
        "will",
        "join",
        "the",
        "board",
        "as",
        "a",
        "nonexecutive",
        "director",
        "nov.",
        "N",
        "<unk>-ish",
        "n't",
        "$",
    ]
    assert normalize(" a\tb  c ", NormalizeOptions(tokenize="spaces")) == "a b c"
    with pytest.raises(ConfigError, match="unk_token needs normalize.tokenize=spaces"):
        NormalizeOptions(unk_token="<unk>")
    with pytest.raises(ConfigError, match="one token"):
        NormalizeOptions(tokenize="spaces", unk_token="a b")


def test_tokenize_none_keeps_the_text_for_characters():
    kept = NormalizeOptions(lowercase=False, tokenize="none")
    assert normalize("  First Citizen:  3 \u00a0x ", kept) == "  First Citizen:  3  x "
    assert normalize("", kept) == "" and tokenize("  a  b ", kept) == ["a", "b"]
    assert char_tokens("a [NUM]b [UNK][URL] \U0001f600") == [
        "a",
        " ",
        "[NUM]",
        "b",
        " ",
        "[UNK]",
        "[URL]",
        " ",
        "\U0001f600",
    ]


@pytest.mark.parametrize(
    "options",
    [
        NormalizeOptions(lowercase=False, tokenize="none"),
        NormalizeOptions(unicode_form="none", tokenize="spaces", unk_token="<unk>"),
        NormalizeOptions(tokenize="spaces", unk_token="[x]*."),
    ],
)
def test_spark_equals_python_for_each_tokenize_mode(spark, options):
    texts = HARD_CASES + [" <unk> a<unk> <unk>b <unk>  <unk> ", "[x]*. [x]*.. a[x]*.", "  lead and trail  ", ""]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i int, text string")
    norm = F.col("norm")
    rows = (
        spark_normalize(df, "text", "norm", options)
        .select("i", "norm", spark_token_count(norm, options).alias("n"))
        .orderBy("i")
        .collect()
    )
    assert [r["norm"] for r in rows] == [normalize(t, options) for t in texts]
    assert [r["n"] for r in rows] == [len(tokenize(t, options)) for t in texts]


def test_spark_equals_python_on_sample_corpora(spark):
    """The bundled sample: every Tatoeba pair (both sides) and 3,000 Wikipedia paragraphs."""
    with gzip.open(PROJECT / "data/sample/tatoeba-en-fr.tsv.gz", "rt", encoding="utf-8") as f:
        pairs = [line.rstrip("\n").split("\t") for line in f]
    with gzip.open(PROJECT / "data/sample/wikipedia-en.txt.gz", "rt", encoding="utf-8") as f:
        wiki = [next(f).rstrip("\n") for _ in range(3000)]
    for texts, options in [([p[0] for p in pairs] + wiki, EN), ([p[1] for p in pairs], FR)]:
        spark_result = _spark_tokens(spark, texts, options)
        mismatches = [(t, s, tokenize(t, options)) for t, s in zip(texts, spark_result) if s != tokenize(t, options)]
        assert not mismatches, mismatches[:3]


def test_spark_null_text_gives_null(spark):
    df = spark.createDataFrame([(None,), ("A  b",), ("",)], "text string")
    assert [r["t"] for r in spark_normalize(df, "text", "t", EN).collect()] == [None, "a b", ""]
    assert normalize("A  b", EN) == "a b"
