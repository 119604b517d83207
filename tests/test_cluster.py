"""Cluster use: start a Ray head with ``ray start --head``, submit the pipeline with
``ray job submit --working-dir``, wait for SUCCEEDED, check the MLflow runs it made, stop the head."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import mlflow
import psutil
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from conftest import PROJECT, free_port, wait_for_server

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


@pytest.fixture
def head():
    """A Ray head of 2 CPUs on 127.0.0.1 with its own ports and temp dir; yields the dashboard URL.
    Stopped by its own process and temp dir, not `ray stop`, which would also stop the test's Ray."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths are length-limited
    dashboard = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={free_port()}",
                                "--num-cpus=2", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                                f"--dashboard-port={dashboard}", f"--temp-dir={temp}", "--disable-usage-stats"],
                               env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_server(f"{url}/api/version", process)
        yield url, env
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        for leftover in psutil.process_iter(["cmdline"]):
            if any(temp in arg for arg in leftover.info["cmdline"] or ()):
                leftover.kill()
        shutil.rmtree(temp, ignore_errors=True)


def test_pipeline_job_submitted_to_a_local_head(head, tmp_path):
    url, env = head
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job_id = f"rnnmt-test-{uuid.uuid4().hex[:8]}"
    command = [str(BIN / "ray"), "job", "submit", "--address", url, "--submission-id", job_id, "--working-dir", ".",
               "--", "python", "-m", "jobs.pipeline", "tests/data/pipeline-toy.yaml", f"work_dir={tmp_path / 'work'}",
               f"mlflow.tracking_uri={uri}", f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
               "mlflow.experiment=test-cluster"]
    for _ in range(30):  # the head's dashboard can answer before its job agent is up
        submit = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900)
        if "No available agent to submit job" not in submit.stderr + submit.stdout:
            break
        time.sleep(2)
    log = submit.stdout[-4000:] + submit.stderr[-4000:]
    assert submit.returncode == 0, log
    assert JobSubmissionClient(url).get_job_status(job_id) == JobStatus.SUCCEEDED
    assert "mlflow_run_id" in submit.stdout, log  # the pipeline's JSON line reached the job's log
    assert "Started a local Ray instance" not in submit.stdout, log  # it ran on the head, not beside it

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("test-cluster").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.info.run_name == "pipeline"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 6
    assert all(r.info.status == "FINISHED" for r in children)
    assert (tmp_path / "work/translator/best/translator.pt").is_file()
