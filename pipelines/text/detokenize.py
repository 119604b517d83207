"""Turn model output back into text: placeholders restored from the source, unknown words handled,
tokens joined by the inverse of ``pipelines.text.normalize``'s splitting rules.

Used alike by ``jobs.translate`` and by the validation BLEU of the trainer, so the scores measure
what users get.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipelines.contract.specials import NUM, UNK, URL
from pipelines.text.normalize import ELISION_LANGUAGES

_NO_SPACE_BEFORE = frozenset(".,)]}%…")
_NO_SPACE_AFTER = frozenset("([{¿¡$£€#@")
_JOINERS = frozenset("-/")  # between two words: peut - être -> peut-être
_QUOTES = frozenset("\"'")
# French typography puts a space before these; other languages do not.
_HIGH_PUNCT = frozenset("!?;:")


def restore(
    tokens: Sequence[str],
    placeholders: Mapping[str, Sequence[str]],
    source_tokens: Sequence[str],
    alignment: Sequence[int],
    copy_unk: bool = False,
) -> list[str]:
    """Replace the k-th ``[NUM]``/``[URL]`` of ``tokens`` with the k-th value the source had (the
    last one when the output has more; left as is when the source had none), and with
    ``copy_unk`` each ``[UNK]`` with the source token it attended to most."""
    seen = {NUM: 0, URL: 0}
    out = []
    for i, token in enumerate(tokens):
        if token in seen and placeholders.get(token):
            values = placeholders[token]
            token = values[min(seen[token], len(values) - 1)]
            seen[tokens[i]] += 1
        elif token == UNK and copy_unk and i < len(alignment) and 0 <= alignment[i] < len(source_tokens):
            token = source_tokens[alignment[i]]
        out.append(token)
    return out


def detokenize(tokens: Sequence[str], lang: str) -> str:
    """Join tokens into text: no space before closing punctuation, none after opening punctuation,
    elided words glued to the next one (``l' homme`` -> ``l'homme``) or clitics to the previous
    (``don 't`` -> ``don't``), hyphens and slashes between words closed up, quotes paired."""
    french = lang.lower().split("-")[0] == "fr"
    elision = lang.lower().split("-")[0] in ELISION_LANGUAGES
    text, glue_next, open_quotes = "", True, {q: False for q in _QUOTES}
    for i, token in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        glue = glue_next
        glue_next = False
        if token in _QUOTES:
            opening = not open_quotes[token]
            open_quotes[token] = opening
            glue = glue or not opening
            glue_next = opening
        elif token in _NO_SPACE_BEFORE or (token in _HIGH_PUNCT and not french):
            glue = True
        elif token in _NO_SPACE_AFTER:
            glue_next = True
        elif token in _JOINERS and _is_word(prev) and _is_word(nxt):
            glue, glue_next = True, True
        elif len(token) > 1 and token.startswith("'") and not elision:
            glue = True
        if elision and len(token) > 1 and token.endswith("'"):
            glue_next = True
        text += token if glue or not text else " " + token
    return text


def _is_word(token: str) -> bool:
    return bool(token) and token[0].isalnum()
