"""Checkpoints written before the shared training loop (tests/data/legacy, made by its
make_legacy.py at commit 42e1c17) still load, and produce what they produced then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.common.checkpoint import Bundle
from jobs.common.classifier_checkpoint import ClassifierBundle
from jobs.common.forecaster_checkpoint import ForecasterBundle
from jobs.common.lm_checkpoint import LMBundle
from jobs.common.translation import translate

LEGACY = Path(__file__).parent / "data" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text(encoding="utf-8"))


def _make_legacy():
    """The inputs the fixtures were run on, from the script that made them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_legacy", LEGACY / "make_legacy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_old_translator_translates_as_before():
    bundle = Bundle.load(LEGACY / "translator.pt")
    texts = _make_legacy().TEXTS
    assert [t.text for t in translate(bundle, texts, bundle.decode_settings())] == EXPECTED["translator"]


def test_old_language_model_generates_as_before():
    bundle = LMBundle.load(LEGACY)
    assert bundle.generate("the cat", 6, bundle.sample_settings(), 2, seed=3).texts == EXPECTED["lm"]


def test_old_classifier_classifies_as_before():
    bundle = ClassifierBundle.load(LEGACY)
    predictions = bundle.classify(_make_legacy().TEXTS)
    for prediction, expected in zip(predictions, EXPECTED["classifier"], strict=True):
        assert prediction.probabilities == pytest.approx(expected, abs=1e-6)


def test_old_forecaster_forecasts_as_before():
    bundle = ForecasterBundle.load(LEGACY)
    table, _ = bundle.forecast_frame(_make_legacy().SERIES, 3, "series.csv")
    assert table["value"].tolist() == pytest.approx(EXPECTED["forecaster"], rel=1e-9)


# MLflow models logged by the same code (each family's pyfunc model, saved by make_legacy's companion
# step: tests/data/legacy/mlflow/<family>): what a registry holds from before the change. Their
# code is the copy saved with them, which imports rnnmt's modules by name.
def _pyfunc(family: str):
    import mlflow

    return mlflow.pyfunc.load_model(str(LEGACY / "mlflow" / family))


def test_old_logged_translator_still_translates():
    assert _pyfunc("translator").predict(_make_legacy().TEXTS) == EXPECTED["translator"]


def test_old_logged_language_model_still_generates():
    texts = _pyfunc("lm").predict(["the cat"], params={"tokens": 6, "seed": 3})
    assert len(texts) == 1 and isinstance(texts[0], str)
    bundle = LMBundle.load(LEGACY)
    assert texts == [bundle.generate("the cat", 6, bundle.sample_settings(), 1, seed=3).texts[0]]


def test_old_logged_classifier_still_classifies():
    predictions = _pyfunc("classifier").predict(_make_legacy().TEXTS)
    for prediction, expected in zip(predictions, EXPECTED["classifier"], strict=True):
        assert dict(prediction)["probabilities"] == pytest.approx(expected, abs=1e-6)


def test_old_logged_forecaster_still_forecasts():
    table = _pyfunc("forecaster").predict(_make_legacy().SERIES, params={"steps": 3})
    assert table["value"].tolist() == pytest.approx(EXPECTED["forecaster"], rel=1e-9)
