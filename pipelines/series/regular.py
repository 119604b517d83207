"""One series from raw rows: times parsed and sorted, the time step found, gaps and missing values
counted, then interpolated or dropped. Pure pandas: Spark's workers run it per series, and
``jobs.forecast`` runs it on a user's file, so both read a series the same way."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipelines.contract.errors import ConfigError

MISSING_RULES = ("interpolate", "drop")

# Drop reasons of series rows (counted in the manifest).
BAD_TIME = "bad_time"  # the time is empty or not a date
DUPLICATE_TIME = "duplicate_time"  # a second row for a time the series has (the first in input order is kept)
MISSING_VALUE = "missing_value"  # a value empty or not a number, with missing=drop
BAD_VALUE = "bad_value"  # (a note) a value that is infinite ("inf", or beyond float64 as 1e999): taken as missing
# every row of a series whose times fit no regular step (its grid would be over MAX_GRID times its
# rows): e.g. seconds apart, then years apart
IRREGULAR_TIME = "irregular_time"
TOO_SHORT = "too_short"  # every row of a series too short for a training window and the hold-out
MAX_GRID = 10  # a series' regular grid may hold at most this many times its rows (plus 1,000)


@dataclass(frozen=True)
class Step:
    """The time step of a regular series: whole months, or a fixed number of seconds."""

    months: int = 0
    seconds: int = 0

    def __str__(self) -> str:
        if self.months:
            return f"{self.months // 12} years" if self.months % 12 == 0 else f"{self.months} months"
        days, rest = divmod(self.seconds, 86400)
        return f"{days} days" if not rest else f"{self.seconds} seconds"

    def offset(self) -> pd.DateOffset | pd.Timedelta:
        return pd.DateOffset(months=self.months) if self.months else pd.Timedelta(seconds=self.seconds)

    def times(self, start: pd.Timestamp, count: int) -> pd.DatetimeIndex:
        """``count`` times from ``start`` on, one step apart."""
        offset = self.offset()
        return pd.DatetimeIndex([start + offset * k for k in range(count)])

    def to_dict(self) -> dict[str, int]:
        return {"months": self.months, "seconds": self.seconds}


@dataclass
class Regular:
    """A series on a regular time grid, and how it got there."""

    times: pd.DatetimeIndex
    values: np.ndarray  # (points, features), float64
    step: Step | None
    counts: dict[str, int] = field(default_factory=dict)  # rows read, dropped by reason, gaps, interpolated


def series_name(path: str) -> str:
    """The id of the series a file holds when no id column names it: the file name without
    .gz / .csv / .tsv / .txt."""
    name = os.path.basename(str(path))
    for suffix in (".gz", ".csv", ".tsv", ".txt"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


def format_time(time: pd.Timestamp) -> str:
    """A time as ISO text: the date alone at midnight."""
    return time.date().isoformat() if time == time.normalize() else time.isoformat()


def parse_times(raw: pd.Series) -> pd.Series:
    """Times from text: ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or a full ISO timestamp (NaT when not one)."""
    return pd.to_datetime(raw.astype("string").str.strip(), format="ISO8601", errors="coerce")


def infer_step(times: pd.DatetimeIndex) -> Step | None:
    """The most common difference between consecutive (sorted, distinct) times: in months when
    every time falls on the same day of month at midnight, else in seconds. None for one point."""
    if len(times) < 2:
        return None
    calendar_aligned = (times.day == times[0].day).all() and (times.normalize() == times).all() and times[0].day <= 28
    if calendar_aligned:
        months = np.diff(times.year * 12 + times.month)
        common = int(pd.Series(months).mode().min())
        if common > 0 and (np.asarray(months) % common == 0).all():
            return Step(months=common)
    seconds = np.diff(times.values.astype("datetime64[s]").astype(np.int64))
    return Step(seconds=int(pd.Series(seconds).mode().min()))


def regularize(times: pd.Series, values: pd.DataFrame, missing: str, order: Sequence[int] | None = None) -> Regular:
    """The regular series of ``times`` (raw text) and ``values`` (raw text or numbers, one column
    per feature), rows taken in ``order`` (input order, for which duplicate wins; default as given).

    Rows with a bad time are dropped; for a repeated time the first row in input order is kept;
    an infinite value (``bad_value``) is taken as missing. A
    series whose times fit no regular step (its grid would be over ``MAX_GRID`` times its rows) has
    every row dropped as ``irregular_time``.
    Missing times inside the span (gaps) and missing values are filled by linear interpolation in
    time with ``missing=interpolate``; with ``drop`` rows with a missing value are dropped and the
    series is taken as regular by index."""
    if missing not in MISSING_RULES:
        raise ConfigError(f"series.missing must be one of {', '.join(MISSING_RULES)}; got {missing!r}")
    counts = {
        "read": len(times),
        BAD_TIME: 0,
        DUPLICATE_TIME: 0,
        MISSING_VALUE: 0,
        BAD_VALUE: 0,
        IRREGULAR_TIME: 0,
        "gaps": 0,
        "off_grid": 0,
        "interpolated": 0,
    }
    frame = pd.DataFrame(
        {"time": parse_times(times).to_numpy(), "order": np.arange(len(times)) if order is None else np.asarray(order)}
    )
    numbers = values.apply(lambda c: pd.to_numeric(c.astype("string").str.strip(), errors="coerce")).astype("float64")
    frame = pd.concat([frame, numbers.reset_index(drop=True).set_axis(range(numbers.shape[1]), axis=1)], axis=1)
    counts[BAD_TIME] = int(frame["time"].isna().sum())
    value_columns = list(range(numbers.shape[1]))
    infinite = np.isinf(frame[value_columns].to_numpy())
    counts[BAD_VALUE] = int((infinite & frame["time"].notna().to_numpy()[:, None]).sum())
    frame[value_columns] = frame[value_columns].mask(infinite)
    frame = frame[frame["time"].notna()].sort_values(["time", "order"], kind="stable")
    first = ~frame["time"].duplicated(keep="first")
    counts[DUPLICATE_TIME] = int((~first).sum())
    frame = frame[first]
    seen = pd.DatetimeIndex(frame["time"])  # every time with a row, before rows without a value go
    step = infer_step(seen)
    if step is not None and _steps_between(seen[0], seen[-1], step) + 1 > MAX_GRID * len(seen) + 1000:
        counts[IRREGULAR_TIME] = len(seen)
        return Regular(seen[:0], np.zeros((0, numbers.shape[1])), step, counts)
    absent = frame[value_columns].isna().any(axis=1)
    if missing == "drop" or len(seen) < 2:
        counts[MISSING_VALUE] = int(absent.sum())
        frame = frame[~absent]
    index = pd.DatetimeIndex(frame["time"])
    data = frame[value_columns].to_numpy(np.float64)
    if step is not None:
        grid = step.times(seen[0], _steps_between(seen[0], seen[-1], step) + 1)
        counts["gaps"] = int(len(grid.difference(seen)))
        counts["off_grid"] = int(len(seen.difference(grid)))  # interpolate: used to fill, then left out
        if missing == "interpolate":
            filled = frame.set_index("time")[value_columns].reindex(grid.union(index))
            counts["interpolated"] = int(filled.isna().any(axis=1).sum())
            filled = filled.interpolate(method="time", limit_direction="both").reindex(grid)
            index, data = grid, filled.to_numpy(np.float64)
            if np.isnan(data).any():  # a feature without a single value: nothing to fill from
                counts[MISSING_VALUE], counts["interpolated"] = int(absent.sum()), 0
                index, data = index[:0], data[:0]
    return Regular(index, data, step, counts)


def _steps_between(start: pd.Timestamp, end: pd.Timestamp, step: Step) -> int:
    """Whole steps from ``start`` to ``end``."""
    if step.months:
        return ((end.year - start.year) * 12 + end.month - start.month) // step.months
    return int((end - start).total_seconds() // step.seconds)


def calendar_features(times: pd.DatetimeIndex) -> np.ndarray:
    """The position of each time in its year as a point on the circle: (sin, cos), shape (n, 2)."""
    day = (
        np.asarray(times.day_of_year - 1, np.float64) + np.asarray((times - times.normalize()).total_seconds()) / 86400
    )
    fraction = day / np.where(times.is_leap_year, 366.0, 365.0)
    return np.stack([np.sin(2 * np.pi * fraction), np.cos(2 * np.pi * fraction)], axis=1)
