"""Characters as tokens (``vocab.kind: char``): the characters of the normalized text, where the
specials normalization puts in the text (``[NUM]``, ``[URL]``, ``[UNK]``) stay one symbol each.
The Spark jobs apply this same function on their Arrow workers."""

from __future__ import annotations

import re

from pipelines.contract.specials import TEXT_SPECIALS

_CHARS = re.compile("|".join(re.escape(s) for s in TEXT_SPECIALS) + "|.", re.DOTALL)


def char_tokens(text: str) -> list[str]:
    """The character tokens of a normalized text, in order (code points; specials whole)."""
    return _CHARS.findall(text)


def join_chars(tokens: list[str]) -> str:
    """Character tokens back into text."""
    return "".join(tokens)
