"""Saved each family's MLflow pyfunc model (mlflow/<family>: what a registry holds) with the code at
commit 42e1c17, checked out in /tmp/old: ``PYTHONPATH=/tmp/old python save_legacy_models.py``.
``log_*`` are called with a stand-in for the mlflow module whose ``pyfunc.log_model`` saves the model
to a directory instead of a run. Run once; tests/test_legacy_checkpoints.py loads the results."""

from pathlib import Path

import mlflow

import jobs.common.model_registry as registry
from jobs.common.checkpoint import Bundle
from jobs.common.forecaster_checkpoint import ForecasterBundle
from jobs.common.lm_checkpoint import LMBundle

assert registry.__file__.startswith("/tmp/old"), registry.__file__
legacy = Path("/work/main/tests/data/legacy")
out = legacy / "mlflow"
out.mkdir(exist_ok=True)


class Capture:
    """Stands in for the mlflow module: log_model -> save_model into out/<name>."""

    pyfunc = None


def saver(name):
    def log_model(**kwargs):
        kwargs.pop("name", None)
        mlflow.pyfunc.save_model(str(out / name), **kwargs)

    capture = Capture()
    capture.pyfunc = type("pyfunc", (), {"log_model": staticmethod(log_model)})
    return capture


registry.log_translator(saver("translator"), legacy / "translator.pt", Bundle.load(legacy / "translator.pt"))
registry.log_language_model(saver("lm"), legacy / "lm.pt", LMBundle.load(legacy / "lm.pt"))
registry.log_classifier(saver("classifier"), legacy / "classifier.pt")
registry.log_forecaster(saver("forecaster"), legacy / "forecaster.pt", ForecasterBundle.load(legacy / "forecaster.pt"))
print("saved", sorted(p.name for p in out.iterdir()))
