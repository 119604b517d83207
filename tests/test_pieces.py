"""Piece models (SentencePiece) and the codec: determinism, the special tokens' ids, round trips on
real text with placeholders, sampling, and corpora too small for the size asked."""

from __future__ import annotations

import pytest

from pipelines.contract.errors import InputError
from pipelines.contract.pieces import WORD_START, Codec, PieceModel, train_piece_model, word_forms
from pipelines.contract.specials import GO_ID, NUM, NUM_ID, PAD_ID, SPECIALS, UNK, UNK_ID, URL, URL_ID
from pipelines.text.detokenize import restore
from pipelines.text.normalize import NormalizeOptions, placeholder_values, tokenize

EN = NormalizeOptions.for_language("en")


@pytest.fixture(scope="module")
def sentences(toy_pairs) -> list[str]:
    """The toy corpus's English side, normalized as preprocessing does (tokens joined by spaces)."""
    lines = toy_pairs.read_text(encoding="utf-8").splitlines()
    return [" ".join(tokenize(line.split("\t")[0], EN)) for line in lines]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def model(request, sentences) -> PieceModel:
    return PieceModel(train_piece_model(sentences, request.param, 300))


def test_the_same_sentences_give_the_same_model(sentences):
    for kind in ("bpe", "unigram"):
        first, second = (train_piece_model(sentences, kind, 300) for _ in range(2))
        assert first == second
        assert train_piece_model(sentences[1:], kind, 300) != first  # and the model depends on them


def test_special_tokens_keep_their_ids(model):
    assert model.tokens[: len(SPECIALS)] == SPECIALS and len(model) == 300
    ids = model.encode([f"i have {NUM} cats at {URL}"])[0]
    assert ids.count(NUM_ID) == 1 and ids.count(URL_ID) == 1  # one piece each, never split
    assert not {PAD_ID, GO_ID, 5} & set(ids)  # padding and the frame are never in the text
    # pieces of the text are never the specials' strings
    assert all(model.tokens[i] not in SPECIALS for i in ids if i not in (NUM_ID, URL_ID))


def test_round_trip_on_real_text_with_placeholders(model, sentences):
    codec = Codec(model.tokens, model)
    for text in sentences:
        words = text.split(" ")
        ids, owners = codec.encode(words)
        assert len(owners) == len(ids) and owners[-1] == len(words) - 1
        decoded, heads = codec.decode(ids)
        assert decoded == words
        assert [owners[h] for h in heads] == list(range(len(words)))  # each word's head id is one of its own
    raw = "Tom paid 25 dollars at https://example.com/shop on 3 May."
    words = tokenize(raw, EN)
    assert NUM in words and URL in words
    ids, owners = codec.encode(words)
    decoded, heads = codec.decode(ids)
    assert decoded == words
    restored = restore(decoded, placeholder_values(raw, EN), words, [owners[h] for h in heads])
    assert "25" in restored and "https://example.com/shop" in restored and "3" in restored


def test_unknown_characters_become_unk_and_are_copied_back(model):
    codec = Codec(model.tokens, model)
    words = ["the", "ǂxoon", "cat"]
    ids, owners = codec.encode(words)
    assert UNK_ID in ids
    decoded, heads = codec.decode(ids)
    assert len(decoded) == 3 and UNK in decoded[1]
    assert decoded[0] == "the" and decoded[2] == "cat"


def test_word_codec_is_the_vocabulary():
    tokens = list(SPECIALS) + ["the", "cat"]
    codec = Codec(tokens)
    assert codec.encode(["the", "dog", "cat"]) == ([6, UNK_ID, 7], [0, 1, 2])
    assert codec.decode([7, 6]) == (["cat", "the"], [0, 1])


def test_codec_refuses_a_vocabulary_that_is_not_the_models(model):
    with pytest.raises(InputError, match="does not match its piece model"):
        Codec(list(model.tokens[:-1]) + ["other"], model)


def test_heads_skip_a_bare_word_start(model):
    ids = model.encode([f"at {NUM}"])[0]
    pieces = [model.tokens[i] for i in ids]
    words, heads = model.decode_words(ids)
    assert words == ["at", NUM]
    assert ids[heads[1]] == NUM_ID  # not the bare "▁" before it
    if WORD_START in pieces:
        assert pieces.index(WORD_START) < heads[1]


def test_sampling_is_reproducible_and_decodes_to_the_same_text(model, sentences):
    texts = sentences[:200]
    best = model.encode(texts)
    first, again, other = (model.sample(texts, 0.3, seed) for seed in (7, 7, 8))
    assert first == again
    assert first != other and first != best  # another draw, and not the most likely segmentation
    assert [model.processor.decode(ids) for ids in first] == texts


def test_a_corpus_too_small_for_the_size_is_a_clear_error(sentences):
    with pytest.raises(InputError, match=r"vocab.max_size=5000 is more than the \d+ unigram pieces the 20 training"):
        train_piece_model(sentences[:20], "unigram", 5000)
    with pytest.raises(InputError, match="no room for the .* distinct characters"):
        train_piece_model(sentences, "bpe", 20)
    with pytest.raises(InputError, match="no training sentences"):
        train_piece_model([], "bpe", 100)


def test_not_a_piece_model_is_a_clear_error():
    with pytest.raises(InputError, match="not a SentencePiece model"):
        PieceModel(b"not a model")


def test_word_forms_find_whole_words_among_pieces():
    assert word_forms(["[PAD]", "[NUM]", "\u2581cat", "s", "\u2581", "\u2581the"]) == [
        "[PAD]",
        "[NUM]",
        "cat",
        "##s",
        "##\u2581",
        "the",
    ]
