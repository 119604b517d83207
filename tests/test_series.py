"""The series rules (pipelines.series): reading a regular series, the scaling and its inverse, the
hold-out and the windows, each checked against a direct computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.contract.errors import ConfigError
from pipelines.series.regular import Step, calendar_features, infer_step, regularize, series_name
from pipelines.series.scaling import Scaling
from pipelines.series.windows import SeriesSettings, seasonal_naive_mae, series_rows


def _frame(times, values):
    return pd.Series(times, dtype="string"), pd.DataFrame({"v": pd.Series(values, dtype="string")})


def test_steps_are_found_from_the_times():
    assert infer_step(pd.DatetimeIndex(["1949-01-01", "1949-02-01", "1949-03-01", "1949-05-01"])) == Step(months=1)
    assert infer_step(pd.DatetimeIndex(["1700", "1701", "1702"])) == Step(months=12)
    assert str(Step(months=12)) == "1 years" and str(Step(seconds=86400)) == "1 days"
    assert infer_step(pd.DatetimeIndex(["1981-01-01", "1981-01-02", "1981-01-04"])) == Step(seconds=86400)
    assert infer_step(pd.DatetimeIndex(["2020-01-01 00:00", "2020-01-01 01:00", "2020-01-01 02:00"])) == Step(
        seconds=3600
    )
    assert infer_step(pd.DatetimeIndex(["2020-01-01"])) is None


def test_bad_times_duplicates_gaps_and_missing_values_are_counted_and_interpolated():
    times, values = _frame(
        ["1981-01-03", "1981-01-01", "not a date", "", "1981-01-02", "1981-01-02", "1981-01-06"],
        ["3", "1", "9", "9", "", "7", "6"],
    )
    series = regularize(times, values, "interpolate")
    c = series.counts
    assert (c["read"], c["bad_time"], c["duplicate_time"]) == (7, 2, 1)
    # 1981-01-02: the first row in input order (empty) wins over the later 7, then is interpolated
    # with 01-04 and 01-05 (the gaps): linear in time between 3 on the 3rd and 6 on the 6th
    assert c["gaps"] == 2 and c["interpolated"] == 3
    assert list(series.times.strftime("%d")) == ["01", "02", "03", "04", "05", "06"]
    np.testing.assert_allclose(series.values[:, 0], [1, 2, 3, 4, 5, 6])


@pytest.mark.parametrize("missing", ["interpolate", "drop"])
def test_an_infinite_value_is_a_bad_value_taken_as_missing(missing):
    """Values of "inf" and 1e999 (beyond float64) once went through as real ones, turning the scaling infinite."""
    times, values = _frame([f"2000-01-0{d}" for d in range(1, 7)], ["1", "inf", "3", "1e999", "-inf", "6"])
    series = regularize(times, values, missing)
    assert series.counts["bad_value"] == 3 and np.isfinite(series.values).all()
    assert series.counts["missing_value"] == (3 if missing == "drop" else 0)  # taken as missing
    expected = [1, 2, 3, 4, 5, 6] if missing == "interpolate" else [1, 3, 6]
    np.testing.assert_allclose(series.values[:, 0], expected)


def test_drop_takes_the_series_as_regular_by_index():
    times, values = _frame(["2000-01", "2000-02", "2000-03", "2000-05"], ["1", "", "3", "5"])
    series = regularize(times, values, "drop")
    assert series.counts["missing_value"] == 1 and series.counts["gaps"] == 1  # 2000-04 has no row
    np.testing.assert_allclose(series.values[:, 0], [1, 3, 5])
    with pytest.raises(ConfigError, match="series.missing"):
        regularize(times, values, "zero")


def test_calendar_features_are_the_position_in_the_year():
    features = calendar_features(pd.DatetimeIndex(["2001-01-01", "2001-07-02 12:00", "2004-12-31"]))
    fraction = np.array([0, 182.5 / 365, 365 / 366])
    np.testing.assert_allclose(
        features, np.stack([np.sin(2 * np.pi * fraction), np.cos(2 * np.pi * fraction)], 1), atol=1e-12
    )


@pytest.mark.parametrize(
    "scaling", [Scaling(), Scaling("log1p", 1, "standard"), Scaling("none", 12, "minmax"), Scaling("log1p", 0, "none")]
)
def test_scaling_inverts(scaling):
    raw = np.abs(np.random.default_rng(0).normal(100, 30, (60, 2)))
    centre, spread = scaling.fit(raw[:40])
    model = scaling.forward(raw, centre, spread)
    d = scaling.difference
    assert len(model) == len(raw) - d
    # the model's values of points 40.. turned back, given the raw points before them
    back = scaling.inverse(model[40 - d :], raw[:40], centre, spread)
    np.testing.assert_allclose(back, raw[40:], rtol=1e-10)


def test_standard_scaling_is_fitted_on_the_given_part_only():
    raw = np.arange(10.0).reshape(-1, 1)
    centre, spread = Scaling().fit(raw[:5])
    assert centre[0] == pytest.approx(2.0) and spread[0] == pytest.approx(np.std([0, 1, 2, 3, 4]))
    centre, spread = Scaling(scale="minmax").fit(np.full((4, 1), 3.0))
    assert (centre[0], spread[0]) == (3.0, 1.0)  # a constant series keeps a spread of 1
    with pytest.raises(ConfigError, match="series.transform"):
        Scaling(transform="log")


def _regular(values, start="2000-01-01"):
    times = pd.date_range(start, periods=len(values), freq="MS")
    return regularize(pd.Series(times.strftime("%Y-%m")), pd.DataFrame({"v": values}), "interpolate")


def test_holdout_and_windows_against_a_direct_computation():
    n, w, h = 40, 5, 4
    raw = np.random.default_rng(1).normal(10, 2, n)
    raw[-h:] = 1e6  # the test tail: must reach neither a training window nor the scaling
    s = SeriesSettings(window=w, horizon=h, stride=2, season=3, calendar=True)
    rows = series_rows(_regular(raw), s)
    train = [r for r in rows if r["split"] == "train"]
    valid, test = (r for r in rows if r["split"] != "train")
    n_train = n - 2 * h
    mean, std = raw[:n_train].mean(), raw[:n_train].std()
    assert valid["centre"] == pytest.approx([mean]) and valid["spread"] == pytest.approx([std])
    # windows end where train does, every `stride` steps back; targets are the inputs shifted by one
    starts = sorted(range(n_train - w - 1, -1, -2))
    assert [r["origin"] for r in train] == [t + 1 for t in starts]
    for r, t in zip(train, starts):
        np.testing.assert_allclose(r["inputs"], (raw[t : t + w] - mean) / std, rtol=1e-5)
        np.testing.assert_allclose(r["targets"], (raw[t + 1 : t + w + 1] - mean) / std, rtol=1e-5)
        assert max(r["targets"]) < 1e3
    # valid: the window before it as context, its values in both units; test: context includes valid
    assert valid["origin"] == n_train and test["origin"] == n_train + h
    np.testing.assert_allclose(valid["inputs"], (raw[n_train - w : n_train] - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(valid["future"], raw[n_train : n_train + h])
    np.testing.assert_allclose(test["inputs"], (raw[n_train + h - w : n_train + h] - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(test["future"], raw[-h:])
    assert test["mase_scale"] == pytest.approx([np.mean(np.abs(raw[3 : n - h] - raw[: n - h - 3]))])
    # calendar: each input step sees the point it predicts; a forecast's steps run to its last point
    times = pd.date_range("2000-01-01", periods=n, freq="MS")
    np.testing.assert_allclose(
        np.reshape(train[0]["calendar"], (-1, 2)),
        calendar_features(times[starts[0] + 1 : starts[0] + w + 1]),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.reshape(test["calendar"], (-1, 2)), calendar_features(times[n - h - w + 1 :]), atol=1e-6
    )


def test_differenced_windows_and_short_series():
    raw = np.arange(30.0) ** 1.5
    s = SeriesSettings(window=4, horizon=3, scaling=Scaling(difference=1, scale="none"))
    rows = series_rows(_regular(raw), s)
    first = rows[0]
    np.testing.assert_allclose(first["inputs"], np.diff(raw)[:4], rtol=1e-5)
    test = rows[-1]
    assert test["before"] == pytest.approx([raw[26]])  # the level a forecast's differences add to
    assert series_rows(_regular(raw[: s.min_points() - 1]), s) == []
    assert len([r for r in series_rows(_regular(raw[: s.min_points()]), s) if r["split"] == "train"]) == 1


def test_seasonal_naive_mae_and_names():
    raw = np.array([[1.0], [2.0], [4.0], [8.0]])
    assert seasonal_naive_mae(raw, 2)[0] == pytest.approx((3 + 6) / 2)
    assert np.isnan(seasonal_naive_mae(raw[:2], 2)[0])
    assert series_name("/x/airline-passengers.csv.gz") == "airline-passengers"
    with pytest.raises(ConfigError, match="series.window"):
        SeriesSettings(window=0, horizon=1)


def test_a_series_without_values_has_no_points():
    times, values = _frame(["2000", "2001", "2002"], ["", "x", ""])
    series = regularize(times, values, "interpolate")
    assert len(series.values) == 0 and series.counts["missing_value"] == 3


def test_times_that_fit_no_regular_step_drop_the_series():
    # minutes apart, then a year: a one-minute grid would hold half a million points for 4 rows
    times, values = _frame(
        ["2000-01-01 00:00", "2000-01-01 00:01", "2000-01-01 00:02", "2001-01-01 00:00"], ["1", "2", "3", "4"]
    )
    series = regularize(times, values, "interpolate")
    assert series.counts["irregular_time"] == 4 and len(series.values) == 0 and series.step == Step(seconds=60)
