"""Trained models in MLflow: a translator logged as a pyfunc model that translates text, a language
model as one that continues prompts, a classifier as one that labels texts, a forecaster as one that
forecasts series; each registered, and given the ``champion`` alias only when it beats the current
champion on the same test set (BLEU for translators, perplexity for language models, accuracy for
classifiers, RMSE for forecasters)."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.common.checkpoint import Bundle

CHAMPION = "champion"  # the alias of the best registered version
ARTIFACT = "translator"  # the name of translator.pt among the model's artifacts
PARAMS = ("beam", "alpha", "unk", "nbest", "max_tokens")  # the DecodeSettings a request may set
MODEL_CODE = Path(__file__).with_name("translator_model.py")  # what MLflow runs to load the model
EXAMPLE = ["I like cats.", "Where is the station?"]
LM_ARTIFACT = "lm"  # the name of lm.pt among a language model's artifacts
LM_MODEL_CODE = Path(__file__).with_name("lm_model.py")
LM_EXAMPLE = ["The"]
CLASSIFIER_ARTIFACT = "classifier"  # the name of classifier.pt among a classifier's artifacts
CLASSIFIER_MODEL_CODE = Path(__file__).with_name("classifier_model.py")
CLASSIFIER_EXAMPLE = ["a gripping, funny film", "dull"]
FORECASTER_ARTIFACT = "forecaster"  # the name of forecaster.pt among a forecaster's artifacts
FORECASTER_MODEL_CODE = Path(__file__).with_name("forecaster_model.py")


@dataclass(frozen=True)
class TestMetric:
    """The score that decides the champion: its version tag, whether higher is better, its name."""

    tag: str
    higher_is_better: bool
    label: str


def beam_bleu(beam: int) -> TestMetric:
    """A translator's test BLEU with beam search of ``beam`` (a score of another beam does not compare)."""
    return TestMetric(f"test_beam{beam}_bleu", True, f"test BLEU (beam {beam})")


PERPLEXITY = TestMetric("test_perplexity", False, "test perplexity")
ACCURACY = TestMetric("test_accuracy", True, "test accuracy")
RMSE = TestMetric("test_rmse", False, "test RMSE")


def log_translator(mlflow: Any, bundle_file: Path, bundle: Bundle, name: str = "model", step: int = 0) -> Any:
    """Log ``bundle_file`` (the bundle's ``translator.pt``) as a pyfunc model of the active run,
    with a list-of-strings signature whose parameters default to the bundle's decode settings;
    returns MLflow's ``ModelInfo``."""
    decode = bundle.decode_settings().to_dict()
    params = {key: decode[key] for key in PARAMS}
    # The model's code is rnnmt itself, installed where the model is loaded (it is not on PyPI,
    # so the requirements name only what it imports; serve with --env-manager local)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),
        artifacts={ARTIFACT: str(bundle_file)},
        input_example=(EXAMPLE, params),
        pip_requirements=_requirements(),
        step=step,
    )


def log_language_model(mlflow: Any, lm_file: Path, bundle: Any, name: str = "model", step: int = 0) -> Any:
    """Log ``lm_file`` (an ``lm.pt``) as a pyfunc model of the active run that continues prompts,
    with a list-of-strings signature whose parameters default to the model's sampling settings;
    returns MLflow's ``ModelInfo``."""
    params = {**bundle.sample_settings().to_dict(), "tokens": 50, "seed": 0}
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(LM_MODEL_CODE),
        artifacts={LM_ARTIFACT: str(lm_file)},
        input_example=(LM_EXAMPLE, params),
        pip_requirements=_requirements(),
        step=step,
    )


def log_classifier(mlflow: Any, classifier_file: Path, name: str = "model", step: int = 0) -> Any:
    """Log ``classifier_file`` (a ``classifier.pt``) as a pyfunc model of the active run that labels
    texts, with a list-of-strings signature and a ``max_tokens`` parameter; returns MLflow's ``ModelInfo``."""
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(CLASSIFIER_MODEL_CODE),
        artifacts={CLASSIFIER_ARTIFACT: str(classifier_file)},
        input_example=(CLASSIFIER_EXAMPLE, {"max_tokens": 500}),
        pip_requirements=_requirements(),
        step=step,
    )


def log_forecaster(mlflow: Any, forecaster_file: Path, bundle: Any, name: str = "model", step: int = 0) -> Any:
    """Log ``forecaster_file`` (a ``forecaster.pt``) as a pyfunc model of the active run that
    forecasts the series of a table with the training columns (the time and id as text, the values
    as numbers), with ``steps`` (default: the training horizon) and ``series`` parameters; returns
    MLflow's ``ModelInfo``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    columns = ([ColSpec("string", bundle.id_column)] if bundle.id_column else []) + [
        ColSpec("string", bundle.time_column),
        *(ColSpec("double", c, required=False) for c in bundle.value_columns),
    ]
    signature = ModelSignature(
        inputs=Schema(columns),
        params=ParamSchema([ParamSpec("steps", "long", bundle.horizon), ParamSpec("series", "string", "")]),
    )
    # no input example (no history long enough is at hand here): the explicit signature stands for it,
    # so MLflow's (coloured) warning about the missing example is silenced for this call only
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(FORECASTER_MODEL_CODE),
            artifacts={FORECASTER_ARTIFACT: str(forecaster_file)},
            signature=signature,
            pip_requirements=_requirements(),
            step=step,
        )


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("mlflow", "torch", "sentencepiece", "sacrebleu")]


def pairs_digest(sources: Sequence[str], references: Sequence[str]) -> str:
    """Identifies a test set by its sentence pairs: two scores compare only on the same digest."""
    digest = hashlib.sha256()
    for src, ref in zip(sources, references, strict=True):
        digest.update(f"{src}\t{ref}\n".encode())
    return digest.hexdigest()[:16]


def arrays_digest(identity: str, *arrays: np.ndarray) -> str:
    """Identifies a test set by what the model reads and is scored against: ``identity`` (the
    vocabulary's, or the series') and the arrays' values."""
    digest = hashlib.sha256(identity.encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def register(
    mlflow: Any,
    model_uri: str,
    name: str,
    score: float,
    digest: str,
    score_champion: Callable[[str], float | None],
    metric: TestMetric,
) -> dict[str, Any]:
    """Register ``model_uri`` as a new version of ``name``, tagged with its test ``score`` and the
    test set's ``digest``, and move the ``champion`` alias to it when it beats the current
    champion's score on that test set (taken from the champion's tags when it was scored on the same
    set, else from ``score_champion(champion_uri)``; None there: the champion cannot be scored on
    this set, and stays). Records the decision on the active run and returns it, with its reason."""
    client = mlflow.MlflowClient()
    version = mlflow.register_model(model_uri, name).version
    client.set_model_version_tag(name, version, metric.tag, f"{score:.2f}")
    client.set_model_version_tag(name, version, "test_set", digest)
    champion = _champion(client, name)
    if champion is None:
        promote, reason, champion_score = True, "no champion yet", None
    else:
        if champion.tags.get("test_set") == digest and metric.tag in champion.tags:
            champion_score = float(champion.tags[metric.tag])
            source = "its tag"
        else:  # scored on another test set: score it on this one
            champion_score = score_champion(f"models:/{name}/{champion.version}")
            source = "scored now on this test set"
        if champion_score is None:
            promote = False
            reason = (
                f"champion version {champion.version} cannot be scored on this test set (another vocabulary), "
                f"so it stays"
            )
        else:
            ours, theirs = round(score, 2), round(champion_score, 2)
            promote = ours > theirs if metric.higher_is_better else ours < theirs
            reason = (
                f"{metric.label} {score:.2f} {'beats' if promote else 'does not beat'} champion version "
                f"{champion.version}'s {champion_score:.2f} ({source})"
            )
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    short = metric.tag.removeprefix("test_")
    decision = {
        "name": name,
        "version": int(version),
        metric.tag: round(score, 2),
        "test_set": digest,
        "champion": promote,
        "champion_version": int(version) if promote else int(champion.version),
        f"previous_champion_{short}": champion_score,
        "reason": reason,
    }
    print(
        f"registry: {name} version {version}: {reason}; {CHAMPION} is version {decision['champion_version']}",
        flush=True,
    )
    mlflow.log_dict(decision, "registry.json")  # and on the active run
    mlflow.set_tags(
        {
            "registry.model": name,
            "registry.version": decision["version"],
            "registry.champion": decision["champion"],
            "registry.reason": decision["reason"],
        }
    )
    return decision


def _champion(client: Any, name: str) -> Any:
    """The version the champion alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
