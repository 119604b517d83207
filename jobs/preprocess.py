"""Preprocess raw corpora into vocabularies and Parquet shards.

    python -m jobs.preprocess [CONFIG.yaml] [key=value ...]

e.g. ``python -m jobs.preprocess conf/preprocess/tatoeba.yaml filter.max_len=40 output_dir=out/tatoeba``.
Prints the resolved config, a summary, and last one line of JSON with the output's figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.common import cli
from jobs.common.checkpoint import Bundle
from jobs.common.config import load_config, to_dict, to_yaml
from jobs.common.job_output import show_config
from jobs.common.spark_session import check_spark_settings, spark_session
from jobs.common.tracking import mlflow_run, tracking_uri
from pipelines.contract.errors import OutputExistsError, check_integer
from pipelines.contract.manifest import MANIFEST_NAME
from pipelines.contract.vocab import GivenVocab, given_from_output
from pipelines.spark.preprocess import check_settings, preprocess
from pipelines.spark.readers import resolve_inputs
from pipelines.spark.series import check_series_settings, preprocess_series


def summary(manifest: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """The figures a user or script wants from a preprocessing run."""
    counts = manifest["counts"]
    if manifest["kind"] == "series":
        return {
            "output_dir": str(output_dir),
            "read": counts["read"],
            "kept": counts["kept"],
            "dropped": {k: v for k, v in counts["dropped"].items() if v},
            "notes": counts["notes"],
            "series": manifest["series"]["count"],
            "series_kept": manifest["series"]["kept"],
            "splits": {k: v["examples"] for k, v in manifest["splits"].items()},
            "seconds": manifest["seconds"],
        }
    return {
        "output_dir": str(output_dir),
        "read": counts["read"],
        "kept": counts["kept"],
        "dropped": {k: v for k, v in counts["dropped"].items() if v},
        "splits": {k: v["examples"] for k, v in manifest["splits"].items()},
        "vocab": {k: v["size"] for k, v in manifest["vocab"].items()},
        "coverage": {k: v["coverage"] for k, v in manifest["vocab"].items()},
        "seconds": manifest["seconds"],
    }


def given_vocabs(source: str, mlflow: dict[str, Any]) -> dict[str, GivenVocab]:
    """The vocabularies ``vocab.from`` names: a preprocessing output's, or a trained translator's
    (a ``translator.pt``, its directory, or an MLflow URI)."""
    path = Path(source)
    if (path / MANIFEST_NAME).is_file():
        return given_from_output(path)
    return Bundle.load(source, tracking_uri=tracking_uri(mlflow)).given_vocabs(source)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the manifest."""
    cfg = load_config("preprocess", argv)
    show_config(cfg, "preprocess")
    config = to_dict(cfg)
    output_dir = Path(config["output_dir"]).resolve()
    series = config["data"]["kind"] == "series"
    # before MLflow and Spark start: a bad value costs no run
    check_integer("seed", config["seed"], 0)
    check_spark_settings(config["spark"])
    if series:
        check_series_settings(config)
    else:
        check_settings(config)
    if output_dir.exists() and not config["overwrite"]:
        raise OutputExistsError(f"{output_dir} exists; pass overwrite=true to replace it")
    resolve_inputs(config["data"]["inputs"], config["data"]["kind"])
    given = given_vocabs(config["vocab"]["from"], config["mlflow"]) if config["vocab"]["from"] else None
    started = time.perf_counter()
    with mlflow_run(config["mlflow"], config["run_name"], params=config) as mlflow:
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        with spark_session(config["spark"], app_name="rnnmt-preprocess", progress=config["progress"]) as spark:
            manifest = (
                preprocess_series(spark, config, output_dir)
                if series
                else preprocess(spark, config, output_dir, given=given)
            )
        counts = manifest["counts"]
        metrics = {"read": counts["read"], "kept": counts["kept"], "seconds": time.perf_counter() - started}
        metrics.update({f"dropped.{k}": v for k, v in counts["dropped"].items()})
        metrics.update({f"{split}.examples": v["examples"] for split, v in manifest["splits"].items()})
        if series:
            metrics.update({"series": manifest["series"]["count"], "series.kept": manifest["series"]["kept"]})
            metrics.update({f"notes.{k}": v for k, v in counts["notes"].items()})
        for side, entry in manifest.get("vocab", {}).items():
            metrics[f"vocab.{side}.size"] = entry["size"]
            if entry["coverage"] is not None:
                metrics[f"vocab.{side}.coverage"] = entry["coverage"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(output_dir / MANIFEST_NAME))
        if not series:
            mlflow.log_artifacts(str(output_dir / "vocab"), "vocab")
        mlflow.set_tag("output_dir", str(output_dir))
    print(json.dumps(summary(manifest, output_dir)))
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
