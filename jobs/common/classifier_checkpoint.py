"""The classifier checkpoint (``classifier.pt``): the weights with everything needed to classify
raw text (settings, the vocabulary and its kind, the piece model for subwords, the normalization,
the label names), as plain data and tensors, so it loads with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from jobs.common.bundle import ModelBundle, check_specials, text_contents, text_fields, text_fields_of
from pipelines.contract.errors import CheckpointError
from pipelines.contract.pieces import PieceModel
from pipelines.contract.vocab import Vocab
from pipelines.text.normalize import NormalizeOptions
from pipelines.text.text_ids import TextIds
from rnn_models.batching import pad
from rnn_models.classifier import Classifier, ClassifierSettings

CLASSIFIER_FILE = "classifier.pt"


@dataclass
class Prediction:
    """One text's label, its probability, and every label's probability."""

    label: str
    probability: float
    probabilities: dict[str, float]
    truncated: bool = False  # the text had more tokens than were read


@dataclass
class ClassifierBundle(ModelBundle):
    """A classifier, its vocabulary (``kind``: word, char, bpe or unigram), the normalization it was
    trained with and its labels (by id)."""

    file_name, artifact, what, registry_name = CLASSIFIER_FILE, "classifier", "classifier", "rnnmt-classifier"
    pyfunc_code = "classifier_pyfunc.py"
    model_type, settings_type = Classifier, ClassifierSettings
    required = frozenset({"settings", "model", "tokens", "kind", "labels"})

    model: Classifier
    tokens: list[str]
    kind: str
    options: NormalizeOptions
    lang: str
    labels: list[str]
    pieces: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(
        cls, model: Classifier, manifest: dict[str, Any], vocab: Vocab, pieces: PieceModel | None
    ) -> "ClassifierBundle":
        """The bundle of a model trained on the labelled data of ``manifest``."""
        return cls(model, **text_fields(manifest, vocab, pieces), labels=list(manifest["labels"]["names"]))

    @cached_property
    def reader(self) -> TextIds:
        return TextIds(self.tokens, self.kind, self.options, self.pieces)

    @torch.no_grad()
    def classify(
        self, texts: Sequence[str], batch_size: int = 64, max_tokens: int = 0, device: torch.device | str = "cpu"
    ) -> list[Prediction | None]:
        """Each text's most likely label and the label probabilities (None for a text without
        tokens); a text is read with the training rules and cut to its first ``max_tokens`` tokens
        (0 = all)."""
        self.model.eval()
        ids = [self.reader.encode(text) for text in texts]
        truncated = [0 < max_tokens < len(i) for i in ids]
        ids = [i[:max_tokens] if max_tokens > 0 else i for i in ids]
        predictions: list[Prediction | None] = [None] * len(ids)
        present = [n for n, i in enumerate(ids) if i]
        for start in range(0, len(present), batch_size):
            chunk = present[start : start + batch_size]
            batch, lengths = pad([ids[n] for n in chunk], device)
            probabilities = torch.softmax(self.model(batch, lengths).float(), dim=-1).cpu()
            for n, row in zip(chunk, probabilities.tolist()):
                best = max(range(len(row)), key=row.__getitem__)
                predictions[n] = Prediction(self.labels[best], row[best], dict(zip(self.labels, row)), truncated[n])
        return predictions

    def contents(self) -> dict[str, Any]:
        return {**text_contents(self.tokens, self.kind, self.options, self.lang, self.pieces), "labels": self.labels}

    def serving(self) -> dict[str, Any]:
        """Texts in, each cut to ``max_tokens`` (500 by default)."""
        return {"input_example": (["a gripping, funny film", "dull"], {"max_tokens": 500})}

    @classmethod
    def from_state(cls, model: Classifier, state: dict[str, Any]) -> "ClassifierBundle":
        check_specials(state["tokens"], cls.what)
        if len(state["labels"]) != model.settings.classes:
            raise CheckpointError(
                f"the checkpoint names {len(state['labels'])} labels for a model of {model.settings.classes}"
            )
        return cls(model, **text_fields_of(state), labels=list(state["labels"]))


def mean_classify(
    bundles: Sequence[ClassifierBundle],
    texts: Sequence[str],
    batch_size: int = 64,
    max_tokens: int = 0,
    device: torch.device | str = "cpu",
) -> list[Prediction | None]:
    """``classify`` by an ensemble of classifiers with the same labels: each label's probability is
    the mean of the models' (those that read tokens in the text; None when none did)."""
    labels = bundles[0].labels
    for other in bundles[1:]:
        if other.labels != labels:
            raise CheckpointError(
                f"an ensemble's classifiers must have the same labels: {labels} against {other.labels}"
            )
    if len(bundles) == 1:
        return bundles[0].classify(texts, batch_size, max_tokens, device)
    each = [bundle.classify(texts, batch_size, max_tokens, device) for bundle in bundles]
    out: list[Prediction | None] = []
    for predictions in zip(*each):
        present = [p for p in predictions if p is not None]
        if not present:
            out.append(None)
            continue
        mean = {label: sum(p.probabilities[label] for p in present) / len(present) for label in labels}
        best = max(labels, key=mean.__getitem__)  # the first of equals, as argmax
        out.append(Prediction(best, mean[best], mean, any(p.truncated for p in present)))
    return out
