"""The time-series forecaster: a window of values in, the next value at every step out.

A recurrent stack reads the values (plus, optionally, features of each step known in advance such
as the position in the year); one linear projection shared by every time step turns each state
into the prediction of the next values, so the targets are the inputs shifted by one step.
Forecasting further ahead feeds each prediction back in as the next input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines.contract.errors import ConfigError
from rnn_models.recurrent import CELLS, State, recurrent_layers
from rnn_models.settings import Settings


@dataclass(frozen=True)
class ForecasterSettings(Settings):
    """The shape of a forecaster; ``features`` and ``calendar`` come from the data, the rest are
    the ``model.*`` keys of the job's config."""

    prefix = "model."

    features: int = 1  # values per step (the series' value columns)
    calendar: int = 0  # known-in-advance inputs per step (calendar features)
    hidden_size: int = 64
    layers: int = 2
    cell: str = "lstm"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"model.cell must be one of {', '.join(CELLS)}; got {self.cell!r}")
        for name in ("features", "hidden_size", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.calendar < 0:
            raise ConfigError(f"calendar features must be >= 0, got {self.calendar}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


class Forecaster(nn.Module):
    """Values (B, T, features) and calendar features (B, T, calendar) -> the next values at every
    step (B, T, features) and the recurrent state after the last step."""

    def __init__(self, settings: ForecasterSettings):
        super().__init__()
        s = self.settings = settings
        self.rnn = recurrent_layers(s.cell, s.features + s.calendar, s.hidden_size, s.layers, s.dropout)
        self.dropout = nn.Dropout(s.dropout)
        self.projection = nn.Linear(s.hidden_size, s.features)  # shared by every time step

    def forward(
        self, values: torch.Tensor, calendar: torch.Tensor | None = None, state: State | None = None, fed: int = 0
    ) -> tuple[torch.Tensor, State]:
        """With ``fed`` > 0 the last ``fed`` steps of ``values`` are not read: each is replaced by the
        prediction before it, fed back, so the window's end is forecast from its start (training on
        the forecast's own loop); their predictions are returned like the others'."""
        head = values.size(1) - fed
        predicted, state = self._read(values[:, :head], calendar[:, :head] if calendar is not None else None, state)
        outputs = [predicted]
        for k in range(head, values.size(1)):  # each prediction is the next step's input
            predicted, state = self._read(
                predicted[:, -1:], calendar[:, k : k + 1] if calendar is not None else None, state
            )
            outputs.append(predicted)
        return torch.cat(outputs, dim=1), state

    def _read(
        self, values: torch.Tensor, calendar: torch.Tensor | None, state: State | None
    ) -> tuple[torch.Tensor, State]:
        inputs = values if not self.settings.calendar else torch.cat([values, calendar], dim=-1)
        outputs, state = self.rnn(inputs, state)
        return self.projection(self.dropout(outputs)), state

    def generate(self, history: torch.Tensor, steps: int, calendar: torch.Tensor | None = None) -> torch.Tensor:
        """The ``steps`` values (B, steps, features) after ``history`` (B, T, features): the first
        is the prediction after the history, each next one is predicted from the one before it
        fed back as input. ``calendar`` (B, T + steps - 1, calendar) holds the calendar of every
        step predicted: those of the history's steps (T), then of the values fed back."""
        unread = history.new_zeros(history.size(0), steps - 1, history.size(2))  # the steps fed back
        predicted, _ = self(torch.cat([history, unread], dim=1), calendar, fed=steps - 1)
        return predicted[:, history.size(1) - 1 :]
