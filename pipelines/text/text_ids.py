"""Raw text -> ids for a model trained on preprocessed data: normalized with the training rules,
then cut into the vocabulary's units (whole words, characters or pieces), as the Spark encoder
cut the training data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from pipelines.contract.pieces import PieceModel
from pipelines.contract.specials import UNK_ID
from pipelines.text.chars import char_tokens
from pipelines.text.normalize import NormalizeOptions, normalize


@dataclass(frozen=True)
class TextIds:
    """One vocabulary (``kind``: word, char, bpe or unigram) with its normalization."""

    tokens: Sequence[str]
    kind: str
    options: NormalizeOptions
    pieces: bytes | None = None  # the SentencePiece model of a bpe/unigram vocabulary

    @cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @cached_property
    def piece_model(self) -> PieceModel | None:
        return PieceModel(self.pieces) if self.pieces else None

    def encode(self, text: str) -> list[int]:
        """Raw text -> ids (tokens outside the vocabulary: ``[UNK]``)."""
        norm = normalize(text, self.options)
        if self.piece_model is not None:
            return self.piece_model.encode([norm])[0] if norm else []
        tokens = char_tokens(norm) if self.kind == "char" else norm.split(" ") if norm else []
        return [self.index.get(t, UNK_ID) for t in tokens]
