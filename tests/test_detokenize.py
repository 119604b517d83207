"""Detokenization, placeholders filled back from the source, unknown words."""

from __future__ import annotations

import pytest

from pipelines.text.detokenize import detokenize, restore
from pipelines.text.normalize import NormalizeOptions, placeholder_values, tokenize

CASES = [
    ("en", 'Two young, White males don\'t sit (outside) near bushes; is it "big"?'),
    ("fr", 'Un homme, dit : "l\'homme est-il là ?" (oui) peut-être des chiens.'),
    ("en", "A man in a T-shirt and/or jeans."),
]


@pytest.mark.parametrize("lang,text", CASES)
def test_detokenize_inverts_tokenize(lang, text):
    options = NormalizeOptions.for_language(lang, lowercase=False)
    assert detokenize(tokenize(text, options), lang) == text


def test_placeholders_restored_in_order():
    options = NormalizeOptions.for_language("en", lowercase=True)
    text = "Call 555 1234 or see HTTP://Example.com/A today, 3.5 times"
    tokens = tokenize(text, options)
    values = placeholder_values(text, options)
    assert values == {"[URL]": ["HTTP://Example.com/A"], "[NUM]": ["555", "1234", "3.5"]}
    assert tokens.count("[NUM]") == 3 and tokens.count("[URL]") == 1
    out = restore(["[NUM]", "[URL]", "[NUM]", "[NUM]", "[NUM]"], values, tokens, [])
    assert out == ["555", "HTTP://Example.com/A", "1234", "3.5", "3.5"]  # more than the source had: the last
    assert restore(["[NUM]"], {"[NUM]": [], "[URL]": []}, [], []) == ["[NUM]"]


def test_unknown_words_kept_or_copied_from_the_attended_source_word():
    source = ["the", "zorblax", "sleeps"]
    assert restore(["le", "[UNK]", "dort"], {}, source, [0, 1, 2]) == ["le", "[UNK]", "dort"]
    assert restore(["le", "[UNK]", "dort"], {}, source, [0, 1, 2], copy_unk=True) == ["le", "zorblax", "dort"]
    assert restore(["[UNK]"], {}, source, [-1], copy_unk=True) == ["[UNK]"]  # no attention: nothing to copy
