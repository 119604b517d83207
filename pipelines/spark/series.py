"""The preprocessing pipeline of time series (``data.kind: series``): CSV rows -> one regular series
per id -> hold-out, scaling and windows -> sharded Parquet, ``series.parquet`` and a manifest.

Spark groups the rows by series and each group goes through the same pure functions
(``pipelines.series``) on a Python worker, so a thousand series are a thousand groups, and a
series' output depends only on its rows, not on the partitioning. See docs/data-format.md.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.contract.atomic import atomic_directory
from pipelines.contract.errors import ConfigError, InputError, check_integer
from pipelines.contract.manifest import FORMAT_VERSION, write_manifest
from pipelines.series.regular import (
    BAD_TIME,
    BAD_VALUE,
    DUPLICATE_TIME,
    IRREGULAR_TIME,
    MISSING_VALUE,
    TOO_SHORT,
    regularize,
    series_name,
)
from pipelines.series.windows import SeriesSettings, series_rows
from pipelines.spark.output import write_shards
from pipelines.spark.readers import SPLITS, InputSpec, resolve_inputs

MISSING_ID = "missing_id"  # a row whose id column is empty
REASONS = (MISSING_ID, BAD_TIME, DUPLICATE_TIME, IRREGULAR_TIME, MISSING_VALUE, TOO_SHORT)
NOTES = ("gaps", "interpolated", "off_grid", BAD_VALUE)
SERIES_FILE = "series.parquet"

ROW_SCHEMA = (
    "series string, split string, origin int, time string, inputs array<float>, targets array<float>, "
    "calendar array<float>, before array<double>, future array<double>, centre array<double>, "
    "spread array<double>, mase_scale array<double>, info string"
)


def check_series_settings(cfg: Mapping[str, Any]) -> SeriesSettings:
    """The series settings of a config, refused (ConfigError naming the key) when unusable."""
    s = cfg["series"]
    if not s["time_column"] or not isinstance(s["time_column"], str):
        raise ConfigError(f"series.time_column must name the time column, got {s['time_column']!r}")
    values = s["value_columns"]
    if (
        not isinstance(values, (list, tuple))
        or not values
        or len(set(values)) != len(values)
        or not all(isinstance(v, str) and v for v in values)
    ):
        raise ConfigError(f"series.value_columns must list one or more distinct column names, got {values!r}")
    if s["time_column"] in values or (s["id_column"] and s["id_column"] in (s["time_column"], *values)):
        raise ConfigError("series.time_column, series.value_columns and series.id_column must name different columns")
    check_integer("output.shards", cfg["output"]["shards"], 1)
    return SeriesSettings.from_config(s)


def _header(path: str) -> list[str]:
    """The column names of a CSV file (gzip or plain)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            first = f.readline()
        return next(csv.reader(io.StringIO(first.decode("utf-8-sig"))), [])
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise InputError(f"{path}: cannot read its CSV header ({err})") from None


def read_csv_rows(spark: SparkSession, specs: Sequence[InputSpec], series: Mapping[str, Any]) -> DataFrame:
    """Every CSV row as (series, time, v0.., file_no, row_no): file_no and row_no give the input order."""
    needed = [series["time_column"], *series["value_columns"]] + ([series["id_column"]] if series["id_column"] else [])
    files = [path for spec in specs for path in spec.files]
    if not series["id_column"]:
        names: dict[str, str] = {}
        for path in files:
            other = names.setdefault(series_name(path), path)
            if other != path:
                raise InputError(
                    f"{other} and {path} would both be series {series_name(path)!r}: "
                    "rename one, or give series.id_column"
                )
    frames = []
    for number, path in enumerate(files):
        header = _header(path)
        missing = [c for c in needed if c not in header]
        if missing:
            raise InputError(
                f"{path}: no column(s) {missing} in its header (it has {header}); "
                "set series.time_column / value_columns / id_column"
            )
        rows = spark.read.option("header", True).option("inferSchema", False).csv(path)
        ident = (
            F.coalesce(F.trim(F.col(f"`{series['id_column']}`")), F.lit(""))
            if series["id_column"]
            else F.lit(series_name(path))
        )
        frames.append(
            rows.select(
                ident.alias("series"),
                F.col(f"`{series['time_column']}`").alias("time"),
                *(F.col(f"`{c}`").alias(f"v{n}") for n, c in enumerate(series["value_columns"])),
                F.lit(number).alias("file_no"),
                F.monotonically_increasing_id().alias("row_no"),
            )
        )
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


def series_groups(rows: DataFrame, settings: SeriesSettings, features: int) -> DataFrame:
    """Each series' output rows (schema ``ROW_SCHEMA``) and one ``split = series`` row whose
    ``info`` (JSON) holds its counts, time span and scaling."""
    value_columns = [f"v{n}" for n in range(features)]

    def one_series(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.sort_values(["file_no", "row_no"], kind="stable")
        name = str(frame["series"].iloc[0])
        info: dict[str, Any] = {"series": name, "read": len(frame), "dropped": {}, "kept": False}
        out: list[dict[str, Any]] = []
        if name == "":
            info["dropped"][MISSING_ID] = len(frame)
        else:
            regular = regularize(frame["time"], frame[value_columns], settings.missing)
            counts = regular.counts
            info["dropped"] = {
                r: counts[r] for r in (BAD_TIME, DUPLICATE_TIME, IRREGULAR_TIME, MISSING_VALUE) if counts[r]
            }
            info.update(
                {k: counts[k] for k in NOTES},
                points=len(regular.values),
                step=str(regular.step) if regular.step else None,
                first=regular.times[0].isoformat() if len(regular.times) else None,
                last=regular.times[-1].isoformat() if len(regular.times) else None,
            )
            out = series_rows(regular, settings)
            if out:
                valid, test = (r for r in out if r["split"] != "train")
                info.update(
                    kept=True,
                    centre=test["centre"],
                    spread=test["spread"],
                    splits={"train": valid["origin"], "valid": settings.horizon, "test": settings.horizon},
                    step_months=regular.step.months if regular.step else 0,
                    step_seconds=regular.step.seconds if regular.step else 0,
                )
            else:
                used = len(frame) - sum(info["dropped"].values())
                info["dropped"][TOO_SHORT] = used
                info["too_short"] = f"{len(regular.values)} points, {settings.min_points()} needed"
        empty = {
            "origin": None,
            "time": None,
            "inputs": None,
            "targets": None,
            "calendar": None,
            "before": None,
            "future": None,
            "centre": None,
            "spread": None,
            "mase_scale": None,
        }
        rows = [{"series": name, **r, "info": None} for r in out]
        rows.append({"series": name, "split": "series", **empty, "info": json.dumps(info)})
        return pd.DataFrame(rows, columns=["series", "split", *empty, "info"])

    return rows.groupBy("series").applyInPandas(one_series, ROW_SCHEMA)


def preprocess_series(
    spark: SparkSession, cfg: Mapping[str, Any], output_dir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the series pipeline the resolved config ``cfg`` describes and publish it at
    ``output_dir`` (all or nothing); returns the manifest."""
    started = time.perf_counter()
    settings = check_series_settings(cfg)
    series_cfg, shards = cfg["series"], int(cfg["output"]["shards"])
    specs = resolve_inputs(cfg["data"]["inputs"], "series")
    features = len(series_cfg["value_columns"])
    with atomic_directory(Path(output_dir), overwrite=bool(cfg["overwrite"])) as tmp:
        log(f"reading {sum(len(s.files) for s in specs)} file(s)")
        rows = read_csv_rows(spark, specs, series_cfg)
        if int(cfg["spark"]["partitions"]) > 0:
            rows = rows.repartition(int(cfg["spark"]["partitions"]))
        out = series_groups(rows, settings, features).persist()
        try:
            infos = sorted(
                (json.loads(r["info"]) for r in out.where(F.col("split") == "series").select("info").collect()),
                key=lambda i: i["series"],
            )
            kept_series = [i for i in infos if i["kept"]]
            log(
                f"{len(infos)} series, {len(kept_series)} long enough for window {settings.window} "
                f"and horizon {settings.horizon}"
            )
            data = (
                out.where(F.col("split") != "series")
                .drop("info")
                .withColumn("shard", F.pmod(F.xxhash64(F.lit(int(cfg["seed"])), "series"), F.lit(shards)).cast("int"))
            )
            files = write_shards(data, tmp, shards, ["series", "origin"], lambda table: table)
        finally:
            out.unpersist()
        splits = {}
        for split in SPLITS:
            examples = sum(pq.read_metadata(tmp / name).num_rows for name in files[split])
            splits[split] = {"examples": examples, "files": files[split]}
        _write_series_table(tmp / SERIES_FILE, infos)
        read = sum(i["read"] for i in infos)
        dropped = {r: sum(i["dropped"].get(r, 0) for i in infos) for r in REASONS}
        notes = {k: sum(i.get(k, 0) for i in kept_series) for k in NOTES}
        steps: dict[str, int] = {}
        for i in kept_series:
            steps[i["step"]] = steps.get(i["step"], 0) + 1
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": "series",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": [entry for spec in specs for entry in spec.describe()],
            "counts": {"read": read, "kept": read - sum(dropped.values()), "dropped": dropped, "notes": notes},
            "series": {
                "count": len(infos),
                "kept": len(kept_series),
                "file": SERIES_FILE,
                "time_column": series_cfg["time_column"],
                "value_columns": list(series_cfg["value_columns"]),
                "id_column": series_cfg["id_column"],
                "steps": steps,
                "features": features,
                "calendar_features": settings.calendar_size,
                "settings": {
                    "window": settings.window,
                    "horizon": settings.horizon,
                    "stride": settings.stride,
                    "season": settings.season,
                    "calendar": settings.calendar,
                    "missing": settings.missing,
                    **settings.scaling.to_dict(),
                },
            },
            "splits": splits,
            "shards": shards,
            "config": dict(cfg),
            "seconds": round(time.perf_counter() - started, 2),
        }
        write_manifest(tmp, manifest)
    log(
        f"wrote {len(kept_series)} series to {output_dir}: train {splits['train']['examples']} windows, "
        f"valid {splits['valid']['examples']} and test {splits['test']['examples']} forecasts "
        f"of {settings.horizon} steps"
    )
    return manifest


def _write_series_table(path: Path, infos: Sequence[dict[str, Any]]) -> None:
    """``series.parquet``: one row per series with its counts, span, time step and scaling."""

    def column(key: str, default: Any = None) -> list[Any]:
        return [i.get(key, default) for i in infos]

    table = pa.table(
        {
            "series": column("series"),
            "kept": column("kept"),
            "read": column("read"),
            "dropped": [sum(i["dropped"].values()) for i in infos],
            "points": column("points", 0),
            "first": column("first"),
            "last": column("last"),
            "step": column("step"),
            "step_months": column("step_months", 0),
            "step_seconds": column("step_seconds", 0),
            **{k: column(k, 0) for k in NOTES},
            "train_points": [i.get("splits", {}).get("train", 0) for i in infos],
            "centre": pa.array(column("centre"), pa.list_(pa.float64())),
            "spread": pa.array(column("spread"), pa.list_(pa.float64())),
        }
    )
    pq.write_table(table, path)
