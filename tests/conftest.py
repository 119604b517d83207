"""Shared fixtures: one local SparkSession and one in-process Ray for the whole session, and paths
to the toy corpora. Ray is started once per process: restarting it while its background threads
live can crash the interpreter at exit (ray-project/ray#31145).

The C loop is built into a temporary cache, not the user's ``~/.cache/rnnmt``. Tests marked
``c_loop`` are skipped where it cannot be built, unless ``RNNMT_REQUIRE_C_LOOP=1`` (CI sets it):
then they fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.local_cluster import free_port

# what test modules import from here (free_port is the cluster helper's, the tests' one)
__all__ = ["DATA", "PROJECT", "free_port", "get_json", "wait_for_server"]

DATA = Path(__file__).parent / "data"
PROJECT = Path(__file__).resolve().parent.parent

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Set before Ray or any job subprocess starts, so every worker builds into (and reuses) this cache.
_C_CACHE = tempfile.mkdtemp(prefix="rnnmt-test-cache-")
os.environ["RNNMT_CACHE"] = _C_CACHE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_C_CACHE, ignore_errors=True)


def pytest_runtest_setup(item):
    if item.get_closest_marker("c_loop") is None:
        return
    from rnn_models import word2vec_native

    if not word2vec_native.available():
        reason = "the C loop cannot be built here (no C compiler?)"
        if os.environ.get("RNNMT_REQUIRE_C_LOOP") == "1":
            pytest.fail(f"{reason}, and RNNMT_REQUIRE_C_LOOP=1 requires it")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession, configured as the jobs configure theirs."""
    from jobs.common.spark_session import spark_session

    settings = {
        "master": "local[2]",
        "partitions": 4,
        "driver_memory": "2g",
        "ui": False,
        "log_level": "ERROR",
        "conf": {},
    }
    with spark_session(settings, app_name="rnnmt-tests") as session:
        yield session


@pytest.fixture(scope="session")
def ray_local():
    """An in-process Ray with 2 CPUs, started as the jobs start theirs."""
    import ray

    from jobs.common.ray_cluster import connect

    connect({"address": None, "num_cpus": 2})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def toy_pairs() -> Path:
    return DATA / "toy-en-fr.tsv"


@pytest.fixture(scope="session")
def toy_text() -> Path:
    return DATA / "toy-wiki-en.txt"


@pytest.fixture(scope="session")
def toy_pairs_data(spark, tmp_path_factory, toy_pairs) -> Path:
    """The toy pairs preprocessed (10% valid, 10% test), shared by the translator tests."""
    from test_preprocess import config as preprocess_config

    from pipelines.spark.preprocess import preprocess

    out = tmp_path_factory.mktemp("toy-pairs") / "data"
    cfg = preprocess_config([{"path": str(toy_pairs), "format": "tsv"}], "split.valid=0.1", "split.test=0.1")
    preprocess(spark, cfg, out, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def sample_pairs_data(spark, tmp_path_factory) -> Path:
    """The bundled Tatoeba sample (3,774 pairs) preprocessed: epochs of a few seconds, long enough
    to be interrupted."""
    from test_preprocess import config as preprocess_config

    from pipelines.spark.preprocess import preprocess

    out = tmp_path_factory.mktemp("sample-pairs") / "data"
    sample = PROJECT / "data/sample/tatoeba-en-fr.tsv.gz"
    preprocess(spark, preprocess_config([{"path": str(sample), "format": "tsv"}]), out, log=lambda m: None)
    return out


def get_json(url: str, body: dict | None = None) -> dict:
    """GET ``url`` (POST ``body`` as JSON if given) and decode the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 120) -> dict:
    """Poll ``url`` until it answers (its JSON), failing if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get_json(url)
        except OSError:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
            time.sleep(1)
