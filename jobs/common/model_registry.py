"""Trained models in MLflow: any family's bundle logged as a pyfunc model that reads raw input (a
translator translates text, a language model continues prompts, a classifier labels texts, a
forecaster forecasts series: each family declares its model code and serving example on its
bundle); each registered, and given the ``champion`` alias only when it beats the current
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

from jobs.common.bundle import ModelBundle

CHAMPION = "champion"  # the alias of the best registered version

# Names the code saved with models logged before 2026-12-07 imports from here (each family's model
# code now reads them from its bundle class): kept so that those registered models still load.
_LEGACY = {
    "ARTIFACT": ("jobs.common.checkpoint", "Bundle", "artifact"),
    "PARAMS": ("jobs.common.checkpoint", "Bundle", "request_params"),
    "LM_ARTIFACT": ("jobs.common.lm_checkpoint", "LMBundle", "artifact"),
    "CLASSIFIER_ARTIFACT": ("jobs.common.classifier_checkpoint", "ClassifierBundle", "artifact"),
    "FORECASTER_ARTIFACT": ("jobs.common.forecaster_checkpoint", "ForecasterBundle", "artifact"),
}


def __getattr__(name: str) -> Any:
    if name not in _LEGACY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, cls, attribute = _LEGACY[name]
    return getattr(getattr(importlib.import_module(module), cls), attribute)


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


def log_model(mlflow: Any, checkpoint: Path, bundle: ModelBundle, step: int = 0, name: str = "model") -> Any:
    """Log ``checkpoint`` (the file of ``bundle``'s family) as a pyfunc model of the active run: the
    family's model code (models from code: nothing pickled) with the checkpoint as its artifact,
    and the family's input example or signature, whose parameters default to the bundle's settings;
    linked to the run's metrics at ``step``. Returns MLflow's ``ModelInfo``."""
    serving = bundle.serving()
    with warnings.catch_warnings():
        # a family that declares a signature instead of an example (none is at hand): MLflow's
        # (coloured) warning about the missing example is silenced for this call only
        warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)
        # The model's code is rnnmt itself, installed where the model is loaded (it is not on PyPI,
        # so the requirements name only what it imports; serve with --env-manager local)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name(bundle.pyfunc_code)),
            artifacts={bundle.artifact: str(checkpoint)},
            pip_requirements=_requirements(),
            step=step,
            **serving,
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
