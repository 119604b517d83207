"""The translator as an MLflow pyfunc model: a list of raw sentences in, their translations out.

MLflow runs this file to load a logged translator (models from code): nothing is unpickled; the
weights come from the model's ``translator.pt`` artifact, loaded with ``weights_only=True``, and
translation is ``jobs.translate``'s (the same normalization, decoding, placeholder restoration,
``[UNK]`` policy and detokenization). Decode settings are inference parameters whose defaults are
the model's training config's (``jobs.common.model_registry`` names them and declares the defaults).

    {"inputs": ["I like cats."], "params": {"beam": 5}}  ->  {"predictions": ["<its translation>"]}

With ``nbest`` > 1 each prediction is the list of the ``nbest`` best ``{"text", "score"}``, best first.
"""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc.utils import pyfunc

from jobs.common.checkpoint import Bundle
from jobs.common.pyfunc import BundlePyfunc, require_texts
from jobs.common.translation import translate
from pipelines.contract.errors import UserError
from rnn_models.search import DecodeSettings


class TranslatorPyfunc(BundlePyfunc):
    """Translates raw sentences with the ``translator.pt`` artifact."""

    bundle_type = Bundle

    @pyfunc  # MLflow checks requests against the type hints: a list of strings
    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[Any]:
        require_texts(model_input, "sentences to translate")
        try:
            settings = DecodeSettings.from_dict(
                {k: v for k, v in (params or {}).items() if k in Bundle.request_params},
                base=self.bundle.decode_settings(),
            )
        except UserError as err:  # a bad decode setting: the client's error
            raise MlflowException.invalid_parameter_value(str(err)) from None
        translations = translate(self.bundle, model_input, settings)
        if settings.nbest > 1:
            return [[{"text": text, "score": score} for text, score in t.nbest] for t in translations]
        return [t.text for t in translations]


set_model(TranslatorPyfunc())
