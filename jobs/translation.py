"""A trained translator with what it needs to translate raw text, and the scoring of translations.

Shared by ``jobs.train_translator`` (validation BLEU), ``jobs.translate`` and ``jobs.evaluate``, so
all three normalize, decode and post-process alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.detokenize import detokenize, restore
from pipelines.normalize import NormalizeOptions, placeholder_values, tokenize
from pipelines.vocab import UNK_ID, Vocab
from rnn_models.batching import pad
from rnn_models.search import Hypothesis, beam_search, greedy
from rnn_models.translator import Translator, TranslatorSettings

BUNDLE_FILE = "translator.pt"


class InputError(ValueError):
    """Input that cannot be translated (e.g. not UTF-8)."""


def read_lines(data: bytes, name: str) -> list[str]:
    """Lines of ``data`` (``\\n`` or ``\\r\\n`` ends), decoded strictly; InputError names the first bad line."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for number, raw in enumerate(lines, 1):
        try:
            out.append(raw.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InputError(f"{name}: line {number} is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    return out


@dataclass
class Bundle:
    """A translator, its vocabularies and the source normalization it was trained with."""

    model: Translator
    src_tokens: list[str]
    tgt_tokens: list[str]
    src_options: NormalizeOptions
    src_lang: str
    tgt_lang: str
    tgt_lowercase: bool
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, model: Translator, manifest: dict[str, Any], src: Vocab, tgt: Vocab) -> "Bundle":
        sides = manifest["sides"]
        return cls(model, list(src.tokens), list(tgt.tokens), NormalizeOptions(**sides["src"]["normalize"]),
                   sides["src"]["lang"], sides["tgt"]["lang"], bool(sides["tgt"]["normalize"]["lowercase"]))

    def state(self, model_state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """Everything ``load`` needs, as plain data and tensors (loadable with weights_only=True)."""
        return {"settings": self.model.settings.to_dict(),
                "model": model_state if model_state is not None else self.model.state_dict(),
                "src_tokens": self.src_tokens, "tgt_tokens": self.tgt_tokens,
                "src_options": vars(self.src_options), "src_lang": self.src_lang, "tgt_lang": self.tgt_lang,
                "tgt_lowercase": self.tgt_lowercase, "info": self.info}

    def save(self, path: Path, model_state: dict[str, torch.Tensor] | None = None) -> None:
        torch.save(self.state(model_state), path)

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> "Bundle":
        model = Translator(TranslatorSettings.from_dict(state["settings"]))
        model.load_state_dict(state["model"])
        model.to(device).eval()
        return cls(model, list(state["src_tokens"]), list(state["tgt_tokens"]),
                   NormalizeOptions(**state["src_options"]), state["src_lang"], state["tgt_lang"],
                   state["tgt_lowercase"], dict(state.get("info", {})))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "Bundle":
        """From a ``translator.pt`` file, a directory holding one, or an MLflow ``runs:/ID/PATH`` URI."""
        path = str(path)
        if path.startswith(("runs:/", "models:/", "mlflow-artifacts:")):
            import mlflow

            path = mlflow.artifacts.download_artifacts(path)
        file = Path(path)
        if file.is_dir():
            file = file / BUNDLE_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no translator checkpoint at {file}")
        return cls.from_state(torch.load(file, map_location="cpu", weights_only=True), device)


@dataclass
class Translation:
    text: str
    tokens: list[str]
    source_tokens: list[str]
    hypothesis: Hypothesis
    truncated: bool


def translate(bundle: Bundle, texts: Sequence[str], beam: int = 1, alpha: float = 0.6, max_ratio: float = 1.5,
              max_extra: int = 5, batch_size: int = 64, unk: str = "keep", max_tokens: int = 200,
              device: torch.device | str = "cpu") -> list[Translation]:
    """Translate raw sentences: normalize and encode as in training, decode (greedy at beam 1),
    fill placeholders back from the source, handle unknown words, detokenize. Empty inputs give
    empty outputs; sources longer than ``max_tokens`` are cut there (``truncated``)."""
    src_index = {t: i for i, t in enumerate(bundle.src_tokens)}
    sources = [tokenize(text, bundle.src_options) for text in texts]
    truncated = [len(s) > max_tokens for s in sources]
    sources = [s[:max_tokens] for s in sources]
    ids = [[src_index.get(t, UNK_ID) for t in s] for s in sources]
    results: list[Translation | None] = [None] * len(texts)
    order = sorted((i for i in range(len(texts)) if ids[i]), key=lambda i: len(ids[i]))
    bundle.model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        src, src_len = pad([np.asarray(ids[i], dtype=np.int64) for i in chunk], device)
        if beam > 1:
            hyps = beam_search(bundle.model, src, src_len, beam, alpha, max_ratio, max_extra)
        else:
            hyps = greedy(bundle.model, src, src_len, max_ratio, max_extra)
        for i, hyp in zip(chunk, hyps):
            tokens = [bundle.tgt_tokens[t] for t in hyp.tokens]
            restored = restore(tokens, placeholder_values(texts[i], bundle.src_options), sources[i],
                               hyp.alignment, unk)
            results[i] = Translation(detokenize(restored, bundle.tgt_lang), restored, sources[i], hyp, truncated[i])
    empty = Hypothesis([], [], 0.0)
    return [r if r is not None else Translation("", [], [], empty, False) for r in results]


def translate_and_score(bundle: Bundle, sources: Sequence[str], references: Sequence[str],
                        decode: Mapping[str, Any], beam: int, device: torch.device | str = "cpu"
                        ) -> tuple[dict[str, Any], list[Translation]]:
    """Translate ``sources`` at ``beam`` with the other ``decode`` settings (``translate``'s keyword
    arguments) and ``score`` the result against ``references``."""
    translations = translate(bundle, sources, **{**decode, "beam": beam}, device=device)
    return score([t.text for t in translations], references, bundle.tgt_lowercase), translations


def score(hypotheses: Sequence[str], references: Sequence[str], lowercase: bool) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacrebleu) against raw references, with their signatures; case-blind
    when the model's target side was lowercased."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(lowercase=lowercase), CHRF(lowercase=lowercase)
    refs = [list(references)]
    b, c = bleu.corpus_score(list(hypotheses), refs), chrf.corpus_score(list(hypotheses), refs)
    return {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature())}
