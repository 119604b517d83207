"""Failures in the middle of training: a Ray Train worker killed mid-epoch (the run restarts from
its last checkpoint and logs every epoch once), and Ctrl-C on a training job's or the pipeline's
driver (MLflow runs end KILLED, no output is published). The job runs in a subprocess, as a user would run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import psutil
import pytest

from conftest import DATA, PROJECT

pytestmark = pytest.mark.slow


def _launch(tmp_path, module, *args):
    """``python -m module args`` in its own process group, tracking to an MLflow store in tmp_path."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable,
        "-m",
        module,
        *args,
        f"mlflow.tracking_uri={uri}",
        "mlflow.experiment=test-reliability",
        f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
    ]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    job = subprocess.Popen(
        command,
        cwd=PROJECT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return job, mlflow.MlflowClient(uri)


def _start(tmp_path, data_dir, *extra):
    return _launch(
        tmp_path,
        "jobs.train_translator",
        f"data_dir={data_dir}",
        f"output_dir={tmp_path / 'out'}",
        f"storage_path={tmp_path / 'ray'}",
        "model.embedding_size=32",
        "model.hidden_size=32",
        "train.batch_tokens=200",
        "train.cpus_per_worker=1",
        "ray.num_cpus=2",
        "valid.max_sentences=50",
        "valid.test_split=",
        "valid.heatmaps=0",
        "train.patience=0",
        *extra,
    )


def _runs(client) -> dict:
    experiment = client.get_experiment_by_name("test-reliability")
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])} if experiment else {}


def _wait_for_epoch(job, client, epoch: int, run_name: str = "translator", timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        run = _runs(client).get(run_name)
        if run and any(m.step >= epoch for m in client.get_metric_history(run.info.run_id, "valid_bleu")):
            return
        assert job.poll() is None, job.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"epoch {epoch} was not logged within {timeout} s"
        time.sleep(0.2)


def _train_workers(job) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(job.pid).children(recursive=True)
        if any("RayTrainWorker" in part for part in _cmdline(p))
    ]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_killed_worker_restarts_from_its_checkpoint(tmp_path, sample_pairs_data):
    job, client = _start(
        tmp_path, sample_pairs_data, "train.epochs=3", "train.max_failures=1", "train.report_seconds=0"
    )
    try:
        _wait_for_epoch(job, client, 0)
        (worker,) = _train_workers(job)
        time.sleep(0.5)  # into epoch 1
        worker.kill()
        # Ray Train starts a new worker process, which goes on from the checkpoint of epoch 1
        deadline = time.monotonic() + 300
        while not [w for w in _train_workers(job) if w.pid != worker.pid]:
            assert job.poll() is None, "the job ended without starting a new worker"
            assert time.monotonic() < deadline, "no new worker within 300 s"
            time.sleep(0.2)
        out, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, out[-3000:]
    assert out.count("resumed from the checkpoint after epoch 1") == 1, out[-3000:]
    run = _runs(client)["translator"]
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "valid_bleu")]
    assert steps == [1, 2, 3]  # each epoch once: epoch 1 was not trained or logged again
    progress = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert len(progress) > 3 and progress == sorted(set(progress))  # the steps redone after the restart: once
    assert (tmp_path / "out/best/translator.pt").is_file()


def test_ctrl_c_ends_the_run_killed_and_publishes_nothing(tmp_path, sample_pairs_data):
    job, client = _start(tmp_path, sample_pairs_data, "train.epochs=20")
    try:
        _wait_for_epoch(job, client, 0)
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        out, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0
    assert _runs(client)["translator"].info.status == "KILLED", out[-3000:]
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no half-written output either


def test_ctrl_c_ends_the_pipeline_and_its_running_stage_killed(tmp_path):
    job, client = _launch(
        tmp_path,
        "jobs.pipeline",
        str(DATA / "pipeline-toy.yaml"),
        f"work_dir={tmp_path / 'work'}",
        "stages.lm.enabled=false",
        "stages.word2vec.enabled=false",  # corpus, then the translator
        "stages.translator.overrides.train.epochs=100",
    )
    try:
        _wait_for_epoch(job, client, 0, "pipeline-translator")
        os.killpg(job.pid, signal.SIGINT)
        out, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    statuses = {name: run.info.status for name, run in _runs(client).items()}
    assert statuses == {"pipeline": "KILLED", "pipeline-corpus": "FINISHED", "pipeline-translator": "KILLED"}, (
        f"{statuses}\n{out[-3000:]}"
    )
    assert not (tmp_path / "work/translator").exists() and not (tmp_path / "work/stages/translator.json").exists()
    assert (tmp_path / "work/stages/corpus.json").is_file()  # finished stages stay reusable


def test_a_corrupt_latest_checkpoint_resumes_from_the_one_before(tmp_path, toy_pairs_data):
    """The latest checkpoint's state.pt cut short (a write that never finished): the resumed run
    names the file and goes on from the checkpoint before it."""
    job, client = _start(tmp_path, toy_pairs_data, "train.epochs=2")
    out, _ = job.communicate(timeout=600)
    assert job.returncode == 0, out[-3000:]
    checkpoints = sorted(p for p in (tmp_path / "ray" / "translator").glob("checkpoint_*") if p.is_dir())
    assert len(checkpoints) == 2  # after epochs 0 and 1
    state = checkpoints[-1] / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])

    job, _ = _start(tmp_path, toy_pairs_data, "train.epochs=3", "overwrite=true")
    out, _ = job.communicate(timeout=600)
    assert job.returncode == 0, out[-3000:]
    assert f"{state} is truncated or corrupt" in out, out[-3000:]
    assert out.count("resumed from the checkpoint after epoch 1") == 1, out[-3000:]
    experiment = client.get_experiment_by_name("test-reliability").experiment_id
    first, rerun = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    assert [m.step for m in client.get_metric_history(rerun.info.run_id, "valid_bleu")] == [2, 3]
    assert rerun.info.status == "FINISHED"
