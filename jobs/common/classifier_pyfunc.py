"""The classifier as an MLflow pyfunc model: a list of raw texts in, a label and its probability out.

MLflow runs this file to load a logged classifier (models from code): nothing is unpickled; the
weights come from the model's ``classifier.pt`` artifact, loaded with ``weights_only=True``, and
classification is ``jobs.classify``'s (the training normalization, texts cut to ``max_tokens``).

    {"inputs": ["a gripping film"], "params": {"max_tokens": 500}}
      ->  {"predictions": [{"label": "positive", "probability": 0.93, "probabilities": {...}}]}

A text without tokens gets ``{"label": null, "probability": null, "probabilities": {}}``.
"""

from __future__ import annotations

from typing import Any

import pydantic
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc.utils import pyfunc

from jobs.common.classifier_checkpoint import ClassifierBundle
from jobs.common.pyfunc import BundlePyfunc, require_texts


class Classified(pydantic.BaseModel):
    """One text's prediction, as MLflow declares the model's output: the label, its probability and
    every label's (None, None and {} for a text without tokens)."""

    label: str | None = None
    probability: float | None = None
    probabilities: dict[str, float]


class ClassifierPyfunc(BundlePyfunc):
    """Classifies raw texts with the ``classifier.pt`` artifact."""

    bundle_type = ClassifierBundle

    @pyfunc  # MLflow checks requests against the type hints (a list of strings) and declares the output
    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[Classified]:
        require_texts(model_input, "texts to classify")
        max_tokens = int((params or {}).get("max_tokens", 500))
        if max_tokens < 0:
            raise MlflowException.invalid_parameter_value(f"max_tokens must be >= 0 (0 = all), got {max_tokens}")
        # as plain dicts: what MLflow returns and serves as JSON
        return [
            Classified(
                **(
                    {"label": p.label, "probability": p.probability, "probabilities": p.probabilities}
                    if p
                    else {"probabilities": {}}
                )
            ).model_dump()
            for p in self.bundle.classify(model_input, max_tokens=max_tokens)
        ]


set_model(ClassifierPyfunc())
