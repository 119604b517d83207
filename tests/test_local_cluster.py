"""The multi-node path on one machine (``jobs/local_cluster.py``): the pipeline on a Ray head and
two Ray worker nodes, a Spark standalone master and workers and an MLflow server, checked through
the servers' own APIs only, and its champion served from the registry; the classifier and the
forecaster from preprocessing to prediction on the same cluster; an in-process Ray beside
that running cluster; faults (a Ray node, a Spark worker, the MLflow server lost for a while); and
the cluster leaving no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import uuid
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient
from test_model_registry import _wait_for as wait_until_ok
from test_model_registry import post as post_json

from conftest import PROJECT, free_port, get_json
from jobs.common.checkpoint import Bundle
from jobs.common.translation import translate
from jobs.local_cluster import BIN, LocalCluster

pytestmark = pytest.mark.slow

EXPERIMENT = "cluster-test"
SERVED = ["a cat .", "the dog"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Ray head + 2 worker nodes of 1 CPU each, a Spark master + 2 workers of 1 core, an MLflow server."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), spark_workers=2)
    with cluster:
        yield cluster
    assert not cluster.leftovers(), "processes left after the cluster stopped"


def _job(cluster: LocalCluster, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", *argv], cwd=PROJECT, env=cluster.env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def _mlflow(cluster: LocalCluster, path: str, **query: str) -> dict:
    return get_json(f"{cluster.tracking_uri}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}")


def _submit(cluster: LocalCluster, job_id: str, *argv: str) -> subprocess.CompletedProcess:
    """``ray job submit`` of ``python argv`` to the cluster's head, the project as the working directory."""
    command = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        cluster.dashboard,
        "--submission-id",
        job_id,
        "--working-dir",
        ".",
        "--",
        "python",
        *argv,
    ]
    for _ in range(30):  # the head's dashboard can answer before its job agent is up
        done = subprocess.run(command, cwd=PROJECT, env=cluster.env(), capture_output=True, text=True, timeout=900)
        if "No available agent to submit job" not in done.stderr + done.stdout:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def test_pipeline_submitted_runs_across_the_nodes(cluster, tmp_path):
    """``ray job submit`` of the pipeline: its driver on the head, its work on every node."""
    work = tmp_path / "work"
    two_workers = [
        f"stages.{stage}.overrides.train.{key}"
        for stage in ("translator", "word2vec")
        for key in ("num_workers=2", "cpus_per_worker=1")
    ]
    job_id = f"rnnmt-test-{uuid.uuid4().hex[:8]}"
    done = _submit(
        cluster,
        job_id,
        "-m",
        "jobs.pipeline",
        "tests/data/pipeline-toy.yaml",
        f"work_dir={work}",
        f"mlflow.experiment={EXPERIMENT}",
        *cluster.overrides(),
        *two_workers,
    )
    assert JobSubmissionClient(cluster.dashboard).get_job_status(job_id) == JobStatus.SUCCEEDED
    log = done.stdout + done.stderr
    assert "Started a local Ray instance" not in log  # it ran on the cluster, not beside it
    summary = json.loads(
        next(line for line in reversed(done.stdout.splitlines()) if line.startswith('{"mlflow_run_id"'))
    )

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
    found = get_json(
        f"{cluster.tracking_uri}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "max_results": 100},
    )["runs"]
    names = {r["info"]["run_name"]: r["info"] for r in found}
    assert set(names) == {
        "pipeline",
        *(f"pipeline-{s}" for s in ("corpus", "text", "word2vec", "lm", "translator", "evaluate")),
    }
    assert all(info["status"] == "FINISHED" for info in names.values()), names
    assert summary["mlflow_run_id"] == names["pipeline"]["run_id"]
    report = get_json(f"{cluster.tracking_uri}/api/2.0/mlflow/artifacts/list?run_id={summary['mlflow_run_id']}")
    assert "report.md" in {f["path"] for f in report["files"]}
    translator = names["pipeline-translator"]["run_id"]
    history = _mlflow(cluster, "metrics/get-history", run_id=translator, metric_key="valid_loss")["metrics"]
    assert sorted(m["step"] for m in history) == [1, 2]  # each epoch once
    champion = _mlflow(cluster, "registered-models/alias", name="rnnmt-translator", alias="champion")
    assert champion["model_version"]["run_id"] == translator
    stored = cluster.root / "mlflow" / "artifacts" / experiment["experiment_id"]
    assert (stored / summary["mlflow_run_id"] / "artifacts" / "report.md").is_file()

    # the champion served from the registry, fetched through the server
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.serve",
            "model=models:/rnnmt-translator@champion",
            f"port={port}",
            f"mlflow.tracking_uri={cluster.tracking_uri}",
        ],
        cwd=PROJECT,
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/ping", server)
        best = Bundle.load(work / "translator" / "best")
        expected = [t.text for t in translate(best, SERVED, best.decode_settings())]
        answer = post_json(f"http://127.0.0.1:{port}/invocations", json.dumps({"inputs": SERVED}).encode())
        assert answer == (200, {"predictions": expected})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_classifier_and_forecaster_run_across_the_nodes(cluster, tmp_path):
    """The README's commands for both systems with the cluster's Spark, Ray and MLflow: preprocessing
    on the standalone master, each trainer's two workers on two nodes, predictions from the
    published models; runs checked through the MLflow server."""
    common = [
        *cluster.overrides(),
        f"mlflow.experiment={EXPERIMENT}-more",
        f"storage_path={tmp_path / 'ray'}",
        "train.num_workers=2",
        "train.cpus_per_worker=1",
        "model.hidden_size=16",
    ]
    data = [*cluster.overrides(), f"mlflow.experiment={EXPERIMENT}-more"]
    _job(
        cluster,
        "jobs.preprocess",
        "conf/preprocess/sample_sentiment.yaml",
        f"output_dir={tmp_path / 'sentiment'}",
        "run_name=cluster-sentiment",
        *data,
    )
    _job(
        cluster,
        "jobs.train_classifier",
        f"data_dir={tmp_path / 'sentiment'}",
        f"output_dir={tmp_path / 'cls'}",
        "run_name=cluster-classifier",
        "train.epochs=1",
        "model.embedding_size=16",
        *common,
    )
    _job(
        cluster,
        "jobs.preprocess",
        "conf/preprocess/sample_series.yaml",
        f"output_dir={tmp_path / 'series'}",
        "run_name=cluster-series",
        *data,
    )
    _job(
        cluster,
        "jobs.train_forecaster",
        f"data_dir={tmp_path / 'series'}",
        f"output_dir={tmp_path / 'fc'}",
        "run_name=cluster-forecaster",
        "train.epochs=2",
        "valid.every=1",
        *common,
    )

    label = _job(cluster, "jobs.classify", str(tmp_path / "cls" / "best"), "--input", str(PROJECT / "README.md"))
    assert {line.split("\t")[0] for line in label.stdout.splitlines() if line} <= {"0", "1"}
    forecast = _job(
        cluster,
        "jobs.forecast",
        str(tmp_path / "fc" / "best"),
        "--series",
        str(PROJECT / "data/sample/sunspots-yearly.csv"),
        "--steps",
        "5",
    )
    assert len(forecast.stdout.strip().splitlines()) == 1 + 5  # a header and the five steps

    runs = {r["name"]: r for r in get_json(f"{cluster.dashboard}/api/train/v2/runs/v1")["train_runs"]}
    for name in ("cluster-classifier", "cluster-forecaster"):
        workers = runs[name]["attempts"][-1]["workers"]
        assert runs[name]["status"] == "FINISHED" and len({w["node_id"] for w in workers}) == 2, workers
    master = get_json(f"http://127.0.0.1:{cluster.spark_ui_port}/json/")
    assert sum(app["name"] == "rnnmt-preprocess" for app in master["completedapps"]) >= 2
    experiment = _mlflow(cluster, "experiments/get-by-name", experiment_name=f"{EXPERIMENT}-more")["experiment"]
    found = get_json(
        f"{cluster.tracking_uri}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "max_results": 10},
    )["runs"]
    status = {r["info"]["run_name"]: r["info"]["status"] for r in found}
    assert status == {
        name: "FINISHED" for name in ("cluster-sentiment", "cluster-classifier", "cluster-series", "cluster-forecaster")
    }
    # both models registered through the server, each the champion of its name
    runs_by_name = {r["info"]["run_name"]: r["info"]["run_id"] for r in found}
    for model, run in (("rnnmt-classifier", "cluster-classifier"), ("rnnmt-forecaster", "cluster-forecaster")):
        champion = _mlflow(cluster, "registered-models/alias", name=model, alias="champion")
        assert champion["model_version"]["run_id"] == runs_by_name[run]


def test_an_in_process_ray_runs_beside_another_ray(cluster, toy_pairs_data, tmp_path):
    """The default (no ray.address) starts a Ray of its own and trains, while the cluster's head runs."""
    done = _job(
        cluster,
        "jobs.train_translator",
        f"data_dir={toy_pairs_data}",
        f"output_dir={tmp_path / 'out'}",
        f"storage_path={tmp_path / 'ray'}",
        "model.hidden_size=16",
        "train.epochs=1",
        "train.num_workers=1",
        "train.cpus_per_worker=1",
        "ray.num_cpus=2",
        "mlflow.enabled=false",
    )
    log = done.stdout + done.stderr
    assert "Started a local Ray instance" in log
    assert "multiple active Ray instances" not in log, log[-4000:]
    assert (tmp_path / "out" / "best" / "translator.pt").is_file()


def _train_run(cluster: LocalCluster, name: str) -> dict | None:
    """Ray Train's state of the run called ``name`` (its attempts and their workers' nodes)."""
    runs = get_json(f"{cluster.dashboard}/api/train/v2/runs/v1")["train_runs"]
    return next((r for r in runs if r["name"] == name), None)


def _epochs_logged(cluster: LocalCluster, run_name: str) -> list[int]:
    """The epochs (steps of valid_bleu) the MLflow run ``run_name`` holds, through the server."""
    try:
        experiment = _mlflow(cluster, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    except urllib.error.HTTPError as error:
        if error.code == 404:  # not created yet
            return []
        raise
    found = get_json(
        f"{cluster.tracking_uri}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "filter": f"attributes.run_name = '{run_name}'"},
    ).get("runs", [])
    if not found:
        return []
    run_id = found[0]["info"]["run_id"]
    return sorted(
        m["step"]
        for m in _mlflow(cluster, "metrics/get-history", run_id=run_id, metric_key="valid_bleu").get("metrics", [])
    )


def _train_until_epoch_1(
    cluster: LocalCluster, data_dir: Path, tmp_path: Path, name: str, *settings: str
) -> subprocess.Popen:
    """A small translator training on the cluster (run ``name``, 3 epochs, ``settings`` on top),
    returned once MLflow holds its epoch 1."""
    command = [
        sys.executable,
        "-m",
        "jobs.train_translator",
        f"data_dir={data_dir}",
        f"output_dir={tmp_path / 'out'}",
        f"storage_path={tmp_path / 'ray'}",
        f"run_name={name}",
        "model.embedding_size=32",
        "model.hidden_size=32",
        "train.batch_tokens=200",
        "train.epochs=3",
        "train.cpus_per_worker=1",
        "train.patience=0",
        "valid.max_sentences=50",
        "valid.test_split=",
        "valid.heatmaps=0",
        "mlflow.registry_name=",
        f"mlflow.experiment={EXPERIMENT}",
        *cluster.overrides(),
        *settings,
    ]
    job = subprocess.Popen(
        command,
        cwd=PROJECT,
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not _epochs_logged(cluster, name):
        if job.poll() is not None or time.monotonic() > deadline:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
            pytest.fail(f"epoch 1 of {name} was not logged:\n{job.communicate()[0][-3000:]}")
        time.sleep(0.5)
    return job


def test_a_node_lost_mid_training_restarts_the_run_on_the_others(cluster, sample_pairs_data, tmp_path):
    """The raylet of a node holding one of the translator's 2 workers is killed after epoch 1: with
    max_failures=1 Ray Train restarts the whole worker group (fixed size) on the nodes left, from
    its latest checkpoint, and the run finishes with each epoch logged once."""
    name = "lost-node"
    job = _train_until_epoch_1(
        cluster, sample_pairs_data, tmp_path, name, "train.num_workers=2", "train.max_failures=1"
    )
    try:
        nodes = cluster.ray_nodes()
        used = {w["node_id"] for w in _train_run(cluster, name)["attempts"][-1]["workers"]}
        (victim,) = [n for n, node_id in nodes.items() if node_id in used and n != "head"][:1]
        os.kill(cluster.raylet_pid(victim), signal.SIGKILL)
        out, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    try:
        assert job.returncode == 0, out[-4000:]
        # one restart, from the last checkpoint persisted before Ray noticed the node gone (epoch 1 or 2)
        assert out.count("resumed from the checkpoint after epoch") == 1, out[-4000:]
        assert _epochs_logged(cluster, name) == [1, 2, 3]
        run = _train_run(cluster, name)
        assert run["status"] == "FINISHED" and len(run["attempts"]) == 2
        last = {w["node_id"] for w in run["attempts"][-1]["workers"]}
        assert len(last) == 2 and nodes[victim] not in last  # both workers again, on the nodes left
        assert (tmp_path / "out/best/translator.pt").is_file()
    finally:
        cluster.restart_ray_node(victim)


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_spark_worker_lost_mid_preprocessing_changes_no_byte(cluster, tmp_path):
    """Spark reruns the tasks of a worker killed (with its executor) in the middle of preprocessing
    the bundled Tatoeba corpus; the output equals an undisturbed run's, byte for byte (the
    manifest's creation time and duration aside)."""
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "jobs.preprocess",
        f"output_dir={out}",
        "overwrite=true",
        "mlflow.enabled=false",
        f"spark.master={cluster.spark_master}",
    ]
    _job(cluster, *command[2:])
    undisturbed = _files(out)
    shutil.move(out, tmp_path / "undisturbed")

    job = subprocess.Popen(
        command,
        cwd=PROJECT,
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    victim = cluster.service("spark-worker2")
    try:
        worker = f"http://127.0.0.1:{victim.ports['ui']}/json/"
        deadline = time.monotonic() + 300
        while not get_json(worker).get("executors"):  # the job's executor on that worker has started
            assert job.poll() is None, job.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no executor on spark-worker2 within 300 s"
            time.sleep(0.5)
        time.sleep(5)  # into the work
        # the fault lands mid-job: the application still runs, with an executor on the victim
        assert get_json(f"http://127.0.0.1:{cluster.spark_ui_port}/json/")["activeapps"], "finished before the fault"
        assert get_json(worker).get("executors"), "the executor on spark-worker2 finished before the fault"
        cluster.stop_service("spark-worker2", grace=0)
        out_text, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    try:
        assert job.returncode == 0, out_text[-4000:]
        disturbed = _files(out)
        manifests = [json.loads(files.pop("manifest.json")) for files in (undisturbed, disturbed)]
        for manifest in manifests:
            del manifest["created_at"], manifest["seconds"]
        assert manifests[0] == manifests[1]
        assert disturbed.keys() == undisturbed.keys()
        assert [name for name in disturbed if disturbed[name] != undisturbed[name]] == []
    finally:
        cluster.restart_spark_worker(2)


def test_the_tracking_server_away_for_a_while_loses_and_repeats_nothing(cluster, sample_pairs_data, tmp_path):
    """The MLflow server stopped after epoch 1 and started again seconds later (on the same store):
    the workers' logging waits through MLflow's retries, training goes on, and the run holds
    every epoch and every progress step once."""
    name = "server-away"
    job = _train_until_epoch_1(
        cluster, sample_pairs_data, tmp_path, name, "train.num_workers=1", "train.report_seconds=1"
    )
    try:
        cluster.stop_service("mlflow")
        time.sleep(5)
        assert job.poll() is None, "the job died while the server was away"
        cluster.start_mlflow()
        out, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, out[-4000:]
    assert _epochs_logged(cluster, name) == [1, 2, 3]
    experiment = _mlflow(cluster, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    (run,) = get_json(
        f"{cluster.tracking_uri}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "filter": f"attributes.run_name = '{name}'"},
    )["runs"]
    assert run["info"]["status"] == "FINISHED"
    steps = [
        m["step"]
        for m in _mlflow(cluster, "metrics/get-history", run_id=run["info"]["run_id"], metric_key="train_loss")[
            "metrics"
        ]
    ]
    assert len(steps) > 3 and sorted(steps) == sorted(set(steps))  # progress went on being logged, each step once
