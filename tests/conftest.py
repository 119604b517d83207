"""Shared fixtures: one local SparkSession and one in-process Ray for the whole session, and paths
to the toy corpora. Ray is started once per process: restarting it while its background threads
live can crash the interpreter at exit (ray-project/ray#31145)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
PROJECT = Path(__file__).resolve().parent.parent

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession, configured as the jobs configure theirs."""
    from jobs.spark_session import spark_session

    settings = {"master": "local[2]", "partitions": 4, "driver_memory": "2g", "ui": False,
                "log_level": "ERROR", "conf": {}}
    with spark_session(settings, app_name="rnnmt-tests") as session:
        yield session


@pytest.fixture(scope="session")
def ray_local():
    """An in-process Ray with 2 CPUs, started as the jobs start theirs."""
    import ray

    from jobs.ray_cluster import connect

    connect({"address": None, "num_cpus": 2})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def toy_pairs() -> Path:
    return DATA / "toy-en-fr.tsv"


@pytest.fixture(scope="session")
def toy_text() -> Path:
    return DATA / "toy-wiki-en.txt"
