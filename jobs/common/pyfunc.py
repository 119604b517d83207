"""What the families' MLflow pyfunc models share (``*_pyfunc.py``, run by MLflow: models from
code): the bundle loaded from the logged model's checkpoint artifact, and the client's errors."""

from __future__ import annotations

from typing import Any, ClassVar

from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from jobs.common.bundle import ModelBundle


class BundlePyfunc(PythonModel):
    """A family's bundle served by MLflow: ``bundle_type`` loaded from its artifact (weights only)."""

    bundle_type: ClassVar[type[ModelBundle]]

    def load_context(self, context: Any) -> None:
        self.bundle = self.bundle_type.load(context.artifacts[self.bundle_type.artifact])


def require_texts(texts: list[str], what: str) -> None:
    """Refuse an empty request (HTTP 400 when served), naming what it should hold."""
    if not texts:
        raise MlflowException.invalid_parameter_value(f"no {what}: send a non-empty list of strings")
