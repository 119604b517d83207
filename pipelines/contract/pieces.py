"""Subword vocabularies: SentencePiece models over normalized text, with the special tokens at
their fixed ids, and the codec that turns normalized tokens into ids and back for every vocabulary
kind (whole words, or pieces).

A piece model is trained on normalized text (tokens joined by single spaces), so SentencePiece's own
normalization is off (``identity``): ours has run already, the same on the JVM and in Python.
``[NUM]`` and ``[URL]`` are user-defined symbols, so a placeholder is always one piece.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections.abc import Sequence
from functools import cached_property

from pipelines.contract.errors import ConfigError, InputError
from pipelines.contract.specials import COUNTED_SPECIALS, EOS, EOS_ID, GO, GO_ID, PAD, PAD_ID, SPECIALS, UNK, UNK_ID

VOCAB_KINDS = ("word", "char", "bpe", "unigram")
PIECE_KINDS = ("bpe", "unigram")
# SentencePiece's mark of a word start ("▁", U+2581).
WORD_START = "\u2581"
# Fixed, so that a unigram model (whose training result depends on its thread count) is the same
# on every machine.
TRAIN_THREADS = 2


def train_piece_model(sentences: Sequence[str], kind: str, size: int, character_coverage: float = 1.0) -> bytes:
    """Train a ``bpe`` or ``unigram`` model of ``size`` pieces (the special tokens included) on
    normalized ``sentences``, in the order given; returns the serialized model.

    InputError (naming the numbers) when the sentences are too few for ``size`` pieces, or hold more
    distinct characters than ``size`` leaves room for.
    """
    import sentencepiece as spm

    if kind not in PIECE_KINDS:
        raise ConfigError(f"vocab.kind for a piece model must be one of {PIECE_KINDS}, got {kind!r}")
    if not sentences:
        raise InputError("no training sentences to train the piece model on")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=kind,
            vocab_size=size,
            pad_id=PAD_ID,
            pad_piece=PAD,
            unk_id=UNK_ID,
            unk_piece=UNK,
            bos_id=GO_ID,
            bos_piece=GO,
            eos_id=EOS_ID,
            eos_piece=EOS,
            user_defined_symbols=list(COUNTED_SPECIALS),
            unk_surface=UNK,
            normalization_rule_name="identity",
            character_coverage=character_coverage,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=1 << 16,
            num_threads=TRAIN_THREADS,
            minloglevel=2,
        )
    except RuntimeError as err:
        raise _explained(err, kind, size, len(sentences)) from None
    return model.getvalue()


def _explained(err: RuntimeError, kind: str, size: int, sentences: int) -> Exception:
    """SentencePiece's refusal of a vocabulary size, said in this project's terms."""
    message = str(err)
    if match := re.search(r"Please set it to a value <= (\d+)", message):
        return InputError(
            f"vocab.max_size={size} is more than the {int(match.group(1))} {kind} pieces the "
            f"{sentences} training sentences give; set vocab.max_size <= {match.group(1)} "
            "or give more text"
        )
    if match := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message):
        return InputError(
            f"vocab.max_size={size} leaves no room for the {match.group(2)} distinct characters "
            f"of the training sentences (with the {len(SPECIALS)} special tokens); raise "
            "vocab.max_size or lower vocab.character_coverage"
        )
    return InputError(
        f"SentencePiece could not train a {kind} model of {size} pieces on {sentences} sentences: {message}"
    )


class PieceModel:
    """A trained SentencePiece model: encodes normalized text to ids and decodes ids to tokens."""

    def __init__(self, proto: bytes):
        import sentencepiece as spm

        self.proto = bytes(proto)
        try:
            self.processor = spm.SentencePieceProcessor(model_proto=self.proto)
        except RuntimeError as err:
            raise InputError(f"not a SentencePiece model: {err}") from None
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise InputError(
                f"a piece model must start with the special tokens {SPECIALS}, got {self.tokens[: len(SPECIALS)]}"
            )

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.proto).hexdigest()

    @cached_property
    def tokens(self) -> tuple[str, ...]:
        """The pieces in id order."""
        return tuple(self.processor.id_to_piece(i) for i in range(self.processor.get_piece_size()))

    @cached_property
    def kind(self) -> str:
        """``bpe`` or ``unigram``: the model type it was trained as."""
        from sentencepiece import sentencepiece_model_pb2

        spec = sentencepiece_model_pb2.ModelProto.FromString(self.proto).trainer_spec
        return sentencepiece_model_pb2.TrainerSpec.ModelType.Name(spec.model_type).lower()

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[str], threads: int = 1) -> list[list[int]]:
        """Normalized texts -> piece ids (the most likely segmentation)."""
        return self.processor.encode(list(texts), num_threads=threads)

    def sample(self, texts: Sequence[str], alpha: float, seed: int) -> list[list[int]]:
        """Normalized texts -> sampled segmentations: BPE-dropout with probability ``alpha`` for BPE,
        sampling from all segmentations with smoothing ``alpha`` for unigram. The same ``seed`` gives
        the same segmentations."""
        import sentencepiece as spm

        out: list[list[int]] = []

        def draw() -> None:
            # SentencePiece seeds a thread's generator when the thread first samples: a new thread
            # after setting the seed makes the draw reproducible.
            spm.set_random_generator_seed(seed)
            out.extend(
                self.processor.encode(list(texts), enable_sampling=True, alpha=alpha, nbest_size=-1, num_threads=1)
            )

        with _SAMPLING:
            thread = threading.Thread(target=draw)
            thread.start()
            thread.join()
        if len(out) != len(texts):
            raise RuntimeError("subword sampling failed")
        return out

    def word_of(self, ids: Sequence[int]) -> list[int]:
        """For each id, the index of the word it belongs to: a word starts at a piece marked ``▁``."""
        owners, word = [], -1
        for piece in ids:
            text = self.tokens[piece] if 0 <= piece < len(self.tokens) else UNK
            word += text.startswith(WORD_START) or word < 0
            owners.append(word)
        return owners

    def decode_words(self, ids: Sequence[int]) -> tuple[list[str], list[int]]:
        """Ids -> the normalized tokens they spell (decoded by SentencePiece) and, per token, the
        index of the id that stands for it (its first piece that is more than a bare word start)."""
        groups: list[list[int]] = []
        for i, word in enumerate(self.word_of(ids)):
            if word == len(groups):
                groups.append([])
            groups[-1].append(i)
        words, heads = [], []
        for group in groups:
            word = self.processor.decode([ids[i] for i in group])
            if word:
                words.append(word)
                heads.append(next((i for i in group if self.tokens[ids[i]] != WORD_START), group[0]))
        return words, heads


_SAMPLING = threading.Lock()


def word_forms(pieces: Sequence[str]) -> list[str]:
    """Pieces as words, for looking words up among them (word-similarity and analogy sets): a piece
    that is a whole word's start (``▁cat``) -> ``cat``; one that continues a word (``s``) -> ``##s``,
    which no word equals; the special tokens as they are."""
    return [p if p in SPECIALS else p[1:] if p.startswith(WORD_START) and len(p) > 1 else "##" + p for p in pieces]


class Codec:
    """Normalized tokens <-> ids for one vocabulary: whole words (``pieces`` None) or pieces."""

    def __init__(self, tokens: Sequence[str], pieces: PieceModel | None = None):
        if pieces is not None and tuple(tokens) != pieces.tokens:
            raise InputError("the vocabulary does not match its piece model")
        self.tokens, self.pieces = tuple(tokens), pieces
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def encode(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
        """Tokens -> ids, and for each id the index of the token it belongs to."""
        if self.pieces is None:
            return [self.index.get(w, UNK_ID) for w in words], list(range(len(words)))
        ids = self.pieces.encode([" ".join(words)])[0]
        return ids, self.pieces.word_of(ids)

    def decode(self, ids: Sequence[int]) -> tuple[list[str], list[int]]:
        """Ids -> tokens, and for each token the index of the id that stands for it."""
        if self.pieces is None:
            return [self.tokens[i] for i in ids], list(range(len(ids)))
        return self.pieces.decode_words(ids)
