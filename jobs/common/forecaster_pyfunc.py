"""The forecaster as an MLflow pyfunc model: the history of one or more series in, their forecasts out.

MLflow runs this file to load a logged forecaster (models from code): nothing is unpickled; the
weights come from the model's ``forecaster.pt`` artifact, loaded with ``weights_only=True``, and
forecasting is ``jobs.forecast``'s (the series read with the training rules, the last window fed
forward, predictions fed back, values in original units). The request is a table with the columns
the model was trained on; ``steps`` (default: the training horizon) and ``series`` (the training
series whose scaling a model without an id column uses; default: one fitted on the history sent)
are inference parameters.

    {"dataframe_split": {"columns": ["Month", "Passengers"], "data": [["1949-01", 112], ...]},
     "params": {"steps": 12}}  ->  {"predictions": [{"Month": "1961-01-01", "Passengers": 442.1}, ...]}
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model

from jobs.common.forecaster_checkpoint import ForecasterBundle
from jobs.common.pyfunc import BundlePyfunc
from pipelines.contract.errors import UserError


class ForecasterPyfunc(BundlePyfunc):
    """Forecasts the series of a table with the ``forecaster.pt`` artifact."""

    bundle_type = ForecasterBundle

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        steps, series = int(params.get("steps", self.bundle.horizon)), str(params.get("series", ""))
        try:
            table, _ = self.bundle.forecast_frame(model_input, steps, "the request", series or None)
        except UserError as err:  # too short a history, a bad time, a bad step count: the client's error
            raise MlflowException.invalid_parameter_value(str(err)) from None
        return table


set_model(ForecasterPyfunc())
