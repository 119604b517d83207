"""The language model as an MLflow pyfunc model: a list of prompts in, one generated text each out.

MLflow runs this file to load a logged language model (models from code): nothing is unpickled;
the weights come from the model's ``lm.pt`` artifact, loaded with ``weights_only=True``, and
generation is ``jobs.generate``'s (the prompt normalized with the training rules, then sampled a
token at a time). The sampling settings, the number of tokens and the seed are inference parameters
whose defaults ``jobs.common.model_registry`` declares from the model's training config.

    {"inputs": ["the company said"], "params": {"tokens": 20, "temperature": 0.8}}  ->  {"predictions": ["..."]}
"""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc.utils import pyfunc

from jobs.common.lm_checkpoint import LMBundle
from jobs.common.pyfunc import BundlePyfunc, require_texts
from pipelines.contract.errors import UserError
from rnn_models.sampling import SampleSettings


class LanguageModelPyfunc(BundlePyfunc):
    """Continues raw prompts with the ``lm.pt`` artifact."""

    bundle_type = LMBundle

    @pyfunc  # MLflow checks requests against the type hints: a list of strings
    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        require_texts(model_input, "prompts")
        params = params or {}
        try:
            settings = SampleSettings.from_dict(
                {
                    **self.bundle.sample_settings().to_dict(),
                    **{k: params[k] for k in ("temperature", "top_k", "top_p") if k in params},
                }
            )
        except UserError as err:  # a bad sampling setting: the client's error
            raise MlflowException.invalid_parameter_value(str(err)) from None
        tokens, seed = int(params.get("tokens", 50)), int(params.get("seed", 0))
        if tokens < 0:
            raise MlflowException.invalid_parameter_value(f"tokens must be >= 0, got {tokens}")
        return [
            self.bundle.generate(prompt, tokens, settings, 1, seed + n).texts[0] for n, prompt in enumerate(model_input)
        ]


set_model(LanguageModelPyfunc())
