"""Text normalization and tokenization rules, in one place, with two renderings.

``tokenize`` / ``normalize`` here are the pure-Python rendering, used to translate new text;
``pipelines.spark.normalize`` renders the same rules (built here by ``patterns(java=True)``) as
Spark SQL expressions (JVM only, no Python UDF). Both apply the same steps in the same order:

1. Unicode normalization (NFKC by default; ICU in the JVM, ``unicodedata`` in Python).
2. One character table: control characters and odd spaces (U+00A0, U+202F, U+2009, ...) become a
   space; zero-width characters, soft hyphens and private-use characters are removed; curly
   apostrophes become ``'`` and curly double quotes ``"``.
3. Optional lowercasing.
4. URLs become ``[URL]``, then numbers become ``[NUM]``.
5. Punctuation is split into tokens (``[URL]`` and ``[NUM]`` stay whole); apostrophes at a word's
   edge are tokens, an apostrophe inside a word stays with the left part (``l' homme``, French
   style) or the right part (``don 't``).
6. A corpus's own mark for unknown words (``unk_token``, e.g. the Penn Treebank's ``<unk>``)
   becomes ``[UNK]`` where it is a whole token.
7. Split on spaces (Spark keeps the normalized text: the tokens joined by single spaces).

``tokenize`` chooses how much of this applies: ``words`` (all of it, the default), ``spaces``
(steps 4 and 5 skipped: text that is already tokenized, such as the Penn Treebank, keeps its
tokens) or ``none`` (steps 4 to 7 skipped: the text is kept as it is after lowercasing, spaces
included, for character vocabularies that model the text itself).

Some steps are skipped where they cannot change the text (no ``://`` or ``www.`` for URLs, ASCII
without control characters or backticks for the character table): the same guards in both
renderings, for speed only.

The regular expressions avoid ``\\w``, ``\\s``, ``\\d``, ``\\b`` and case-insensitive matching,
which mean different things in Java and Python; character classes are explicit code-point ranges.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pipelines.contract.errors import ConfigError
from pipelines.contract.specials import NUM, UNK, URL

UNICODE_FORMS = ("NFKC", "NFC", "none")
APOSTROPHE_STYLES = ("left", "right")
TOKENIZE_MODES = ("words", "spaces", "none")
# Languages whose apostrophe marks an elision of the word on its left (l'homme, dell'anno).
ELISION_LANGUAGES = frozenset({"fr", "it", "ca", "oc", "ga"})

Ranges = tuple[tuple[int, int], ...]

_CONTROL: Ranges = ((0x00, 0x1F), (0x7F, 0x9F))
_SPACES: Ranges = (
    (0x00A0, 0x00A0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)
_REMOVED: Ranges = (
    (0x00AD, 0x00AD),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
)
_APOSTROPHES = "\u2018\u2019\u201b\u02bc\u0060\u00b4\u2032\uff07"
_DOUBLE_QUOTES = "\u201c\u201d\u201e\u201f"
# ASCII characters the table changes: control characters and the backtick.
ASCII_IN_TABLE = "[\\x00-\\x1f\\x7f`]"
URL_HINTS = ("://", "www.", "WWW.")

# Characters split off as tokens of their own (the apostrophe is handled separately).
_PUNCT: Ranges = (
    (0x21, 0x26),
    (0x28, 0x2F),
    (0x3A, 0x40),
    (0x5B, 0x5F),
    (0x7B, 0x7E),
    (0xA1, 0xA9),
    (0xAB, 0xAC),
    (0xAE, 0xB1),
    (0xB6, 0xB8),
    (0xBB, 0xBB),
    (0xBF, 0xBF),
    (0xD7, 0xD7),
    (0xF7, 0xF7),
    (0x2010, 0x2017),
    (0x201A, 0x201A),
    (0x201C, 0x2027),
    (0x2030, 0x2031),
    (0x2033, 0x205E),
    (0x20A0, 0x20CF),
    (0x2190, 0x23FF),
    (0x2500, 0x27BF),
    (0x2E00, 0x2E7F),
    (0x3001, 0x303F),
    (0x1F000, 0x1FAFF),
)


@dataclass(frozen=True)
class NormalizeOptions:
    """How one side of a corpus is normalized."""

    unicode_form: str = "NFKC"
    lowercase: bool = True
    apostrophe: str = "right"
    tokenize: str = "words"
    unk_token: str | None = None

    def __post_init__(self) -> None:
        if self.unicode_form not in UNICODE_FORMS:
            raise ConfigError(f"normalize.unicode must be one of {UNICODE_FORMS}, got {self.unicode_form!r}")
        if self.apostrophe not in APOSTROPHE_STYLES:
            raise ConfigError(f"normalize.apostrophe must be one of {APOSTROPHE_STYLES}, got {self.apostrophe!r}")
        if self.tokenize not in TOKENIZE_MODES:
            raise ConfigError(f"normalize.tokenize must be one of {TOKENIZE_MODES}, got {self.tokenize!r}")
        if self.unk_token is not None:
            if not isinstance(self.unk_token, str) or not self.unk_token or " " in self.unk_token:
                raise ConfigError(f"normalize.unk_token must be one token (no spaces) or null, got {self.unk_token!r}")
            if self.tokenize != "spaces":
                raise ConfigError("normalize.unk_token needs normalize.tokenize=spaces (a corpus tokenized already)")

    @classmethod
    def for_language(
        cls,
        lang: str,
        unicode_form: str = "NFKC",
        lowercase: bool = True,
        apostrophe: str = "auto",
        tokenize: str = "words",
        unk_token: str | None = None,
    ) -> "NormalizeOptions":
        """Options for ``lang``; ``apostrophe='auto'`` picks the elision style for French and kin."""
        if apostrophe == "auto":
            apostrophe = "left" if lang.lower().split("-")[0] in ELISION_LANGUAGES else "right"
        return cls(
            unicode_form=unicode_form,
            lowercase=lowercase,
            apostrophe=apostrophe,
            tokenize=tokenize,
            unk_token=unk_token,
        )


def _char_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for lo, hi in _CONTROL + _SPACES:
        table.update({c: " " for c in range(lo, hi + 1)})
    for lo, hi in _REMOVED:
        table.update({c: "" for c in range(lo, hi + 1)})
    table.update({ord(c): "'" for c in _APOSTROPHES})
    table.update({ord(c): '"' for c in _DOUBLE_QUOTES})
    return table


CHAR_TABLE = _char_table()


def _escape(c: int, java: bool) -> str:
    return f"\\x{{{c:x}}}" if java else f"\\U{c:08x}"


def _char_class(ranges: Ranges, java: bool, extra: str = "", negate: bool = False) -> str:
    body = "".join(_escape(lo, java) if lo == hi else f"{_escape(lo, java)}-{_escape(hi, java)}" for lo, hi in ranges)
    return f"[{'^' if negate else ''}{extra}{body}]"


def _fast_class(ranges: Ranges, java: bool, extra: str = "") -> str:
    """The same set as ``_char_class`` in a form Java tests quickly: the characters below U+0100 as
    single characters (Java compiles them to one bitmap) and the other ranges behind a one-range
    guard. A plain class is a chain of one test per range, paid by every letter."""
    low = "".join(_escape(c, java) for lo, hi in ranges for c in range(lo, min(hi, 0xFF) + 1))
    high = tuple((max(lo, 0x100), hi) for lo, hi in ranges if hi > 0xFF)
    if not high:
        return f"[{extra}{low}]"
    guard = _char_class(((high[0][0], high[-1][1]),), java)
    return f"(?:[{extra}{low}]|(?={guard}){_char_class(high, java)})"


def unk_pattern(token: str) -> str:
    """The regular expression (Java and Python alike) of ``token`` as a whole space-separated token."""
    escaped = "".join(f"\\{c}" if c.isascii() and not c.isalnum() else c for c in token)
    return f"(?<![^ ]){escaped}(?![^ ])"


@dataclass(frozen=True)
class _Patterns:
    url: str
    num: str
    punct: str


def patterns(java: bool) -> _Patterns:
    url_end = r"[^ \"<>.,;:!?'()\[\]{}]"
    url = r"(?:(?:[hH][tT][tT][pP][sS]?|[fF][tT][pP])://|www\.|WWW\.)[^ \"<>]*" + url_end
    num = r"[0-9]+(?:[.,][0-9]+)*"
    punct = _fast_class(_PUNCT, java)
    word_char = _char_class(_PUNCT, java, extra=" ", negate=True)  # not a space, not punctuation
    # Each apostrophe alternative starts by matching or peeking at "'", so the (costly) lookbehinds
    # run only at apostrophes: this halves the cost of the pass on ordinary text.
    edge_apostrophes = f"'+(?!{word_char})|(?=')(?<!{word_char})'+"
    inner_apostrophe = "(?=')(?<=[^ '])'(?=[^ '])"
    placeholder = r"\[(?:NUM|URL)\]"
    # The leading lookahead lets ordinary characters fail after two quick tests.
    start = _fast_class(_PUNCT, java, extra="'")
    return _Patterns(
        url=url, num=num, punct=f"(?={start})(?:({placeholder}|{punct}|{edge_apostrophes})|({inner_apostrophe}))"
    )


_PY = patterns(java=False)
_PY_URL = re.compile(_PY.url)
_PY_NUM = re.compile(_PY.num)
_PY_PUNCT = re.compile(_PY.punct)
_PY_ASCII_IN_TABLE = re.compile(ASCII_IN_TABLE)
# Group 1 (punctuation, edge apostrophes) is padded with spaces; group 2 (an apostrophe inside a
# word) goes with the word on its left or right. An unmatched group is replaced by "".
REPLACEMENT = {"left": ("\\g<2> \\g<1> ", "$2 $1 "), "right": (" \\g<1> \\g<2>", " $1 $2")}


def _clean(text: str, options: NormalizeOptions) -> str:
    """Steps 1 and 2: Unicode normalization and the character table."""
    if options.unicode_form != "none":
        text = unicodedata.normalize(options.unicode_form, text)
    if not text.isascii() or _PY_ASCII_IN_TABLE.search(text):
        text = text.translate(CHAR_TABLE)
    return text


def _steps(text: str, options: NormalizeOptions) -> str:
    """Steps 1 to 6: the text before it is split (pure Python; the rules of ``spark_normalize``)."""
    text = _clean(text, options)
    if options.lowercase:
        text = text.lower()
    if options.tokenize == "words":
        if any(hint in text for hint in URL_HINTS):
            text = _PY_URL.sub(f" {URL} ", text)
        text = _PY_NUM.sub(f" {NUM} ", text)
        text = _PY_PUNCT.sub(REPLACEMENT[options.apostrophe][0], text)
    if options.unk_token:
        text = re.sub(unk_pattern(options.unk_token), UNK, text)
    return text


def tokenize(text: str, options: NormalizeOptions) -> list[str]:
    """Normalize ``text`` and split it into tokens (words; with ``tokenize=none`` the words of the
    kept text)."""
    return [t for t in _steps(text, options).split(" ") if t]


def placeholder_values(text: str, options: NormalizeOptions) -> dict[str, list[str]]:
    """What ``tokenize`` turns into ``[URL]`` and ``[NUM]``, in order of appearance (case kept), so a
    translation's placeholders can be filled back in."""
    text = _clean(text, options)
    urls = _PY_URL.findall(text) if any(hint in text.lower() for hint in URL_HINTS) else []
    if urls:
        text = _PY_URL.sub(" ", text)
    return {URL: urls, NUM: _PY_NUM.findall(text)}


def normalize(text: str, options: NormalizeOptions) -> str:
    """The normalized text: its tokens joined by single spaces (with ``tokenize=none``, the text
    itself after steps 1 to 3)."""
    if options.tokenize == "none":
        return _steps(text, options)
    return " ".join(tokenize(text, options))
