"""The Spark session a job uses: local by default, master and settings from the config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pyspark.sql import SparkSession

from jobs.common.config import flatten
from jobs.common.progress import shown
from pipelines.contract.errors import UserError, check_integer

MIN_JAVA = 17

# PySpark 4.3 warns on every pandas/Arrow conversion under pandas 3; nothing here is affected.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")


class JavaNotFoundError(UserError, RuntimeError):
    """PySpark cannot start without a suitable Java."""


def check_java(env: Mapping[str, str] | None = None) -> str:
    """Return the ``java`` executable Spark will use, or raise with what to install."""
    env = os.environ if env is None else env
    java_home = env.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java", path=env.get("PATH"))
    if not java or not os.path.isfile(java):
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no `java` on PATH"
        raise JavaNotFoundError(
            f"PySpark needs Java {MIN_JAVA} or newer and found none ({where}). "
            f"Install a JDK {MIN_JAVA}+ (e.g. `apt install openjdk-17-jre-headless`) "
            "or set JAVA_HOME to one."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    major = int(match.group(2)) if major == 1 and match and match.group(2) else major
    if major < MIN_JAVA:
        raise JavaNotFoundError(f"PySpark needs Java {MIN_JAVA} or newer; {java} is version {major or 'unknown'}")
    return java


def check_spark_settings(cfg: Mapping[str, Any]) -> None:
    """Refuse ``spark.*`` values that cannot work (a ConfigError naming the key); jobs call it
    before their MLflow run starts, and :func:`spark_session` before Spark does."""
    check_integer("spark.partitions", cfg["partitions"], 0, " (0 = Spark's default)")


@contextmanager
def spark_session(cfg: Mapping[str, Any], app_name: str = "rnnmt", progress: bool = False) -> Iterator[SparkSession]:
    """A SparkSession for the ``spark`` section of a job config, stopped on exit; with ``progress``
    Spark draws its stages' progress bars on a terminal. A session that is already active (a
    notebook, a test suite) is used as it is and left running."""
    check_spark_settings(cfg)
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    check_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    local = str(cfg["master"]).startswith("local")
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.master(cfg["master"])
        .appName(app_name)
        .config("spark.driver.memory", cfg["driver_memory"])
        .config("spark.ui.enabled", str(bool(cfg["ui"])).lower())
        .config("spark.ui.showConsoleProgress", str(shown(progress)).lower())
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Cached rows are mostly distinct texts, which the columnar compression cannot shrink:
        # trying costs a hash of every string (a quarter of building the cache, 2026-12-03).
        .config("spark.sql.inMemoryColumnarStorage.compressed", "false")
    )
    if local:
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    if int(cfg["partitions"]) > 0:
        builder = builder.config("spark.sql.shuffle.partitions", str(cfg["partitions"]))
    # `spark.conf.spark.executor.cores=2` on the command line arrives nested: flatten it back.
    for key, value in flatten(dict(cfg.get("conf") or {})).items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    if int(cfg["partitions"]) <= 0:
        # Spark's default of 200 shuffle partitions costs seconds of task overhead on small data.
        spark.conf.set("spark.sql.shuffle.partitions", str(2 * spark.sparkContext.defaultParallelism))
    spark.sparkContext.setLogLevel(cfg.get("log_level", "WARN"))
    try:
        yield spark
    finally:
        spark.stop()
