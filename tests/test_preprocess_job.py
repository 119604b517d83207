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


# Numeric keys given values that cannot work: each is one ConfigError naming the key, before any
# work starts (nan and inf arrive from the command line as text: they were TypeError and
# ValueError tracebacks, and spark.partitions=1e18 a Spark one).
BAD_NUMBERS = (
    [("seed", value, "seed must be an integer >= 0") for value in ("nan", "inf", "-1", "1.5")]
    + [
        (key, value, f"{key} must be a finite number")
        for key in ("filter.max_ratio", "split.valid", "split.test")
        for value in ("nan", "inf", "-1", "'0.1'")
    ]
    + [
        ("split.valid", "1.5", "split.valid must be a finite number in \\[0, 1\\]"),
        ("spark.partitions", "1e18", "spark.partitions must be an integer >= 0"),
        ("spark.partitions", "-1", "spark.partitions must be an integer >= 0"),
        ("spark.partitions", "nan", "spark.partitions must be an integer >= 0"),
        ("filter.max_len", "0", "filter.max_len must be an integer >= 1"),
        ("vocab.max_size", "1e18", "vocab.max_size must be an integer"),
        ("output.shards", "inf", "output.shards must be an integer >= 1"),
    ]
)


@pytest.mark.parametrize(("key", "value", "message"), BAD_NUMBERS, ids=lambda v: str(v)[:20])
def test_a_number_that_cannot_work_is_one_clear_error(tmp_path, toy_pairs, key, value, message):
    from pipelines.contract.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        job.run(
            [
                f"data.inputs=[{{path: '{toy_pairs}', format: tsv}}]",
                f"output_dir={tmp_path / 'out'}",
                f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                f"{key}={value}",
            ]
        )
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()  # no run was started
