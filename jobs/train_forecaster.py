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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from jobs.common import cli, ray_train
from jobs.common.config import to_yaml
from jobs.common.forecaster_checkpoint import FORECASTER_FILE, ForecasterBundle, forecast_rows
from jobs.common.model_registry import RMSE, arrays_digest, log_forecaster, register
from jobs.common.ray_train import BEST_FILE, STATE_FILE, MetricsLog, broadcast, check_replicas, worker_log
from pipelines.contract.atomic import atomic_directory, write_atomically
from pipelines.contract.errors import ConfigError, ManifestError, check_integer
from pipelines.contract.manifest import load_manifest
from pipelines.contract.series_shards import SeriesRows, read_windows
from pipelines.series.regular import Step, format_time
from pipelines.series.scaling import Scaling
from rnn_models.batching import epoch_batches, worker_batches
from rnn_models.forecaster import Forecaster, ForecasterSettings

PATH_KEYS = ("data_dir", "output_dir")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class Progress:
    """Where training stands; every checkpoint stores it, and a resumed run goes on from it."""

    epoch: int = 0                 # epochs finished
    best_rmse: float = float("inf")  # best valid RMSE so far, and its epoch
    best_epoch: int = -1
    bad_checks: int = 0            # validations since the best one (early stopping)
    train_seconds: float = 0.0     # spent in training steps
    loop_seconds: float = 0.0      # wall clock of the epochs, validation included (train.max_minutes)
    train_windows: float = 0.0     # windows trained on, by all workers


def settings_of(config: dict[str, Any], manifest: dict[str, Any]) -> ForecasterSettings:
    """The model settings a config describes for the data of ``manifest``."""
    series = manifest["series"]
    return ForecasterSettings.from_dict({**config["model"], "features": series["features"],
                                         "calendar": series["calendar_features"]})


def data_identity(manifest: dict[str, Any]) -> str:
    """What a checkpoint must have been trained on to be resumed on this data: its shape and scaling."""
    series = manifest["series"]
    shape = {k: series[k] for k in ("features", "calendar_features", "value_columns", "settings")}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def read_split(config: dict[str, Any], manifest: dict[str, Any], split: str) -> SeriesRows:
    series = manifest["series"]
    return read_windows(Path(config["data_dir"]), manifest["splits"][split]["files"], series["features"],
                        series["calendar_features"])


def scores(prefix: str, forecast: np.ndarray, rows: SeriesRows) -> dict[str, float]:
    """RMSE and MAE over every forecast value, and MASE (each series' MAE over its in-sample
    seasonal-naive MAE, averaged over series and features), in the original units."""
    errors = forecast - rows.future
    mae = np.abs(errors).mean(axis=1)  # (N, F)
    with np.errstate(divide="ignore", invalid="ignore"):
        mase = mae / rows.mase_scale
    return {f"{prefix}_rmse": float(np.sqrt(np.mean(errors ** 2))), f"{prefix}_mae": float(np.mean(np.abs(errors))),
            f"{prefix}_mase": float(np.nanmean(mase)) if np.isfinite(mase).any() else float("nan")}


class ForecasterTraining:
    """One worker's training: the windows, the model and optimizer, and the epochs."""

    def __init__(self, config: dict[str, Any], rank: int, world: int, device: torch.device):
        from ray.train.torch import prepare_model

        self.config, self.rank, self.world, self.device = config, rank, world, device
        t = self.t = config["train"]
        torch.set_num_threads(max(1, int(t["cpus_per_worker"])))
        self.manifest = load_manifest(Path(config["data_dir"]), "series")
        self.fingerprint = data_identity(self.manifest)
        self.scaling = Scaling.from_config(self.manifest["series"]["settings"])
        self.horizon = self.manifest["series"]["settings"]["horizon"]
        self.train = read_split(config, self.manifest, "train")
        self.valid = read_split(config, self.manifest, "valid") if rank == 0 else None
        torch.manual_seed(config["seed"])  # the same initial parameters on every worker
        self.model = Forecaster(settings_of(config, self.manifest)).to(device)
        optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[t["optimizer"]]
        self.optimizer = optimizer(self.model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
        self.progress = Progress()
        self.best_state: dict[str, Any] | None = None  # rank 0: the best model so far, on the CPU
        self.ddp_model = prepare_model(self.model, move_to_device=False)
        self.log_metrics = MetricsLog.for_rank(config, rank)

    def restore(self, checkpoint: Any) -> None:
        """Go on from a Ray Train checkpoint (None: start afresh)."""
        if checkpoint is None:
            return
        progress, self.best_state = ray_train.resume_training(checkpoint, self.config, self.fingerprint, self.model,
                                                              self.optimizer, self.device, self.rank)
        self.progress = Progress(**progress)

    def train_epoch(self, epoch: int) -> bool:
        """One epoch over this worker's batches of windows; True when the time budget ran out."""
        t, progress, data = self.t, self.progress, self.train
        torch.manual_seed(self.config["seed"] * 1_000_003 + epoch * 101 + self.rank)  # dropout masks
        self.model.train()
        batches = worker_batches(epoch_batches(len(data), t["batch_size"], self.config["seed"], epoch),
                                 self.rank, self.world)
        clock = ray_train.EpochClock(progress.loop_seconds, t["max_minutes"], t["report_seconds"], self.device,
                                     ray_train.epoch_bar(self.config, self.rank, epoch, len(batches)))
        window = {"loss": 0.0, "windows": 0, "seconds": 0.0}  # since the last progress report
        out_of_time = False
        for step, index in enumerate(batches):
            # the step: predict the next value at every step of the windows (the last feedback_steps
            # from the predictions fed back), mean squared error, update
            started = time.perf_counter()
            inputs = torch.as_tensor(data.inputs[index], device=self.device)
            targets = torch.as_tensor(data.targets[index], device=self.device)
            calendar = torch.as_tensor(data.calendar[index], device=self.device) if data.calendar.shape[2] else None
            predicted, _ = self.ddp_model(inputs, calendar, fed=t["feedback_steps"])
            loss = torch.nn.functional.mse_loss(predicted, targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t["clip_norm"]:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t["clip_norm"])
            self.optimizer.step()
            seconds = time.perf_counter() - started
            window = {"loss": window["loss"] + float(loss.detach()) * len(index),
                      "windows": window["windows"] + len(index), "seconds": window["seconds"] + seconds}
            progress.train_seconds += seconds
            progress.train_windows += len(index) * self.world
            out_of_time, report = clock.check(step, len(batches))
            if report and self.log_metrics is not None:
                self.log_metrics({"train_loss": window["loss"] / max(window["windows"], 1),
                                  "windows_per_sec": window["windows"] * self.world / max(window["seconds"], 1e-9)},
                                 int(progress.train_windows))
                window = {"loss": 0.0, "windows": 0, "seconds": 0.0}
            if out_of_time:
                break
        progress.loop_seconds += clock.stop()
        return out_of_time

    def validate(self) -> dict[str, Any]:
        """Rank 0's validation metrics (empty on the other workers)."""
        if self.rank != 0:
            return {}
        started = time.perf_counter()
        forecast = forecast_rows(self.model, self.valid, self.horizon, self.scaling, device=self.device)
        self.progress.loop_seconds += time.perf_counter() - started
        return scores("valid", forecast, self.valid)

    def end_check(self, epoch: int, metrics: dict[str, Any], out_of_time: bool) -> bool:
        """Keep the best model, report with a checkpoint; returns whether training stops here."""
        t, progress = self.t, self.progress
        check_replicas(self.model, self.device)
        rmse = broadcast([metrics.get("valid_rmse", 0.0)], self.device)[0]  # rank 0's, on every worker
        improved = rmse < progress.best_rmse
        progress.epoch, progress.bad_checks = epoch + 1, 0 if improved else progress.bad_checks + 1
        if improved:
            progress.best_rmse, progress.best_epoch = rmse, epoch
            if self.rank == 0:
                self.best_state = {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                                   "metrics": dict(metrics, epoch=epoch)}
        stop = out_of_time or bool(t["patience"] and progress.bad_checks >= t["patience"])
        metrics.update(epoch=epoch, best_epoch=progress.best_epoch, train_seconds=progress.train_seconds,
                       loop_seconds=progress.loop_seconds, train_windows=progress.train_windows,
                       train_windows_per_sec=progress.train_windows / max(progress.train_seconds, 1e-9),
                       stopped_early=bool(stop and epoch + 1 < t["epochs"]))
        if self.rank == 0:
            worker_log(f"epoch {epoch}: valid RMSE {metrics['valid_rmse']:.4g} MASE {metrics['valid_mase']:.3f}, "
                       f"{metrics['train_windows_per_sec']:,.0f} windows/s")
        ray_train.report_training(metrics, self.rank, self.model, self.optimizer, asdict(progress), self.fingerprint,
                                  self.best_state)
        return stop


def train_func_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: restore, then epochs of training, and every ``valid.every`` epochs a
    validation and a checkpoint."""
    from ray.train.torch import get_device

    rank, world = ray_train.world()
    training = ForecasterTraining(config, rank, world, get_device())
    training.restore(ray_train.resumable_checkpoint())
    epochs, every = config["train"]["epochs"], config["valid"]["every"]
    for epoch in range(training.progress.epoch, epochs):
        out_of_time = training.train_epoch(epoch)
        if (out_of_time or (epoch + 1) % every == 0 or epoch + 1 == epochs) and \
                training.end_check(epoch, training.validate(), out_of_time):
            break


def prepare(config: dict[str, Any]) -> None:
    """Check the config and its input before anything starts."""
    t = config["train"]
    if t["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}; got {t['optimizer']!r}")
    for key, value in (("train.batch_size", t["batch_size"]), ("train.num_workers", t["num_workers"]),
                       ("train.epochs", t["epochs"]), ("valid.every", config["valid"]["every"])):
        check_integer(key, value, 1)
    if not t["lr"] > 0:
        raise ConfigError(f"train.lr must be > 0, got {t['lr']}")
    manifest = load_manifest(Path(config["data_dir"]), "series")
    settings_of(config, manifest)
    window = manifest["series"]["settings"]["window"]
    check_integer("train.feedback_steps", t["feedback_steps"], 0)
    if t["feedback_steps"] >= window:
        raise ConfigError(f"train.feedback_steps must be below the window ({window} values): the first "
                          f"values are read; got {t['feedback_steps']}")
    for split in ("train", "valid"):
        if not manifest["splits"][split]["examples"]:
            raise ManifestError(f"{config['data_dir']} has no rows in its {split} split: no series was long enough "
                                f"({manifest['counts']['dropped']})")


def forecast_table(rows: SeriesRows, forecast: np.ndarray, steps: dict[str, Step], columns: Sequence[str]
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


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    with ray_train.training_run("train_forecaster", argv, PATH_KEYS, prepare) as (cfg, config, mlflow):
        started = time.perf_counter()
        output_dir, data_dir = Path(config["output_dir"]), Path(config["data_dir"])
        manifest = load_manifest(data_dir, "series")
        series, settings = manifest["series"], manifest["series"]["settings"]
        result = ray_train.fit(train_func_per_worker, config, log_reports=True)
        files = ray_train.read_checkpoint(result.checkpoint, [STATE_FILE, BEST_FILE])
        last, best = files[STATE_FILE], files[BEST_FILE]

        # the best model as a bundle that reads raw series; publish best/ and last/
        model = Forecaster(settings_of(config, manifest))
        model.load_state_dict(best["model"])
        model.eval()
        scaling = Scaling.from_config(settings)
        kept = [r for r in pq.read_table(data_dir / series["file"]).to_pylist() if r["kept"]]
        bundle = ForecasterBundle(model, scaling, settings["window"], settings["horizon"], settings["missing"],
                                  series["time_column"], list(series["value_columns"]), series["id_column"],
                                  {r["series"]: (r["centre"], r["spread"]) for r in kept},
                                  {"best_epoch": best["metrics"]["epoch"], "valid_rmse": best["metrics"]["valid_rmse"],
                                   "mlflow_run_id": config["mlflow_run_id"]})
        # the test tails: scores, a table of forecasts and a plot
        test: dict[str, Any] = {}
        table = None
        if manifest["splits"]["test"]["examples"]:
            rows = read_split(config, manifest, "test")
            forecast = forecast_rows(model, rows, settings["horizon"], scaling)
            test = scores("test", forecast, rows)
            steps = {r["series"]: Step(r["step_months"], r["step_seconds"]) for r in kept}
            table = forecast_table(rows, forecast, steps, series["value_columns"])
        with atomic_directory(output_dir, overwrite=config["overwrite"]) as tmp:
            for name, state in (("best", best["model"]), ("last", last["model"])):
                (tmp / name).mkdir()
                bundle.save(tmp / name / FORECASTER_FILE, state)
            (tmp / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
            if table is not None:
                write_atomically(tmp / "test_forecast.csv", table.to_csv(index=False))
        if table is not None and config["mlflow"]["enabled"]:
            mlflow.log_figure(forecast_figure(table, series["value_columns"]), "test_forecast.png")
            mlflow.log_artifact(str(output_dir / "test_forecast.csv"))
        progress = Progress(**last["progress"])
        summary = {"best": str(output_dir / "best"), "last": str(output_dir / "last"),
                   "best_epoch": best["metrics"]["epoch"], "epochs": progress.epoch, "series": len(kept),
                   **{k: best["metrics"][k] for k in best["metrics"] if k.startswith("valid_")},
                   "train_seconds": round(progress.train_seconds, 1), "train_windows": int(progress.train_windows),
                   "train_windows_per_sec": progress.train_windows / max(progress.train_seconds, 1e-9),
                   "wall_seconds": round(time.perf_counter() - started, 1), **test}

        # MLflow: the summary and the best checkpoint
        per_epoch = {"epochs", "best_epoch"} | {k for k in summary if k.startswith("valid_")}
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and k not in per_epoch})
        mlflow.log_artifacts(str(output_dir / "best"), "best")
        if config["mlflow"]["enabled"]:  # the model that forecasts series (models from code, no pickle)
            info = log_forecaster(mlflow, output_dir / "best" / FORECASTER_FILE, bundle)
            if config["mlflow"]["registry_name"] and test:
                summary["registry"] = publish(mlflow, info.model_uri, bundle, config, rows, test["test_rmse"])
        mlflow.set_tag("output_dir", str(output_dir))
    print(json.dumps(summary))
    return summary


def publish(mlflow: Any, model_uri: str, bundle: ForecasterBundle, config: dict[str, Any], rows: SeriesRows,
            rmse: float) -> dict[str, Any]:
    """Register the logged model under ``mlflow.registry_name``: champion when its test RMSE is below
    the champion's on the same test tails (a champion that reads other windows or scales otherwise stays)."""

    def score_champion(uri: str) -> float | None:
        """The champion's RMSE on this run's test tails, if it reads the same windows the same way."""
        champion = ForecasterBundle.load(uri, tracking_uri=config["mlflow_tracking_uri"])
        if (champion.scaling, champion.window, champion.model.settings.calendar, len(champion.value_columns)) != (
                bundle.scaling, bundle.window, bundle.model.settings.calendar, len(bundle.value_columns)):
            return None
        return scores("test", forecast_rows(champion.model, rows, bundle.horizon, bundle.scaling), rows)["test_rmse"]

    identity = "\t".join([*bundle.value_columns, "|", *rows.series])
    digest = arrays_digest(identity, rows.origin, rows.inputs, rows.future)
    return register(mlflow, model_uri, config["mlflow"]["registry_name"], rmse, digest, score_champion, RMSE)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
