"""The hold-out and the windows of one regular series, as rows of the preprocessing output.

Of ``n`` points the last ``horizon`` are test and the ``horizon`` before them valid; the rest is
train, and the scaling is fitted on it alone. Train rows are windows of ``window`` model values
(inputs) with the same values shifted by one step (targets). A valid or test row holds the
``window`` values before its first held-out point (the forecast's context, which for test includes
valid: it is known by then), the held-out values in model units (targets) and in the original
units (future), the raw values a difference is inverted from (before), and MASE's scale."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.contract.errors import ConfigError, check_integer
from pipelines.series.regular import MISSING_RULES, Regular, calendar_features
from pipelines.series.scaling import Scaling

CALENDAR_FEATURES = 2  # (sin, cos) of the position in the year


@dataclass(frozen=True)
class SeriesSettings:
    """The ``series.*`` keys of the preprocessing config that shape the rows."""

    window: int
    horizon: int
    stride: int = 1
    season: int = 1
    calendar: bool = False
    missing: str = "interpolate"
    scaling: Scaling = Scaling()

    def __post_init__(self) -> None:
        for name in ("window", "horizon", "stride", "season"):
            check_integer(f"series.{name}", getattr(self, name), 1)
        if self.missing not in MISSING_RULES:
            raise ConfigError(f"series.missing must be one of {', '.join(MISSING_RULES)}; got {self.missing!r}")

    @classmethod
    def from_config(cls, series: Mapping[str, Any]) -> "SeriesSettings":
        return cls(
            series["window"],
            series["horizon"],
            series["stride"],
            series["season"],
            bool(series["calendar"]),
            series["missing"],
            Scaling.from_config(series),
        )

    @property
    def calendar_size(self) -> int:
        return CALENDAR_FEATURES if self.calendar else 0

    def min_points(self) -> int:
        """The shortest series that gives one training window and both held-out tails."""
        return self.scaling.difference + self.window + 1 + 2 * self.horizon


def seasonal_naive_mae(raw: np.ndarray, season: int) -> np.ndarray:
    """Per feature, the mean absolute error of the in-sample seasonal-naive forecast
    (``raw[t - season]``) over ``raw`` (points, features): MASE's scale. NaN when too short."""
    if len(raw) <= season:
        return np.full(raw.shape[1], np.nan)
    return np.abs(raw[season:] - raw[:-season]).mean(axis=0)


def series_rows(series: Regular, s: SeriesSettings) -> list[dict[str, Any]]:
    """Every row of one series (train windows oldest first, then the valid and test rows); empty
    for a series shorter than ``s.min_points()``."""
    raw, n, d, w, h = series.values, len(series.values), s.scaling.difference, s.window, s.horizon
    if n < s.min_points():
        return []
    n_train = n - 2 * h
    centre, spread = s.scaling.fit(raw[:n_train])
    model = s.scaling.forward(raw, centre, spread).astype(np.float32)  # model point k is raw point k + d
    calendar = calendar_features(series.times).astype(np.float32) if s.calendar else None
    common = {"centre": centre.tolist(), "spread": spread.tolist()}

    def row(split: str, origin: int, first: int, inputs: np.ndarray, targets: np.ndarray, steps: int) -> dict[str, Any]:
        """A row whose targets start at raw point ``origin``. Each input step sees the calendar of
        the point it predicts: the ``steps`` steps fed (inputs, then forecasts fed back) predict
        the points from ``first`` on."""
        cal = calendar[first : first + steps] if calendar is not None else np.zeros((0, 0), np.float32)
        return {
            "split": split,
            "origin": origin,
            "time": series.times[origin].isoformat(),
            "inputs": inputs.ravel().tolist(),
            "targets": targets.ravel().tolist(),
            "calendar": cal.ravel().tolist(),
            **common,
        }

    rows = []
    train_model = n_train - d  # model points of the train part
    for start in sorted(range(train_model - w - 1, -1, -s.stride)):  # the last window ends where train does
        rows.append(
            {
                **row(
                    "train", start + d + 1, start + d + 1, model[start : start + w], model[start + 1 : start + w + 1], w
                ),
                "before": [],
                "future": [],
                "mase_scale": [],
            }
        )
    for split, origin in (("valid", n_train), ("test", n_train + h)):
        k = origin - d  # the model point of the first held-out value
        rows.append(
            {
                **row(split, origin, origin - w + 1, model[k - w : k], model[k : k + h], w + h - 1),
                "before": raw[origin - d : origin].ravel().tolist(),
                "future": raw[origin : origin + h].ravel().tolist(),
                "mase_scale": seasonal_naive_mae(raw[:origin], s.season).tolist(),
            }
        )
    return rows
