"""Benchmark the forecaster on airline passengers, monthly sunspots and Melbourne temperatures,
side by side with a seasonal-naive forecast and statsmodels' exponential smoothing, in one run.

    python bench/forecaster.py [--data-dir ../shared/data] [--minutes 3] [--seeds 3] [--series airline ...]
                               [--rnnmt k=v ...]

For each series: rnnmt's preprocessing with ``conf/preprocess/<series>.yaml`` (made once under
bench/results; the last ``horizon`` points are test, the ``horizon`` before them valid), then
``jobs.train_forecaster`` with ``conf/train_forecaster/<series>.yaml`` for at most ``--minutes``,
once per seed (``--seeds``: seeds 0, 1, ...), whose test forecasts (``test_forecast.csv``) are
scored here: rnnmt's figures are the mean over the seeds, each seed's are listed too;
``rnnmt_ensemble`` is ``jobs.forecast`` given every seed's model (each step the mean of their
forecasts) on the history written out as CSV. The
baselines see the same history (everything before the test tail), read from the raw CSV by this
script with pandas:
- ``seasonal_naive``: each test point is the value one season (the preset's ``season``) before
  it, from the history (1: the last value);
- ``ets``: statsmodels' Holt-Winters ``ExponentialSmoothing`` (additive or damped trend or none;
  additive or multiplicative season or none where the series has one), the configuration of least
  AICc on the history; ``ets_best_on_test`` is the one of least test RMSE, reported as an
  optimistic bound (it is chosen on the test tail).
RMSE and MAE are in the series' units; MASE divides the MAE by the in-sample seasonal-naive MAE of
the history. Ends with one line of JSON: per series and contender, rmse and mase, and the CPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from measure import cpu_name, preprocess_once, run_job  # noqa: E402

SERIES = {
    "airline": "airline-passengers.csv",
    "sunspots_monthly": "sunspots-monthly.csv",
    "melbourne": "melbourne-min-temp.csv",
}


def history_and_test(path: Path, horizon: int) -> tuple[pd.Series, pd.Series]:
    """The raw series on its regular grid (missing days filled linearly in time), cut into the
    history and the last ``horizon`` points."""
    frame = pd.read_csv(path, parse_dates=["date"]).set_index("date")["value"].astype(float)
    freq = pd.infer_freq(frame.index[:50]) or "D"
    regular = frame.asfreq(freq)
    if regular.isna().any():
        regular = regular.interpolate(method="time")
    return regular.iloc[:-horizon], regular.iloc[-horizon:]


def score(forecast: np.ndarray, history: pd.Series, test: pd.Series, season: int) -> dict:
    """RMSE, MAE and MASE of ``forecast`` against ``test``."""
    errors = np.asarray(forecast, float) - test.to_numpy()
    scale = np.mean(np.abs(history.to_numpy()[season:] - history.to_numpy()[:-season]))
    return {
        "rmse": round(float(np.sqrt(np.mean(errors**2))), 4),
        "mae": round(float(np.mean(np.abs(errors))), 4),
        "mase": round(float(np.mean(np.abs(errors)) / scale), 4),
    }


def seasonal_naive(history: pd.Series, horizon: int, season: int) -> np.ndarray:
    """The value one season before each step, from the history."""
    values = history.to_numpy()
    return np.array([values[len(values) - season + (k % season)] for k in range(horizon)])


def ets(history: pd.Series, test: pd.Series, season: int) -> tuple[dict, dict]:
    """Holt-Winters exponential smoothing: the configuration of least AICc on the history (the
    baseline), and, as an optimistic bound for the family, the one of least test RMSE."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    values, horizon = history.to_numpy(), len(test)
    trends = [(None, False), ("add", False), ("add", True)]
    seasons = [None, "add"] + (["mul"] if (values > 0).all() else []) if season > 1 else [None]
    fits = []
    for (trend, damped), seasonal in itertools.product(trends, seasons):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = ExponentialSmoothing(
                values,
                trend=trend,
                damped_trend=damped,
                seasonal=seasonal,
                seasonal_periods=season if seasonal else None,
                initialization_method="estimated",
            ).fit()
        name = f"trend={trend}{' damped' if damped else ''} season={seasonal}"
        fits.append(
            {**score(fit.forecast(horizon), history, test, season), "model": name, "aicc": round(float(fit.aicc), 2)}
        )
    by_aicc = min((f for f in fits if np.isfinite(f["aicc"])), key=lambda f: f["aicc"])
    return by_aicc, min(fits, key=lambda f: f["rmse"])


def rnnmt(prepared: Path, name: str, out: Path, minutes: float, extra: list[str]) -> tuple[np.ndarray, dict]:
    """Train and test the forecaster preset; its test forecast and its summary's figures."""
    preset = PROJECT / "conf" / "train_forecaster" / f"{name}.yaml"
    cmd = [
        sys.executable,
        "-m",
        "jobs.train_forecaster",
        *([str(preset)] if preset.is_file() else []),
        f"data_dir={prepared}",
        f"output_dir={out}",
        "overwrite=true",
        f"train.max_minutes={minutes}",
        f"run_name=bench-forecaster-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        "mlflow.registry_name=",
        *extra,
    ]  # tracked, not registered: a bench never takes the champion alias
    summary, wall, peak = run_job(cmd, PROJECT)
    forecast = pd.read_csv(out / "test_forecast.csv")["forecast_value"].to_numpy()
    return forecast, {
        "job_test_rmse": round(summary["test_rmse"], 4),
        "valid_rmse": round(summary["valid_rmse"], 4),
        "best_epoch": summary["best_epoch"],
        "epochs": summary["epochs"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(peak / 2**20),
    }


def ensemble(checkpoints: list[Path], history: pd.Series, steps: int, raw_name: str, out: Path) -> np.ndarray:
    """``jobs.forecast`` of the seeds' models together: the next ``steps`` after ``history``, written
    to a file named as the raw series (so the models keep its training scaling)."""
    out.mkdir(parents=True, exist_ok=True)
    source, target = out / raw_name, out / "forecast.csv"
    history.rename("value").rename_axis("date").reset_index().to_csv(source, index=False)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.forecast",
            *map(str, checkpoints),
            "--series",
            str(source),
            "--steps",
            str(steps),
            "--output",
            str(target),
        ],
        check=True,
        cwd=PROJECT,
    )
    return pd.read_csv(target)["value"].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=PROJECT.parent / "shared" / "data")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget of each rnnmt run")
    parser.add_argument("--seeds", type=int, default=3, help="rnnmt runs per series (seeds 0, 1, ...)")
    parser.add_argument("--series", nargs="+", choices=tuple(SERIES), default=list(SERIES))
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results")
    parser.add_argument("--rnnmt", nargs="*", default=[], help="extra key=value overrides for the training job")
    args = parser.parse_args()
    if not (args.data_dir / "timeseries").is_dir():
        sys.exit(f"error: {args.data_dir / 'timeseries'} not found (pass --data-dir)")
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"cpu": cpu_name(), "minutes": args.minutes, "seeds": args.seeds}
    for name in args.series:
        preset = PROJECT / "conf" / "preprocess" / f"{name}.yaml"
        settings = yaml.safe_load(preset.read_text())["series"]
        horizon, season = settings["horizon"], settings["season"]
        prepared = preprocess_once([str(preset)], args.data_dir, args.out / f"series-{name}", PROJECT)
        history, test = history_and_test(args.data_dir / "timeseries" / SERIES[name], horizon)
        runs = []
        for seed in range(args.seeds):
            forecast, figures = rnnmt(
                prepared, name, args.out / f"forecaster-{name}-seed{seed}", args.minutes, [f"seed={seed}", *args.rnnmt]
            )
            runs.append({"seed": seed, **score(forecast, history, test, season), **figures})
        mean = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in ("rmse", "mae", "mase")}
        together = ensemble(
            [args.out / f"forecaster-{name}-seed{seed}" / "best" for seed in range(args.seeds)],
            history,
            horizon,
            SERIES[name],
            args.out / f"ensemble-{name}",
        )
        started = time.perf_counter()
        by_aicc, by_test = ets(history, test, season)
        entry = {
            "rnnmt": {
                **mean,
                "rmse_min": min(r["rmse"] for r in runs),
                "rmse_max": max(r["rmse"] for r in runs),
                "runs": runs,
            },
            "rnnmt_ensemble": {**score(together, history, test, season), "models": args.seeds},
            "seasonal_naive": score(seasonal_naive(history, horizon, season), history, test, season),
            "ets": {**by_aicc, "seconds": round(time.perf_counter() - started, 1)},
            "ets_best_on_test": by_test,
            "horizon": horizon,
            "season": season,
        }
        entry["target_met"] = entry["rnnmt"]["rmse"] <= min(entry["seasonal_naive"]["rmse"], entry["ets"]["rmse"])
        entry["ensemble_target_met"] = entry["rnnmt_ensemble"]["rmse"] <= min(
            entry["seasonal_naive"]["rmse"], entry["ets"]["rmse"]
        )
        entry["below_ets_best_on_test"] = entry["rnnmt"]["rmse"] <= by_test["rmse"]
        result[name] = entry
        print(json.dumps({name: entry}), file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
