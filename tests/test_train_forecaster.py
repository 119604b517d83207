"""The forecaster job end to end on the bundled sunspots (2 DDP workers on CPU, MLflow, best/last
outputs, resume) and jobs.forecast: the same forecast from the raw file, bad input refused."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from test_model_registry import post, served
from test_series_preprocess import config as preprocess_config

from jobs import forecast
from jobs import train_forecaster as job
from jobs.common.forecaster_checkpoint import ForecasterBundle
from pipelines.contract.errors import CheckpointError, ConfigError, InputError
from pipelines.series.scaling import Scaling
from pipelines.spark.series import preprocess_series
from rnn_models.forecaster import Forecaster, ForecasterSettings

SAMPLE = Path(__file__).resolve().parent.parent / "data/sample/sunspots-yearly.csv"


@pytest.fixture(scope="module")
def sunspots(spark, tmp_path_factory):
    """The bundled yearly sunspots: the last 20 years test, the 20 before valid, windows of 30."""
    root = tmp_path_factory.mktemp("forecaster")
    cfg = preprocess_config([{"path": str(SAMPLE)}], "series.window=30", "series.horizon=20", "series.season=11")
    preprocess_series(spark, cfg, root / "data", log=lambda m: None)
    return root / "data"


def _args(tmp_path, data_dir, out, uri, *extra):
    return [
        f"data_dir={data_dir}",
        f"output_dir={out}",
        f"storage_path={tmp_path / 'ray'}",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
        "mlflow.experiment=test-forecaster",
        "model.hidden_size=32",
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
        "train.report_seconds=0",
        "valid.every=5",
        *extra,
    ]


@pytest.mark.slow
def test_two_workers_learn_sunspots_resume_and_forecast(tmp_path, sunspots, ray_local):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "forecaster"
    summary = job.run(_args(tmp_path, sunspots, out, uri, "run_name=fc-test", "train.epochs=40", "train.patience=0"))
    assert summary["epochs"] == 40 and summary["series"] == 1
    # it learns: well below forecasting the train mean, computed from the raw file
    raw = pd.read_csv(SAMPLE)["value"].to_numpy()
    mean_rmse = np.sqrt(np.mean((raw[-20:] - raw[:-40].mean()) ** 2))
    assert summary["test_rmse"] < 0.6 * mean_rmse, (summary["test_rmse"], mean_rmse)
    table = pd.read_csv(out / "test_forecast.csv")
    assert list(table["time"]) == [f"{year}-01-01" for year in range(1989, 2009)]
    np.testing.assert_allclose(table["actual_value"], raw[-20:])
    assert summary["test_rmse"] == pytest.approx(np.sqrt(np.mean((table["forecast_value"] - raw[-20:]) ** 2)))

    client = mlflow.MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("test-forecaster").experiment_id])[0]
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"test_forecast.png", "test_forecast.csv", "best", "config.yaml"} <= artifacts
    assert len(client.get_metric_history(run.info.run_id, "valid_rmse")) == 8  # every 5 of 40 epochs

    # jobs.forecast on the file without its test tail gives the job's test forecast
    history = tmp_path / "cut" / "sunspots-yearly.csv"
    history.parent.mkdir()
    lines = SAMPLE.read_text().splitlines()
    history.write_text("\n".join(lines[:-20]) + "\n")
    counts = forecast.run(
        [str(out / "best"), "--series", str(history), "--steps", "20", "--output", str(tmp_path / "f.csv")]
    )
    assert counts == {"series": 1, "steps": 20, "rows": 309 - 20}
    mine = pd.read_csv(tmp_path / "f.csv")
    assert list(mine["date"]) == list(table["time"])
    np.testing.assert_allclose(mine["value"], table["forecast_value"], rtol=1e-5)

    # registered, the first version champion; served over REST, it forecasts as jobs.forecast does
    assert summary["registry"]["name"] == "rnnmt-forecaster" and summary["registry"]["champion"]
    assert summary["registry"]["test_rmse"] == round(summary["test_rmse"], 2)
    rows = [line.split(",") for line in lines[1:-20]]
    request = {
        "dataframe_split": {"columns": ["date", "value"], "data": [[d, float(v)] for d, v in rows]},
        "params": {"steps": 20, "series": "sunspots-yearly"},
    }  # the training scaling, as jobs.forecast's
    with served("models:/rnnmt-forecaster@champion", uri) as url:
        status, answer = post(url, json.dumps(request).encode())
        assert status == 200, answer
        assert [p["date"] for p in answer["predictions"]] == list(table["time"])
        np.testing.assert_allclose([p["value"] for p in answer["predictions"]], mine["value"], rtol=1e-5)
        short = {
            **request,
            "dataframe_split": {"columns": ["date", "value"], "data": request["dataframe_split"]["data"][:10]},
        }
        status, answer = post(url, json.dumps(short).encode())
        assert 400 <= status < 500 and "has 10 points; the forecaster reads 30" in answer["message"], answer
        status, answer = post(url, json.dumps({**request, "params": {"steps": 0}}).encode())
        assert 400 <= status < 500 and "steps must be >= 1" in answer["message"], answer

    # a rerun of the same run_name resumes: only the 5 new epochs are trained
    again = job.run(
        _args(tmp_path, sunspots, out, uri, "run_name=fc-test", "train.epochs=45", "train.patience=0", "overwrite=true")
    )
    assert again["epochs"] == 45 and again["train_windows"] == pytest.approx(summary["train_windows"] * 45 / 40)
    # version 2 is scored against the champion on the same test tails
    assert again["registry"]["version"] == 2
    assert again["registry"]["previous_champion_rmse"] == pytest.approx(summary["test_rmse"], abs=0.01)
    assert again["registry"]["champion"] == (round(again["test_rmse"], 2) < round(summary["test_rmse"], 2))


def test_training_feeds_back_fewer_steps_than_the_window(tmp_path, sunspots):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for steps, message in (
        (30, r"train.feedback_steps must be below the window \(30 values\).*got 30"),
        (-1, "train.feedback_steps must be an integer >= 0, got -1"),
    ):
        with pytest.raises(ConfigError, match=message):
            job.run(_args(tmp_path, sunspots, tmp_path / "out", uri, f"train.feedback_steps={steps}"))


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """A forecaster checkpoint with untrained weights reading windows of 5 (bad input does not need a trained one)."""
    path = tmp_path_factory.mktemp("untrained") / "forecaster.pt"
    torch.manual_seed(0)
    model = Forecaster(ForecasterSettings(features=1, hidden_size=4, layers=1))
    ForecasterBundle(model, Scaling(), 5, 3, "interpolate", "date", ["value"], None, {}).save(path)
    return path


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_forecast_cli_fills_gaps_and_refuses_bad_input(untrained, tmp_path, capsys):
    gappy = _write(tmp_path / "g.csv", "date,value\n2000-01,1\n2000-02,2\n2000-04,4\n2000-05,5\n2000-06,6\n")
    assert forecast.run([str(untrained), "--series", str(gappy), "--steps", "3"]) == {
        "series": 1,
        "steps": 3,
        "rows": 5,
    }
    out = capsys.readouterr()
    assert list(csv.reader(out.out.splitlines()))[0] == ["date", "value"]
    assert [r[0] for r in list(csv.reader(out.out.splitlines()))[1:]] == ["2000-07-01", "2000-08-01", "2000-09-01"]
    assert "1 gaps, 1 interpolated" in out.err and "fitted on the history given" in out.err
    cases = {
        "missing": (tmp_path / "nope.csv", "no such file"),
        "bytes": (_write(tmp_path / "b.csv", b"date,value\n2000,\xff\n"), "not UTF-8"),
        "columns": (_write(tmp_path / "c.csv", "time,value\n2000,1\n"), r"no column\(s\) \['date'\]"),
        "infinite": (
            _write(
                tmp_path / "inf.csv", "date,value\n" + "".join(f"{y},{y}\n" for y in range(2000, 2008)) + "2008,1e999\n"
            ),
            r"1 infinite value\(s\)",
        ),
        "short": (_write(tmp_path / "s.csv", "date,value\n2000,1\n2001,2\n"), "has 2 points; the forecaster reads 5"),
        "empty": (_write(tmp_path / "e.csv", ""), "not a readable CSV"),
        "irregular": (
            _write(
                tmp_path / "i.csv",
                "date,value\n" + "".join(f"2000-01-01 00:0{m},1\n" for m in range(6)) + "2003-01-01,1\n",
            ),
            "fit no regular step",
        ),
    }
    for name, (path, message) in cases.items():
        with pytest.raises(InputError, match=message):
            forecast.run([str(untrained), "--series", str(path), "--steps", "3"])
    with pytest.raises(InputError, match="--steps must be >= 1"):
        forecast.run([str(untrained), "--series", str(gappy), "--steps", "0"])
    with pytest.raises(CheckpointError, match="no forecaster checkpoint"):
        forecast.run([str(tmp_path), "--series", str(gappy), "--steps", "1"])


def test_several_checkpoints_forecast_their_mean(untrained, tmp_path, capsys):
    """An ensemble's forecast is each step's mean of its members' (computed here from their own runs);
    members that read other columns are refused."""
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    ForecasterBundle(
        Forecaster(ForecasterSettings(features=1, hidden_size=4, layers=1)),
        Scaling(),
        5,
        3,
        "interpolate",
        "date",
        ["value"],
        None,
        {},
    ).save(other)
    series = _write(tmp_path / "s.csv", "date,value\n" + "".join(f"2000-{m:02d},{m * m}\n" for m in range(1, 9)))

    def values(*checkpoints: Path) -> np.ndarray:
        forecast.run([*map(str, checkpoints), "--series", str(series), "--steps", "4"])
        return pd.read_csv(io.StringIO(capsys.readouterr().out))["value"].to_numpy()

    one, two, both = values(untrained), values(other), values(untrained, other)
    assert not np.allclose(one, two)
    np.testing.assert_allclose(both, (one + two) / 2, rtol=1e-6)
    renamed = tmp_path / "renamed.pt"
    ForecasterBundle(
        Forecaster(ForecasterSettings(features=1, hidden_size=4, layers=1)),
        Scaling(),
        5,
        3,
        "interpolate",
        "date",
        ["count"],
        None,
        {},
    ).save(renamed)
    with pytest.raises(CheckpointError, match="must read the same columns"):
        forecast.run([str(untrained), str(renamed), "--series", str(series), "--steps", "4"])
