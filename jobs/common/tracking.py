"""MLflow for jobs: tracking URI, experiment and a run that always ends with a final status."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobs.common.config import PROJECT_DIR, flatten
from jobs.common.job_output import run_log
from jobs.common.ray_private import tune_stop_requested
from pipelines.contract.errors import UserError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per checkpoint download is noise

LOG_FILE = "job.log"  # what the job printed while its run was open: the run's logs/job.log

# MLflow's limit on a param value's length.
_MAX_PARAM = 6000


def tracking_uri(cfg: Mapping[str, Any]) -> str:
    """Config, then ``MLFLOW_TRACKING_URI``, then :func:`project_store`."""
    return cfg.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or project_store()


def project_store() -> str:
    """The default tracking store: a SQLite file in the project directory (absolute)."""
    return f"sqlite:///{PROJECT_DIR / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server (which every node reaches) rather than a local store."""
    return uri.startswith(("http://", "https://"))


def artifact_location(cfg: Mapping[str, Any]) -> str | None:
    """Where a new experiment stores artifacts: the configured place; by default the project's
    ``mlartifacts`` next to a local store, and the server's own choice (None) with a tracking
    server, which then stores what clients on any node upload (``mlflow server --serve-artifacts``)
    instead of each client writing to a path on its own disk."""
    if cfg.get("artifact_location"):
        return cfg["artifact_location"]
    return None if is_server(tracking_uri(cfg)) else (PROJECT_DIR / "mlartifacts").as_uri()


class TrackingUnavailableError(UserError, RuntimeError):
    """The tracking server stayed unreachable through all of MLflow's retries."""


@contextmanager
def server_retries(uri: str) -> Iterator[None]:
    """Calls to the tracking store inside, with MLflow's own bounded retries: a server that is down
    for a while (a restart) is waited for, MLFLOW_HTTP_REQUEST_MAX_RETRIES times (7) with
    exponential backoff (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR 2: about 4 minutes in all); one that
    stays down ends the job with one clear error instead of MLflow's."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        if not str(err).startswith("API request to") or "failed with" not in str(err):
            raise  # an answer from the server, not its absence
        raise TrackingUnavailableError(
            f"the MLflow tracking server at {uri} did not answer through MLflow's retries "
            f"(MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR): {str(err)[:300]}. "
            "Training stopped; rerun the job with the same run_name once the server is back to resume "
            "from its last checkpoint"
        ) from None


class _NoRun:
    """Stands in for MLflow when tracking is disabled."""

    info = None

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


# MLflow 3's UI opens an experiment of this kind on its training runs (else it may infer a GenAI one
# and land on empty trace views).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(cfg: Mapping[str, Any]) -> str:
    """The id of the configured experiment, created (with its artifact location) if new, and
    marked as a model-training experiment unless it has a kind already."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.get_experiment_by_name(cfg["experiment"])
    if experiment is None:
        return mlflow.create_experiment(
            cfg["experiment"], artifact_location=artifact_location(cfg), tags=EXPERIMENT_KIND
        )
    if not set(EXPERIMENT_KIND) & set(experiment.tags):
        for key, value in EXPERIMENT_KIND.items():
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def runs_page(base_url: str, experiment_id: str | None) -> str:
    """The UI page of an experiment's training runs. MLflow 3.17's UI opens on its GenAI views
    (traces) unless the address asks for the model-training workflow."""
    page = f"#/experiments/{experiment_id}" if experiment_id else "#/experiments"
    return f"{base_url.rstrip('/')}/{page}?workflowType=machine_learning"


def log_dataset(mlflow: Any, data_dir: Path, context: str = "training") -> None:
    """Record a preprocessing output as the run's input dataset: its manifest is the source, the
    manifest's SHA-256 the digest (the UI's Dataset column)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    manifest = data_dir / "manifest.json"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    dataset = MetaDataset(LocalArtifactDatasetSource(str(manifest)), name=data_dir.name, digest=digest)
    mlflow.log_input(dataset, context=context)


@contextmanager
def mlflow_run(
    cfg: Mapping[str, Any], run_name: str, params: Mapping[str, Any] | None = None, run_id: str | None = None
) -> Iterator[Any]:
    """Start a run in the configured experiment (or reopen ``run_id``) and log ``params``
    (flattened). The run is a child of the active run, else of ``cfg.parent_run_id`` if set. Yields
    the ``mlflow`` module, or a no-op stand-in when ``cfg.enabled`` is false. The run ends FINISHED,
    FAILED on an error, KILLED when stopped from outside: Ctrl-C, or Ray Tune stopping the trial."""
    if not cfg.get("enabled", True):
        yield _NoRun()
        return
    import mlflow

    parent = mlflow.active_run()
    stop_requested = tune_stop_requested()
    parent_id = parent.info.run_id if parent else cfg.get("parent_run_id")
    with (
        mlflow.start_run(
            run_id=run_id,
            experiment_id=None if run_id else experiment_id(cfg),
            run_name=None if run_id else run_name,
            nested=parent is not None,
            parent_run_id=None if run_id else parent_id,
        ) as run,
        tempfile.TemporaryDirectory() as tmp,
        run_log(Path(tmp) / LOG_FILE) as log,
    ):
        if params:
            mlflow.log_params({k: _param(v) for k, v in flatten(dict(params)).items()})
        try:
            yield mlflow
        except BaseException as err:
            _save_log(mlflow, log, failed=True)
            if isinstance(err, KeyboardInterrupt) or stop_requested():  # start_run's exit would say FAILED
                mlflow.end_run(status="KILLED")
            raise
        _save_log(mlflow, log)
        print(f"mlflow: run {run.info.run_id} in experiment {cfg['experiment']!r} at {tracking_uri(cfg)}")


def _save_log(mlflow: Any, log: Path, failed: bool = False) -> None:
    """Log the job's output (:func:`run_log`) to the run as ``logs/job.log``; after a failure, as
    far as the store still takes it (the failure itself is what the job reports)."""
    if log.stat().st_size == 0:
        return
    try:
        mlflow.log_artifact(str(log), "logs")
    except Exception:
        if not failed:
            raise


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _MAX_PARAM else text[: _MAX_PARAM - 3] + "..."


class MetricsLog:
    """Logs metrics to the job's MLflow run from inside a worker (the driver owns the run).

    A worker restarted from a checkpoint repeats the steps since that checkpoint: steps at or below
    the last one an earlier attempt logged (read from the run once, by the first metric's name)
    are not logged again, so each step appears once. A tracking server that is down for a while
    is waited for (:func:`server_retries`)."""

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow import MlflowClient

        self.client, self.run_id, self.uri = MlflowClient(tracking_uri), run_id, tracking_uri
        self.logged_through: int | None = None

    @classmethod
    def for_rank(cls, config: dict[str, Any], rank: int) -> "MetricsLog | None":
        """The log for rank 0 of a job with an MLflow run, else None."""
        if rank != 0 or not config.get("mlflow_run_id"):
            return None
        return cls(config["mlflow_tracking_uri"], config["mlflow_run_id"])

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        with server_retries(self.uri):
            if self.logged_through is None:
                history = self.client.get_metric_history(self.run_id, next(iter(metrics)))
                self.logged_through = max((m.step for m in history), default=-1)
            if step <= self.logged_through:
                return
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        self.logged_through = step
