"""Train a time-series forecaster data-parallel on Ray Train; keep the best and last models.

    python -m jobs.train_forecaster [CONFIG.yaml] data_dir=DIR output_dir=DIR [key=value ...]

Each worker trains on its share of every epoch's shuffled training windows (``train.batch_size``
windows); DDP averages the gradients (gloo on CPU, NCCL on GPU). Every ``valid.every`` epochs rank
0 forecasts each series' valid tail (``horizon`` steps, predictions fed back), scores it in the
original units (RMSE, MAE, MASE) and reports a checkpoint with the training state and the model of
the best valid RMSE so far; training stops early after ``train.patience`` validations without a
better one, and a rerun with the same ``run_name`` resumes. The driver then publishes
``output_dir/best`` and ``output_dir/last``, forecasts the test tails, writes them to
``output_dir/test_forecast.csv`` and logs to MLflow the metrics and a forecast-vs-actual plot. The
last line printed is a JSON summary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from jobs.common import cli
from jobs.common.driver import Trainer, train
from jobs.common.forecaster_checkpoint import FORECASTER_FILE, ForecasterBundle, forecast_rows
from jobs.common.model_registry import RMSE, TestMetric, arrays_digest
from jobs.common.training_loop import Family, LoopSettings
from pipelines.contract.atomic import write_atomically
from pipelines.contract.errors import ConfigError, ManifestError, check_integer
from pipelines.contract.manifest import load_manifest
from pipelines.contract.series_shards import SeriesRows, read_windows
from pipelines.series.regular import Step, format_time
from pipelines.series.scaling import Scaling
from rnn_models.batching import epoch_batches, worker_batches
from rnn_models.forecaster import Forecaster, ForecasterSettings

PATH_KEYS = ("data_dir", "output_dir")


def settings_of(config: dict[str, Any], manifest: dict[str, Any]) -> ForecasterSettings:
    """The model settings a config describes for the data of ``manifest``."""
    series = manifest["series"]
    return ForecasterSettings.from_dict(
        {**config["model"], "features": series["features"], "calendar": series["calendar_features"]}
    )


def data_identity(manifest: dict[str, Any]) -> str:
    """What a checkpoint must have been trained on to be resumed on this data: its shape and scaling."""
    series = manifest["series"]
    shape = {k: series[k] for k in ("features", "calendar_features", "value_columns", "settings")}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def read_split(config: dict[str, Any], manifest: dict[str, Any], split: str) -> SeriesRows:
    series = manifest["series"]
    return read_windows(
        Path(config["data_dir"]), manifest["splits"][split]["files"], series["features"], series["calendar_features"]
    )


def scores(prefix: str, forecast: np.ndarray, rows: SeriesRows) -> dict[str, float]:
    """RMSE and MAE over every forecast value, and MASE (each series' MAE over its in-sample
    seasonal-naive MAE, averaged over series and features), in the original units."""
    errors = forecast - rows.future
    mae = np.abs(errors).mean(axis=1)  # (N, F)
    with np.errstate(divide="ignore", invalid="ignore"):
        mase = mae / rows.mase_scale
    return {
        f"{prefix}_rmse": float(np.sqrt(np.mean(errors**2))),
        f"{prefix}_mae": float(np.mean(np.abs(errors))),
        f"{prefix}_mase": float(np.nanmean(mase)) if np.isfinite(mase).any() else float("nan"),
    }


class ForecasterFamily(Family):
    """The forecaster in the shared loop: this worker's share of every epoch's shuffled windows, the
    mean squared error of each step's next value (the last ``train.feedback_steps`` from predictions
    fed back), and the valid tails' RMSE in original units (the best model has the lowest)."""

    metric, higher_is_better, unit = "valid_rmse", False, "windows"

    def __init__(self, config: dict[str, Any], rank: int, world: int, device: torch.device):
        self.config, self.rank, self.world, self.device = config, rank, world, device
        self.manifest = load_manifest(Path(config["data_dir"]), "series")
        self.fingerprint = data_identity(self.manifest)
        self.scaling = Scaling.from_config(self.manifest["series"]["settings"])
        self.horizon = self.manifest["series"]["settings"]["horizon"]
        self.train = read_split(config, self.manifest, "train")
        self.valid = read_split(config, self.manifest, "valid") if rank == 0 else None

    def build_model(self) -> Forecaster:
        return Forecaster(settings_of(self.config, self.manifest))

    def batches(self, epoch: int) -> list[np.ndarray]:
        return worker_batches(
            epoch_batches(len(self.train), self.config["train"]["batch_size"], self.config["seed"], epoch),
            self.rank,
            self.world,
        )

    def step(self, batch: np.ndarray, forward: Any) -> tuple[torch.Tensor, float, float]:
        data, device = self.train, self.device
        inputs = torch.as_tensor(data.inputs[batch], device=device)
        targets = torch.as_tensor(data.targets[batch], device=device)
        calendar = torch.as_tensor(data.calendar[batch], device=device) if data.calendar.shape[2] else None
        predicted, _ = forward(inputs, calendar, fed=self.config["train"]["feedback_steps"])
        loss = torch.nn.functional.mse_loss(predicted.float(), targets)
        return loss, float(loss.detach()) * len(batch), len(batch)

    def validate(self, epoch: int) -> dict[str, Any]:
        forecast = forecast_rows(self.model, self.valid, self.horizon, self.scaling, device=self.device)
        return scores("valid", forecast, self.valid)

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"valid RMSE {metrics['valid_rmse']:.4g} MASE {metrics['valid_mase']:.3f}"


def prepare(config: dict[str, Any]) -> None:
    """Check the config and its input before anything starts."""
    t = config["train"]
    LoopSettings.from_config(config)
    check_integer("train.batch_size", t["batch_size"], 1)
    manifest = load_manifest(Path(config["data_dir"]), "series")
    settings_of(config, manifest)
    window = manifest["series"]["settings"]["window"]
    check_integer("train.feedback_steps", t["feedback_steps"], 0)
    if t["feedback_steps"] >= window:
        raise ConfigError(
            f"train.feedback_steps must be below the window ({window} values): the first "
            f"values are read; got {t['feedback_steps']}"
        )
    for split in ("train", "valid"):
        if not manifest["splits"][split]["examples"]:
            raise ManifestError(
                f"{config['data_dir']} has no rows in its {split} split: no series was long enough "
                f"({manifest['counts']['dropped']})"
            )


def forecast_table(
    rows: SeriesRows, forecast: np.ndarray, steps: dict[str, Step], columns: Sequence[str]
) -> pd.DataFrame:
    """The forecasts of ``rows`` next to the held-out values: series, time, step, then
    ``actual_<column>`` and ``forecast_<column>`` for every value column."""
    records = []
    for n, name in enumerate(rows.series):
        times = steps[name].times(pd.Timestamp(rows.time[n]), forecast.shape[1])
        for k, when in enumerate(times):
            record = {"series": name, "time": format_time(when), "step": k + 1}
            for f, column in enumerate(columns):
                record[f"actual_{column}"] = rows.future[n, k, f]
                record[f"forecast_{column}"] = forecast[n, k, f]
            records.append(record)
    return pd.DataFrame(records)


def forecast_figure(table: pd.DataFrame, columns: Sequence[str], most: int = 6) -> Any:
    """Forecast against actual values over the test tail of the first ``most`` series (first value column)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = list(dict.fromkeys(table["series"]))[:most]
    figure, axes = plt.subplots(len(names), 1, figsize=(8, 2.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        part = table[table["series"] == name]
        times = pd.to_datetime(part["time"])
        ax.plot(times, part[f"actual_{columns[0]}"], "o-", label="actual")
        ax.plot(times, part[f"forecast_{columns[0]}"], "s--", label="forecast")
        ax.set_title(f"{name}: test forecast of {columns[0]}")
        ax.legend()
    figure.tight_layout()
    return figure


class ForecasterTrainer(Trainer):
    """The forecaster's part of the job on the driver: a ``forecaster.pt`` bundle that forecasts raw
    series, the test tails' scores, their forecasts as ``test_forecast.csv`` and a plot; champion
    by the lowest test RMSE."""

    job, family, checkpoint_file = "train_forecaster", ForecasterFamily, FORECASTER_FILE
    prepare = staticmethod(prepare)

    def __init__(self, cfg: Any, config: dict[str, Any], mlflow: Any):
        super().__init__(cfg, config, mlflow)
        self.manifest = load_manifest(self.data_dir, "series")
        self.series = self.manifest["series"]
        self.kept = [r for r in pq.read_table(self.data_dir / self.series["file"]).to_pylist() if r["kept"]]
        self.rows: SeriesRows | None = None  # the test tails
        self.table: pd.DataFrame | None = None

    def bundle(self, best: dict[str, Any]) -> ForecasterBundle:
        model = Forecaster(settings_of(self.config, self.manifest))
        model.load_state_dict(best["model"])
        model.eval()
        settings = self.series["settings"]
        return ForecasterBundle(
            model,
            Scaling.from_config(settings),
            settings["window"],
            settings["horizon"],
            settings["missing"],
            self.series["time_column"],
            list(self.series["value_columns"]),
            self.series["id_column"],
            {r["series"]: (r["centre"], r["spread"]) for r in self.kept},
            {
                "best_epoch": best["metrics"]["epoch"],
                "valid_rmse": best["metrics"]["valid_rmse"],
                "mlflow_run_id": self.config["mlflow_run_id"],
            },
        )

    def test(self, bundle: ForecasterBundle) -> dict[str, Any]:
        if not self.manifest["splits"]["test"]["examples"]:
            return {}
        self.rows = rows = read_split(self.config, self.manifest, "test")
        forecast = forecast_rows(bundle.model, rows, bundle.horizon, bundle.scaling)
        steps = {r["series"]: Step(r["step_months"], r["step_seconds"]) for r in self.kept}
        self.table = forecast_table(rows, forecast, steps, self.series["value_columns"])
        identity = "\t".join([*bundle.value_columns, "|", *rows.series])
        return {
            **scores("test", forecast, rows),
            "test_set": arrays_digest(identity, rows.origin, rows.inputs, rows.future),
        }

    def write_extras(self, directory: Path, bundle: ForecasterBundle, test: dict[str, Any]) -> None:
        if self.table is not None:
            write_atomically(directory / "test_forecast.csv", self.table.to_csv(index=False))

    def log_extras(self, bundle: ForecasterBundle, test: dict[str, Any]) -> None:
        if self.table is not None and self.config["mlflow"]["enabled"]:
            self.mlflow.log_figure(forecast_figure(self.table, self.series["value_columns"]), "test_forecast.png")
            self.mlflow.log_artifact(str(self.output_dir / "test_forecast.csv"))

    def summary_extras(self, bundle: ForecasterBundle) -> dict[str, Any]:
        return {"series": len(self.kept)}

    def test_metric(self, bundle: ForecasterBundle) -> TestMetric:
        return RMSE

    def score_champion(self, uri: str, bundle: ForecasterBundle) -> float | None:
        """The champion's RMSE on this run's test tails, if it reads the same windows the same way."""
        champion = ForecasterBundle.load(uri, tracking_uri=self.config["mlflow_tracking_uri"])
        if (champion.scaling, champion.window, champion.model.settings.calendar, len(champion.value_columns)) != (
            bundle.scaling,
            bundle.window,
            bundle.model.settings.calendar,
            len(bundle.value_columns),
        ):
            return None
        rows = self.rows
        return scores("test", forecast_rows(champion.model, rows, bundle.horizon, bundle.scaling), rows)["test_rmse"]


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    return train(ForecasterTrainer, argv)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
