"""``python -m jobs.preprocess``: config on the command line, MLflow tracking, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from jobs import preprocess as job
from jobs.common.spark_session import JavaNotFoundError, check_java
from tests.conftest import PROJECT


def test_job_logs_to_mlflow(spark, tmp_path, toy_pairs, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "data"
    manifest = job.run(
        [
            f"output_dir={out}",
            f"mlflow.tracking_uri={uri}",
            f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
            "mlflow.experiment=test-preprocess",
            "filter.max_len=30",
            f"data.inputs=[{{path: {toy_pairs}, format: tsv}}]",
        ]
    )
    printed = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(printed[-1])
    assert summary["kept"] == manifest["counts"]["kept"] and summary["output_dir"] == str(out)
    assert "filter.max_len=30" in printed[0]  # the config, as its keys that differ from the defaults

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("test-preprocess")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["filter.max_len"] == "30"
    assert run.data.metrics["kept"] == manifest["counts"]["kept"]
    assert run.data.metrics["vocab.src.size"] == manifest["vocab"]["src"]["size"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "vocab", "config.yaml"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "vocab")} == {"vocab/src.tsv", "vocab/tgt.tsv"}


def test_command_line_errors_are_clear(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "jobs.preprocess", *args], cwd=PROJECT, capture_output=True, text=True, timeout=120
        )

    result = run("filter.max_lenght=3", "mlflow.enabled=false")
    assert result.returncode != 0 and "unknown config key" in result.stderr
    result = run(f"output_dir={tmp_path}/o", "mlflow.enabled=false", "data.inputs=[{path: /nope/*.tsv}]")
    assert result.returncode != 0 and "no file matches '/nope/*.tsv'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_java_is_explained(tmp_path):
    with pytest.raises(JavaNotFoundError, match="needs Java 17"):
        check_java({"PATH": str(tmp_path)})
    with pytest.raises(JavaNotFoundError, match="JAVA_HOME"):
        check_java({"JAVA_HOME": str(tmp_path), "PATH": ""})
    assert check_java().endswith("java")
