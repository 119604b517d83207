"""Where runs and their artifacts go: a local store by default, a tracking server when given one."""

from __future__ import annotations

import pytest

from jobs.common.config import PROJECT_DIR
from jobs.common.tracking import artifact_location, is_server, tracking_uri


def test_tracking_uri_from_config_then_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri({}) == f"sqlite:///{PROJECT_DIR / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri({}) == "http://127.0.0.1:5000"
    assert tracking_uri({"tracking_uri": "sqlite:////x.db"}) == "sqlite:////x.db"


def test_artifacts_go_where_every_node_reaches_them(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # a local store: the project's mlartifacts next to it
    assert artifact_location({}) == (PROJECT_DIR / "mlartifacts").as_uri()
    # a server: its own artifact store (clients upload through it), not a path on this machine
    assert is_server("http://127.0.0.1:5000") and is_server("https://mlflow.example.org")
    assert not is_server("sqlite:////x.db")
    assert artifact_location({"tracking_uri": "http://127.0.0.1:5000"}) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org")
    assert artifact_location({}) is None
    # what is configured wins
    assert artifact_location({"tracking_uri": "http://h:5000", "artifact_location": "s3://b/a"}) == "s3://b/a"


def test_a_tracking_server_that_stays_away_is_one_clear_error(monkeypatch):
    """MLflow's own retries (here none) run out: the worker's metrics log ends with one error that
    names the server and how to go on, not MLflow's connection traceback."""
    from conftest import free_port
    from jobs.common.tracking import MetricsLog, TrackingUnavailableError
    from pipelines.contract.errors import UserError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    log = MetricsLog(uri, "0" * 32)
    with pytest.raises(TrackingUnavailableError, match=f"tracking server at {uri} did not answer") as error:
        log({"train_loss": 1.0}, step=0)
    assert isinstance(error.value, UserError) and "same run_name" in str(error.value)


@pytest.mark.parametrize("stop, status", [(KeyboardInterrupt(), "KILLED"), (RuntimeError("boom"), "FAILED")])
def test_a_run_stopped_from_outside_ends_killed_and_an_error_failed(stop, status, tmp_path):
    import mlflow

    from jobs.common.tracking import mlflow_run

    cfg = {
        "enabled": True,
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "experiment": "stops",
        "artifact_location": (tmp_path / "artifacts").as_uri(),
    }
    with pytest.raises(type(stop)), mlflow_run(cfg, "job") as run:
        run_id = run.active_run().info.run_id
        raise stop
    assert mlflow.MlflowClient(cfg["tracking_uri"]).get_run(run_id).info.status == status
