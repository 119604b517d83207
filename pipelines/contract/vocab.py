"""Vocabulary: selection rules and the on-disk format (``vocab/<side>.tsv``).

Shared by the preprocessing pipeline (which builds vocabularies) and by the jobs that read them.
Ids: the special tokens first, then words by descending count, ties broken by the token (code-point
order, which equals the UTF-8 byte order Spark sorts by), so the same counts give the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pipelines.contract.errors import ConfigError, InputError, ManifestError
from pipelines.contract.pieces import PieceModel
from pipelines.contract.specials import SPECIALS, UNK, UNK_ID


@dataclass(frozen=True)
class Vocab:
    """An id <-> token table with the training-set count of every entry."""

    tokens: tuple[str, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, tokens: Iterable[str]) -> list[int]:
        index = self.index
        return [index.get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def fingerprint(self) -> str:
        """SHA-256 of the token list: two vocabularies with the same ids have the same fingerprint."""
        return hashlib.sha256("\n".join(self.tokens).encode("utf-8")).hexdigest()

    def save(self, path: Path) -> None:
        """Write ``id<TAB>token<TAB>count`` lines with a header."""
        lines = ["id\ttoken\tcount"] + [f"{i}\t{t}\t{c}" for i, (t, c) in enumerate(zip(self.tokens, self.counts))]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        tokens, counts = [], []
        with open(path, encoding="utf-8") as f:
            if f.readline().rstrip("\n") != "id\ttoken\tcount":
                raise InputError(f"{path}: not a vocabulary file (header 'id<TAB>token<TAB>count' expected)")
            for expected, line in enumerate(f):
                i, token, count = line.rstrip("\n").split("\t")
                if int(i) != expected:
                    raise InputError(f"{path}: id {i} on line {expected + 2}, expected {expected}")
                tokens.append(token)
                counts.append(int(count))
        return cls(tuple(tokens), tuple(counts))


def select_vocab(ranked: Sequence[tuple[str, int]], max_size: int, min_count: int, total: int) -> Vocab:
    """Build a vocabulary from ``(token, count)`` pairs already ordered by count desc, token asc.

    ``max_size`` counts the special tokens; words below ``min_count`` are left out. ``[NUM]`` and
    ``[URL]`` take their counts from ``ranked`` and never use a word slot. ``total`` is the number of
    tokens counted; what the vocabulary does not cover is the count of ``[UNK]`` (with the text's own
    ``[UNK]``s, where a corpus marks them).
    """
    if max_size < len(SPECIALS):
        raise ConfigError(f"vocab.max_size must be at least {len(SPECIALS)} (the special tokens), got {max_size}")
    special_counts = {t: 0 for t in SPECIALS}
    words: list[tuple[str, int]] = []
    for token, count in ranked:
        if token in special_counts:
            special_counts[token] = count
        elif count >= min_count and len(words) < max_size - len(SPECIALS):
            words.append((token, count))
    special_counts[UNK] = total - sum(c for t, c in special_counts.items() if t != UNK) - sum(c for _, c in words)
    if special_counts[UNK] < 0:
        raise ValueError(f"total={total} is smaller than the counts of the selected tokens")
    tokens = SPECIALS + tuple(t for t, _ in words)
    counts = tuple(special_counts[t] for t in SPECIALS) + tuple(c for _, c in words)
    return Vocab(tokens, counts)


def rank_tokens(counts: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Order ``(token, count)`` pairs as vocabularies rank them: count descending, then token."""
    return sorted(counts, key=lambda tc: (-tc[1], tc[0]))


def load_vocab(data_dir: Path, entry: Mapping[str, Any]) -> tuple[Vocab, PieceModel | None]:
    """One side's vocabulary from a preprocessing output, given its manifest ``vocab`` entry, and its
    piece model for ``bpe``/``unigram`` vocabularies (None for words). ManifestError when a file is
    not the one the shards were encoded with."""
    path = Path(data_dir) / entry["file"]
    vocab = Vocab.load(path)
    if vocab.fingerprint() != entry["fingerprint"]:
        raise ManifestError(
            f"{path} is not the vocabulary the shards were encoded with (fingerprint "
            f"{vocab.fingerprint()[:12]}, manifest {entry['fingerprint'][:12]})"
        )
    if not entry.get("model"):
        return vocab, None
    model_path = Path(data_dir) / entry["model"]
    if not model_path.is_file():
        raise ManifestError(f"{model_path} is missing: the shards hold {entry['kind']} pieces of that model")
    model = PieceModel(model_path.read_bytes())
    if model.sha256 != entry["model_sha256"]:
        raise ManifestError(
            f"{model_path} is not the piece model the shards were encoded with (SHA-256 "
            f"{model.sha256[:12]}, manifest {entry['model_sha256'][:12]}); preprocess again"
        )
    if model.tokens != vocab.tokens:
        raise ManifestError(f"{path} does not list the pieces of {model_path}")
    return vocab, model


def vocab_identity(entry: Mapping[str, Any]) -> str:
    """What a model trained on a vocabulary depends on (the tokens, and the piece model that
    segments text into them), from its manifest entry: equal identities, interchangeable ids."""
    return entry["fingerprint"] + (f"+{entry['model_sha256']}" if entry.get("model_sha256") else "")


@dataclass(frozen=True)
class GivenVocab:
    """One side's vocabulary taken from an earlier preprocessing output or a trained model
    (``vocab.from``), so that new data gets the ids that model knows: its tokens, its piece model
    (None for words), and the language and normalization it was made with (the normalization
    fields known: a translator records only whether its target was lowercased)."""

    tokens: tuple[str, ...]
    pieces: bytes | None
    lang: str
    normalize: Mapping[str, Any]
    source: str
    chars: bool = False  # a character vocabulary

    @property
    def kind(self) -> str:
        return PieceModel(self.pieces).kind if self.pieces else "char" if self.chars else "word"


def given_from_output(data_dir: Path) -> dict[str, GivenVocab]:
    """Every side's vocabulary of a preprocessing output, checked against its manifest."""
    from pipelines.contract.manifest import load_manifest

    manifest = load_manifest(Path(data_dir))
    given = {}
    for side, entry in manifest["vocab"].items():
        vocab, pieces = load_vocab(data_dir, entry)
        info = manifest["sides"][side]
        given[side] = GivenVocab(
            tuple(vocab.tokens),
            pieces.proto if pieces else None,
            info["lang"],
            dict(info["normalize"]),
            str(data_dir),
            entry["kind"] == "char",
        )
    return given
