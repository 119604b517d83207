"""The multi-node path on one machine (``tests/local_cluster.py``): the pipeline on a Ray head and
two Ray worker nodes, a Spark standalone master and worker and an MLflow server, checked through
the servers' own APIs only; an in-process Ray beside that running cluster; and the cluster leaving
no process behind."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse

import pytest

from conftest import PROJECT, get_json
from local_cluster import LocalCluster

pytestmark = pytest.mark.slow

EXPERIMENT = "cluster-test"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Ray head + 2 worker nodes of 1 CPU each, a Spark master + 1 worker, an MLflow server."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    with cluster:
        yield cluster
    assert not cluster.leftovers(), "processes left after the cluster stopped"


def _job(cluster: LocalCluster, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", *argv], cwd=PROJECT, env=cluster.env(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def _mlflow(cluster: LocalCluster, path: str, **query: str) -> dict:
    return get_json(f"{cluster.tracking_uri}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}")


def test_pipeline_runs_across_the_nodes(cluster, tmp_path):
    work = tmp_path / "work"
    two_workers = [f"stages.{stage}.overrides.train.{key}" for stage in ("translator", "word2vec")
                   for key in ("num_workers=2", "cpus_per_worker=1")]
    done = _job(cluster, "jobs.pipeline", "tests/data/pipeline-toy.yaml", f"work_dir={work}",
                f"mlflow.experiment={EXPERIMENT}", *cluster.overrides(), *two_workers)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Started a local Ray instance" not in done.stdout + done.stderr

    # Ray: each data-parallel trainer's two workers ran on two different nodes (1 CPU each)
    runs = {r["name"]: r for r in get_json(f"{cluster.dashboard}/api/train/v2/runs/v1")["train_runs"]}
    for name in ("pipeline-translator", "pipeline-word2vec"):
        assert runs[name]["status"] == "FINISHED"
        workers = runs[name]["attempts"][-1]["workers"]
        assert len(workers) == 2 and len({w["node_id"] for w in workers}) == 2, workers

    # Spark: the preprocessing ran as an application of the standalone master, on its worker
    master = get_json(f"http://127.0.0.1:{cluster.spark_ui_port}/json/")
    assert any(app["name"] == "rnnmt-pipeline" for app in master["completedapps"]), master["completedapps"]

    # MLflow, through the server only: every run finished, artifacts stored by the server
    experiment = _mlflow(cluster, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:"), experiment
    found = get_json(f"{cluster.tracking_uri}/api/2.0/mlflow/runs/search",
                     {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    names = {r["info"]["run_name"]: r["info"] for r in found}
    assert set(names) == {"pipeline", *(f"pipeline-{s}" for s in
                                        ("corpus", "text", "word2vec", "lm", "translator", "evaluate"))}
    assert all(info["status"] == "FINISHED" for info in names.values()), names
    assert summary["mlflow_run_id"] == names["pipeline"]["run_id"]
    report = get_json(f"{cluster.tracking_uri}/api/2.0/mlflow/artifacts/list?run_id={summary['mlflow_run_id']}")
    assert "report.md" in {f["path"] for f in report["files"]}
    translator = names["pipeline-translator"]["run_id"]
    history = _mlflow(cluster, "metrics/get-history", run_id=translator, metric_key="valid_loss")["metrics"]
    assert sorted(m["step"] for m in history) == [0, 1]  # each epoch once
    champion = _mlflow(cluster, "registered-models/alias", name="rnnmt-translator", alias="champion")
    assert champion["model_version"]["run_id"] == translator
    stored = cluster.root / "mlflow" / "artifacts" / experiment["experiment_id"]
    assert (stored / summary["mlflow_run_id"] / "artifacts" / "report.md").is_file()


def test_an_in_process_ray_runs_beside_another_ray(cluster, toy_pairs_data, tmp_path):
    """The default (no ray.address) starts a Ray of its own and trains, while the cluster's head runs."""
    done = _job(cluster, "jobs.train_translator", f"data_dir={toy_pairs_data}", f"output_dir={tmp_path / 'out'}",
                f"storage_path={tmp_path / 'ray'}", "model.hidden_size=16", "train.epochs=1", "train.num_workers=1",
                "train.cpus_per_worker=1", "ray.num_cpus=2", "mlflow.enabled=false")
    log = done.stdout + done.stderr
    assert "Started a local Ray instance" in log
    assert "multiple active Ray instances" not in log, log[-4000:]
    assert (tmp_path / "out" / "best" / "translator.pt").is_file()
