"""What happens around training, on the driver, the same for every family that trains with the
shared loop: start the run, train on Ray Train, publish ``best/`` and ``last/``, score the test
split, log to MLflow and register the model. A family's part of it is a :class:`Trainer`."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig

from jobs.common import ray_train
from jobs.common.config import to_yaml
from jobs.common.model_registry import TestMetric, log_model, register
from jobs.common.training_loop import BEST_FILE, STATE_FILE, Family, Progress
from pipelines.contract.atomic import atomic_directory
from pipelines.contract.errors import TrainingError


class Trainer(ABC):
    """A family's part of its training job on the driver (its part on the workers is its
    :class:`Family`): the bundle that is published, the test scores, what else is logged, and how
    the registry compares models. Made once the run has started, with the config as loaded
    (``cfg``), the worker config and the ``mlflow`` module (or its stand-in)."""

    job: ClassVar[str]  # the config: conf/<job>.yaml
    family: ClassVar[type[Family]]
    path_keys: ClassVar[tuple[str, ...]] = ("data_dir", "output_dir")  # made absolute on the driver
    checkpoint_file: ClassVar[str]  # the bundle's file in best/ and last/ ("lm.pt")

    def __init__(self, cfg: DictConfig, config: dict[str, Any], mlflow: Any):
        self.cfg, self.config, self.mlflow = cfg, config, mlflow
        self.output_dir, self.data_dir = Path(config["output_dir"]), Path(config["data_dir"])

    @staticmethod
    @abstractmethod
    def prepare(config: dict[str, Any]) -> None:
        """Check the config and its input before anything starts (raise a UserError)."""

    def checkpoints_kept(self) -> int:
        """How many of the latest checkpoints Ray keeps (at least 2)."""
        return 2

    @abstractmethod
    def bundle(self, best: dict[str, Any]) -> Any:
        """The bundle of the best model (``best``: its state and validation metrics), in eval mode,
        with its ``info``; it has ``save(path, model_state)``."""

    def outputs(self, bundle: Any, result: Any, best: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
        """The model states to publish, by directory name (``best`` first)."""
        return {"best": best["model"], "last": last["model"]}

    def save(self, bundle: Any, directory: Path, name: str, state: dict[str, Any]) -> None:
        """Write one published directory's checkpoint."""
        bundle.save(directory / self.checkpoint_file, state)

    @abstractmethod
    def test(self, bundle: Any) -> dict[str, Any]:
        """The test split's scores (named ``test_...``) and ``test_set``, the digest of what they
        were taken on (scores compare only on the same digest); {} when there is no test split."""

    def write_extras(self, directory: Path, bundle: Any, test: dict[str, Any]) -> None:
        """Files published beside best/ and last/ (the output directory before it appears)."""

    def log_extras(self, bundle: Any, test: dict[str, Any]) -> None:
        """What else goes to the job's MLflow run (plots, samples, tables)."""

    def summary_extras(self, bundle: Any) -> dict[str, Any]:
        """Keys of the summary that are the family's own."""
        return {}

    @abstractmethod
    def test_metric(self, bundle: Any) -> TestMetric:
        """The test score that decides the registry's champion."""

    @abstractmethod
    def score_champion(self, uri: str, bundle: Any) -> float | None:
        """The champion's score on this run's test set, None if it cannot read it."""


def train(trainer_type: type[Trainer], argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run a training job: train on Ray Train, publish, test, log and register; returns the summary
    it prints last (as JSON)."""
    with ray_train.training_run(trainer_type.job, argv, trainer_type.path_keys, trainer_type.prepare) as (
        cfg,
        config,
        mlflow,
    ):
        started = time.perf_counter()
        trainer = trainer_type(cfg, config, mlflow)
        result = ray_train.fit(
            partial(ray_train.loop_worker, trainer.family), config, log_reports=True, keep=trainer.checkpoints_kept()
        )
        files = ray_train.read_checkpoint(ray_train.whole_checkpoint(result.checkpoint), [STATE_FILE, BEST_FILE])
        last, best = last_and_best(files, trainer.family.metric)
        progress = Progress(**last["progress"])

        # the best model as a bundle that reads raw input; the test scores; publish best/ and last/
        bundle = trainer.bundle(best)
        outputs = trainer.outputs(bundle, result, best, last)
        test = trainer.test(bundle)
        output_dir = trainer.output_dir
        with atomic_directory(output_dir, overwrite=config["overwrite"]) as tmp:
            for name, state in outputs.items():
                (tmp / name).mkdir()
                trainer.save(bundle, tmp / name, name, state)
            (tmp / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
            trainer.write_extras(tmp, bundle, test)

        unit = trainer.family.unit
        valid = {k: v for k, v in best["metrics"].items() if k.startswith("valid_")}
        summary = {
            "best": str(output_dir / "best"),
            "last": str(output_dir / "last"),
            "best_epoch": best["metrics"]["epoch"],
            "epochs": progress.epoch,
            **valid,
            "train_seconds": round(progress.train_seconds, 1),
            f"train_{unit}": int(progress.train_units),
            f"train_{unit}_per_sec": progress.train_units / max(progress.train_seconds, 1e-9),
            "wall_seconds": round(time.perf_counter() - started, 1),
            **test,
            **trainer.summary_extras(bundle),
        }

        # MLflow: what the epochs' reports did not log already; the family's extras; the best
        # checkpoint; the model (linked to the best epoch's metrics, and its test scores), registered
        reported = set(result.metrics or {}) | {"epochs"} | set(test)  # the test scores: with the model, below
        mlflow.log_metrics({k: v for k, v in numbers(summary).items() if k not in reported})
        trainer.log_extras(bundle, test)
        mlflow.log_artifacts(str(output_dir / "best"), "best")
        if config["mlflow"]["enabled"]:
            info = log_model(mlflow, output_dir / "best" / trainer.checkpoint_file, bundle, best["metrics"]["epoch"])
            if numbers(test):
                mlflow.log_metrics(numbers(test), step=best["metrics"]["epoch"], model_id=info.model_id)
            metric = trainer.test_metric(bundle)
            if config["mlflow"]["registry_name"] and metric.tag in test:
                summary["registry"] = register(
                    mlflow,
                    info.model_uri,
                    config["mlflow"]["registry_name"],
                    test[metric.tag],
                    test["test_set"],
                    lambda uri: trainer.score_champion(uri, bundle),
                    metric,
                )
        mlflow.set_tag("output_dir", str(output_dir))
    print(json.dumps(summary))
    return summary


def last_and_best(files: dict[str, Any], metric: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last training state and the best model of a finished run's checkpoint files; a
    TrainingError when no validation gave a finite ``metric`` (there is no best model to publish)."""
    if files.get(BEST_FILE) is None:
        raise TrainingError(
            f"no validation gave a finite {metric}, so there is no best model to publish; "
            "lower train.lr, set train.clip_norm, or check the validation data"
        )
    return files[STATE_FILE], files[BEST_FILE]


def numbers(values: dict[str, Any]) -> dict[str, float]:
    """The entries that are numbers (metrics for MLflow)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
