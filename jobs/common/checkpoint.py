"""The translator checkpoint (``translator.pt``): the weights with everything needed to translate
raw text (settings, vocabularies, the source normalization, decode settings), as plain data and
tensors, so it loads with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch

from jobs.common.bundle import ModelBundle
from pipelines.contract.errors import CheckpointError
from pipelines.contract.pieces import Codec, PieceModel
from pipelines.contract.vocab import GivenVocab, Vocab
from pipelines.text.normalize import NormalizeOptions
from rnn_models.ensemble import Ensemble
from rnn_models.search import DecodeSettings
from rnn_models.translator import Translator, TranslatorSettings

BUNDLE_FILE = "translator.pt"


@dataclass
class Bundle(ModelBundle):
    """A translator, its vocabularies (with their piece models for subwords) and the source
    normalization it was trained with."""

    file_name, artifact, what, registry_name = BUNDLE_FILE, "translator", "translator", "rnnmt-translator"
    pyfunc_code = "translator_pyfunc.py"
    model_type, settings_type = Translator, TranslatorSettings
    request_params = ("beam", "alpha", "unk", "nbest", "max_tokens")  # the DecodeSettings a request may set
    required = frozenset({"settings", "model", "src_tokens", "tgt_tokens"})

    model: Translator | Ensemble  # an Ensemble only from Bundle.ensemble (translates, is not saved)
    src_tokens: list[str]
    tgt_tokens: list[str]
    src_options: NormalizeOptions
    src_lang: str
    tgt_lang: str
    tgt_lowercase: bool
    info: dict[str, Any] = field(default_factory=dict)
    src_pieces: bytes | None = None  # serialized SentencePiece models; None for word vocabularies
    tgt_pieces: bytes | None = None

    @classmethod
    def from_manifest(
        cls, model: Translator, manifest: dict[str, Any], vocabs: Mapping[str, tuple[Vocab, PieceModel | None]]
    ) -> "Bundle":
        """A translator's bundle for the data of ``manifest``, whose ``src``/``tgt`` vocabularies
        and piece models (None for words) are ``vocabs``."""
        sides = manifest["sides"]
        (src, src_pieces), (tgt, tgt_pieces) = vocabs["src"], vocabs["tgt"]
        return cls(
            model,
            list(src.tokens),
            list(tgt.tokens),
            NormalizeOptions(**sides["src"]["normalize"]),
            sides["src"]["lang"],
            sides["tgt"]["lang"],
            bool(sides["tgt"]["normalize"]["lowercase"]),
            src_pieces=src_pieces.proto if src_pieces else None,
            tgt_pieces=tgt_pieces.proto if tgt_pieces else None,
        )

    @cached_property
    def src_codec(self) -> Codec:
        """Source tokens -> ids."""
        return Codec(self.src_tokens, PieceModel(self.src_pieces) if self.src_pieces else None)

    @cached_property
    def tgt_codec(self) -> Codec:
        """Target ids -> tokens."""
        return Codec(self.tgt_tokens, PieceModel(self.tgt_pieces) if self.tgt_pieces else None)

    def contents(self) -> dict[str, Any]:
        return {
            "src_tokens": self.src_tokens,
            "tgt_tokens": self.tgt_tokens,
            "src_options": vars(self.src_options),
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
            "tgt_lowercase": self.tgt_lowercase,
            "src_pieces": self.src_pieces,
            "tgt_pieces": self.tgt_pieces,
        }

    def serving(self) -> dict[str, Any]:
        """Sentences in; the request parameters default to the model's decode settings."""
        decode = self.decode_settings().to_dict()
        return {
            "input_example": (["I like cats.", "Where is the station?"], {k: decode[k] for k in self.request_params})
        }

    @classmethod
    def from_state(cls, model: Translator, state: dict[str, Any]) -> "Bundle":
        return cls(
            model,
            list(state["src_tokens"]),
            list(state["tgt_tokens"]),
            NormalizeOptions(**state["src_options"]),
            state["src_lang"],
            state["tgt_lang"],
            state["tgt_lowercase"],
            dict(state.get("info", {})),
            state.get("src_pieces"),
            state.get("tgt_pieces"),
        )

    @classmethod
    def average(cls, bundles: list["Bundle"]) -> "Bundle":
        """One bundle whose parameters are the mean of ``bundles``' (checkpoints of one model: the
        same settings and vocabularies, else CheckpointError); the rest is the first one's."""
        first = bundles[0]
        for other in bundles[1:]:
            if other.model.settings != first.model.settings:
                raise CheckpointError(
                    "cannot average checkpoints of different model settings: "
                    f"{first.model.settings} and {other.model.settings}"
                )
            if _reading(other) != _reading(first):
                raise CheckpointError("cannot average checkpoints trained on different vocabularies")
        model = Translator(first.model.settings)
        model.load_state_dict(average_states([b.model.state_dict() for b in bundles]))
        model.to(next(first.model.parameters()).device).eval()
        return replace(first, model=model, info=dict(first.info))

    @classmethod
    def ensemble(cls, bundles: list["Bundle"]) -> "Bundle":
        """One bundle that decodes with all of ``bundles`` (their log-probabilities averaged at each
        step); they must share vocabularies and source normalization (else CheckpointError). Its
        decode settings are the first one's. It translates; it is not saved."""
        first = bundles[0]
        for other in bundles[1:]:
            if _reading(other) != _reading(first):
                raise CheckpointError(
                    "cannot ensemble translators with different vocabularies, piece models, "
                    "languages or source normalization"
                )
        return replace(first, model=Ensemble([b.model for b in bundles]), info=dict(first.info))

    @classmethod
    def load_all(
        cls, sources: list[str], device: torch.device | str = "cpu", tracking_uri: str | None = None
    ) -> "Bundle":
        """One checkpoint, or the ensemble of several."""
        bundles = [cls.load(source, device, tracking_uri) for source in sources]
        return bundles[0] if len(bundles) == 1 else cls.ensemble(bundles)

    def given_vocabs(self, source: str) -> dict[str, GivenVocab]:
        """The vocabularies to encode new data with so that this model reads it (``vocab.from``)."""
        return {
            "src": GivenVocab(tuple(self.src_tokens), self.src_pieces, self.src_lang, vars(self.src_options), source),
            "tgt": GivenVocab(
                tuple(self.tgt_tokens), self.tgt_pieces, self.tgt_lang, {"lowercase": self.tgt_lowercase}, source
            ),
        }

    def decode_settings(self) -> DecodeSettings:
        """The decode settings the model was trained with (the defaults for older checkpoints)."""
        return DecodeSettings.from_dict(self.info.get("decode"))


def _reading(bundle: Bundle) -> tuple:
    """What decides the ids a translator reads and writes."""
    return (
        bundle.src_tokens,
        bundle.tgt_tokens,
        bundle.src_pieces,
        bundle.tgt_pieces,
        bundle.src_options,
        bundle.src_lang,
        bundle.tgt_lang,
        bundle.tgt_lowercase,
    )


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of model state dicts with the same keys and shapes (checkpoint
    averaging); integer tensors, such as counters, are taken from the last state."""
    keys = states[0].keys()
    if any(state.keys() != keys for state in states):
        raise CheckpointError("cannot average checkpoints with different parameters")
    return {
        key: (
            torch.stack([state[key].float() for state in states]).mean(0).to(states[0][key].dtype)
            if states[0][key].is_floating_point()
            else states[-1][key].clone()
        )
        for key in keys
    }
