"""The language-model checkpoint (``lm.pt``): the weights with everything needed to read and write
raw text (settings, the vocabulary and its kind, the piece model for subwords, the normalization,
generation settings), as plain data and tensors, so it loads with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from jobs.common.bundle import ModelBundle, check_specials, text_contents, text_fields, text_fields_of
from pipelines.contract.pieces import PieceModel
from pipelines.contract.specials import EOS_ID
from pipelines.contract.vocab import Vocab
from pipelines.text.chars import join_chars
from pipelines.text.detokenize import detokenize
from pipelines.text.normalize import NormalizeOptions
from pipelines.text.text_ids import TextIds
from rnn_models.language_model import LanguageModel, LanguageModelSettings
from rnn_models.sampling import SampleSettings, generate

LM_FILE = "lm.pt"


@dataclass
class Generated:
    """Samples generated after one prompt, and how the prompt was read."""

    texts: list[str]  # each sample's continuation, as text
    prompt_tokens: int  # tokens of the prompt
    truncated: int  # of them left out, from the start, to fit ``max_context``


@dataclass
class LMBundle(ModelBundle):
    """A language model, its vocabulary (``kind``: word, char, bpe or unigram) and the
    normalization it was trained with."""

    file_name, artifact, what, registry_name = LM_FILE, "lm", "language model", "rnnmt-lm"
    pyfunc_code = "lm_pyfunc.py"
    model_type, settings_type = LanguageModel, LanguageModelSettings
    required = frozenset({"settings", "model", "tokens", "kind"})

    model: LanguageModel
    tokens: list[str]
    kind: str
    options: NormalizeOptions
    lang: str
    pieces: bytes | None = None  # the SentencePiece model of a bpe/unigram vocabulary
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(
        cls, model: LanguageModel, manifest: dict[str, Any], vocab: Vocab, pieces: PieceModel | None
    ) -> "LMBundle":
        """The bundle of a model trained on the monolingual data of ``manifest``."""
        return cls(model, **text_fields(manifest, vocab, pieces))

    @cached_property
    def reader(self) -> TextIds:
        return TextIds(self.tokens, self.kind, self.options, self.pieces)

    @property
    def piece_model(self) -> PieceModel | None:
        return self.reader.piece_model

    def encode(self, text: str) -> list[int]:
        """Raw text -> ids, normalized with the training rules."""
        return self.reader.encode(text)

    def decode(self, ids: list[int]) -> str:
        """Ids -> text; ``<eos>`` ends a line."""
        lines, line = [], []
        for i in list(ids) + [None]:
            if i is not None and i != EOS_ID:
                line.append(i)
                continue
            if self.piece_model is not None:
                lines.append(self.piece_model.processor.decode(line))
            else:
                tokens = [self.tokens[t] for t in line]
                lines.append(
                    join_chars(tokens)
                    if self.kind == "char"
                    else detokenize(tokens, self.lang)
                    if self.options.tokenize == "words"
                    else " ".join(tokens)
                )
            line = []
        return "\n".join(lines)

    def generate(
        self,
        prompt: str,
        steps: int,
        settings: SampleSettings,
        samples: int = 1,
        seed: int = 0,
        max_context: int = 0,
        device: torch.device | str = "cpu",
    ) -> Generated:
        """``samples`` continuations of ``steps`` tokens after ``prompt`` (read as a new line, after
        an ``<eos>``; an empty prompt starts a line), reproducible for the ``seed``. A prompt
        longer than ``max_context`` tokens (0 = no limit) keeps its end."""
        prompt_ids = self.encode(prompt)
        ids = [EOS_ID] + prompt_ids
        if 0 < max_context < len(ids):
            ids = ids[-max_context:]
        generator = torch.Generator(device=device).manual_seed(seed)
        drawn = generate(self.model, ids, steps, settings, samples, generator, device)
        return Generated([self.decode(d) for d in drawn], len(prompt_ids), max(0, len(prompt_ids) - len(ids)))

    def sample_settings(self) -> SampleSettings:
        """The generation settings the model was trained with (the defaults where none)."""
        return SampleSettings.from_dict(self.info.get("sampling") or {})

    def contents(self) -> dict[str, Any]:
        return text_contents(self.tokens, self.kind, self.options, self.lang, self.pieces)

    def serving(self) -> dict[str, Any]:
        """Prompts in; the sampling parameters default to the model's, with 50 tokens and seed 0."""
        return {"input_example": (["The"], {**self.sample_settings().to_dict(), "tokens": 50, "seed": 0})}

    @classmethod
    def from_state(cls, model: LanguageModel, state: dict[str, Any]) -> "LMBundle":
        check_specials(state["tokens"], cls.what)
        return cls(model, **text_fields_of(state))
