"""The forecaster checkpoint (``forecaster.pt``): the weights with everything needed to forecast a
raw series (settings, how the series was read and scaled, each training series' scaling), as plain
data and tensors, so it loads with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from jobs.common.bundle import ModelBundle
from pipelines.contract.errors import CheckpointError, InputError
from pipelines.contract.series_shards import SeriesRows
from pipelines.series.regular import BAD_VALUE, MAX_GRID, Regular, calendar_features, format_time, regularize
from pipelines.series.scaling import Scaling
from rnn_models.forecaster import Forecaster, ForecasterSettings

FORECASTER_FILE = "forecaster.pt"


@torch.no_grad()
def forecast_rows(
    model: Forecaster,
    rows: SeriesRows,
    steps: int,
    scaling: Scaling,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The forecasts (N, steps, features), in original units, of valid or test ``rows``: each from
    its context, predictions fed back, then the series' scaling inverted."""
    was_training = model.training
    model.eval()
    out = np.empty((len(rows), steps, rows.inputs.shape[2]), np.float64)
    for start in range(0, len(rows), batch_size):
        part = slice(start, start + batch_size)
        history = torch.as_tensor(rows.inputs[part], device=device)
        calendar = torch.as_tensor(rows.calendar[part], device=device) if model.settings.calendar else None
        predicted = model.generate(history, steps, calendar).float().cpu().numpy()
        for n, values in enumerate(predicted, start):
            out[n] = scaling.inverse(values, rows.before[n], rows.centre[n], rows.spread[n])
    model.train(was_training)
    return out


@dataclass
class ForecasterBundle(ModelBundle):
    """A forecaster, how its series were read (columns, missing rule) and scaled, the window it
    reads, and the scaling fitted on each training series' train part (by series id)."""

    file_name, artifact, what, registry_name = FORECASTER_FILE, "forecaster", "forecaster", "rnnmt-forecaster"
    pyfunc_code = "forecaster_pyfunc.py"
    model_type, settings_type = Forecaster, ForecasterSettings
    required = frozenset({"settings", "model", "scaling", "window", "value_columns"})

    model: Forecaster
    scaling: Scaling
    window: int
    horizon: int
    missing: str
    time_column: str
    value_columns: list[str]
    id_column: str | None
    scales: dict[str, tuple[list[float], list[float]]]  # series id -> (centre, spread)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def calendar(self) -> bool:
        return self.model.settings.calendar > 0

    def min_points(self) -> int:
        """The shortest history a forecast can start from."""
        return self.window + self.scaling.difference

    @torch.no_grad()
    def forecast(
        self, series: Regular, steps: int, name: str | None = None
    ) -> tuple[pd.DatetimeIndex, np.ndarray, str]:
        """The ``steps`` times and values (steps, features; original units) after the regular
        ``series``; the scaling is that of the training series ``name`` when the model knows it,
        else fitted on this history. Returns which scaling was used too."""
        raw, n, d, w = series.values, len(series.values), self.scaling.difference, self.window
        if series.counts.get("irregular_time"):
            raise InputError(
                f"series {name!r}: its times fit no regular step (a step of {series.step} would need "
                f"over {MAX_GRID} times as many points as it has rows)"
            )
        if n < self.min_points():
            raise InputError(
                f"series {name!r} has {n} points; the forecaster reads {w} (and {d} more for its difference)"
            )
        if series.step is None:
            raise InputError(f"series {name!r}: cannot find its time step")
        if name in self.scales:
            centre, spread = (np.asarray(v, np.float64) for v in self.scales[name])
            scaled_by = f"the training scaling of series {name!r}"
        else:
            centre, spread = self.scaling.fit(raw)
            scaled_by = "a scaling fitted on the history given"
        history = self.scaling.forward(raw, centre, spread)[-w:]
        future = series.step.times(series.times[-1], steps + 1)[1:]
        calendar = None
        if self.calendar:  # the calendar of every step predicted: the history's own (but its first), then the future's
            times = series.times[n - w + 1 :].append(future)
            calendar = torch.as_tensor(calendar_features(times), dtype=torch.float32).unsqueeze(0)
        self.model.eval()
        predicted = self.model.generate(torch.as_tensor(history, dtype=torch.float32).unsqueeze(0), steps, calendar)
        values = self.scaling.inverse(predicted[0].numpy(), raw[n - d :], centre, spread)
        return future, values, scaled_by

    def forecast_frame(
        self, frame: pd.DataFrame, steps: int, where: str, name: str | None = None
    ) -> tuple[pd.DataFrame, list[str]]:
        """The forecasts of every series in the CSV table ``frame`` (this model's columns), as a
        table of the id column (if any), the time and the values, ``steps`` rows per series; and a
        line per series saying how it was read and scaled. Without an id column the table's one
        series is known by ``name`` (see ``forecast``)."""
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        tables, reports = [], []
        for key, regular in self.read(frame, where).items():
            times, values, scaled_by = self.forecast(regular, steps, key if self.id_column else name)
            reports.append(
                f"series {key or name or where}: {len(regular.values)} points ({regular.counts['gaps']} "
                f"gaps, {regular.counts['interpolated']} interpolated), scaled by {scaled_by}"
            )
            table = pd.DataFrame(values, columns=self.value_columns)
            table.insert(0, self.time_column, [format_time(t) for t in times])
            if self.id_column:
                table.insert(0, self.id_column, key)
            tables.append(table)
        return pd.concat(tables, ignore_index=True), reports

    def read(self, frame: pd.DataFrame, where: str) -> dict[str, Regular]:
        """The regular series of a CSV table with this model's columns, by id (one, unnamed
        ``""``, without an id column)."""
        needed = [self.time_column, *self.value_columns] + ([self.id_column] if self.id_column else [])
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise InputError(
                f"{where}: no column(s) {missing} (it has {list(frame.columns)}); the model was trained on {needed}"
            )
        if not self.id_column:
            series = {"": regularize(frame[self.time_column], frame[self.value_columns], self.missing)}
        else:
            series = {
                str(key): regularize(group[self.time_column], group[self.value_columns], self.missing)
                for key, group in frame.groupby(self.id_column, sort=True)
            }
        for key, regular in series.items():
            if regular.counts[BAD_VALUE]:
                raise InputError(
                    f"{where}: series {key or '(the one)'} has {regular.counts[BAD_VALUE]} infinite value(s) "
                    "(inf, or a number beyond float64 such as 1e999): give finite numbers, or leave them empty"
                )
        return series

    def contents(self) -> dict[str, Any]:
        return {
            "scaling": self.scaling.to_dict(),
            "window": self.window,
            "horizon": self.horizon,
            "missing": self.missing,
            "time_column": self.time_column,
            "value_columns": self.value_columns,
            "id_column": self.id_column,
            "scales": {k: [list(c), list(s)] for k, (c, s) in self.scales.items()},
        }

    def serving(self) -> dict[str, Any]:
        """A table with the training columns (the time and id as text, the values as numbers), with
        ``steps`` (default: the training horizon) and ``series`` parameters: a signature, as no
        history long enough is at hand for an example."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

        columns = ([ColSpec("string", self.id_column)] if self.id_column else []) + [
            ColSpec("string", self.time_column),
            *(ColSpec("double", c, required=False) for c in self.value_columns),
        ]
        params = ParamSchema([ParamSpec("steps", "long", self.horizon), ParamSpec("series", "string", "")])
        return {"signature": ModelSignature(inputs=Schema(columns), params=params)}

    @classmethod
    def from_state(cls, model: Forecaster, state: dict[str, Any]) -> "ForecasterBundle":
        return cls(
            model,
            Scaling(**state["scaling"]),
            state["window"],
            state["horizon"],
            state["missing"],
            state["time_column"],
            list(state["value_columns"]),
            state["id_column"],
            {k: (list(c), list(s)) for k, (c, s) in state["scales"].items()},
            dict(state.get("info", {})),
        )


def mean_forecast(
    bundles: Sequence[ForecasterBundle], frame: pd.DataFrame, steps: int, where: str, name: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """``forecast_frame`` of an ensemble: each value the mean of the ``bundles``' forecasts (models
    trained on the same columns), with the first model's reports."""
    first = bundles[0]
    for other in bundles[1:]:
        if (other.time_column, other.value_columns, other.id_column) != (
            first.time_column,
            first.value_columns,
            first.id_column,
        ):
            raise CheckpointError(
                f"an ensemble's forecasters must read the same columns: "
                f"{first.time_column}, {first.value_columns}, id {first.id_column} against "
                f"{other.time_column}, {other.value_columns}, id {other.id_column}"
            )
    table, reports = first.forecast_frame(frame, steps, where, name)
    if len(bundles) > 1:
        tables = [table] + [b.forecast_frame(frame, steps, where, name)[0] for b in bundles[1:]]
        table[first.value_columns] = np.mean([t[first.value_columns].to_numpy() for t in tables], axis=0)
        reports.append(f"each value the mean of {len(bundles)} forecasters' forecasts")
    return table, reports
