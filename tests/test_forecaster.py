"""The forecaster model: one shared projection per step, forecasts by feeding predictions back,
and it learns a seasonal series."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.contract.errors import ConfigError
from rnn_models.forecaster import Forecaster, ForecasterSettings


def test_shapes_and_one_projection_for_every_step():
    torch.manual_seed(0)
    model = Forecaster(ForecasterSettings(features=2, calendar=3, hidden_size=8, layers=2))
    values, calendar = torch.randn(4, 7, 2), torch.randn(4, 7, 3)
    predicted, _ = model(values, calendar)
    assert predicted.shape == (4, 7, 2)
    # the prediction at a step is the projection of the top layer's state there
    outputs, _ = model.rnn(torch.cat([values, calendar], -1))
    torch.testing.assert_close(predicted, model.projection(outputs))
    with pytest.raises(ConfigError, match="model.cell"):
        ForecasterSettings(cell="transformer")


def test_generate_feeds_each_prediction_back():
    torch.manual_seed(0)
    model = Forecaster(ForecasterSettings(features=1, calendar=2, hidden_size=8, layers=1)).eval()
    history, calendar = torch.randn(3, 5, 1), torch.randn(3, 5 + 4 - 1, 2)
    forecast = model.generate(history, 4, calendar)
    # the same by hand: run the whole sequence again, each time with the forecasts so far appended
    sequence = history
    for k in range(4):
        predicted, _ = model(sequence, calendar[:, : sequence.size(1)])
        torch.testing.assert_close(forecast[:, k], predicted[:, -1], rtol=1e-5, atol=1e-6)
        sequence = torch.cat([sequence, predicted[:, -1:]], dim=1)


def test_a_window_with_its_last_steps_fed_back_is_a_forecast_from_its_start():
    """Training on the forecast's own loop: the last ``fed`` inputs are never read, each replaced
    by the prediction before it; the head's predictions are the plain ones."""
    torch.manual_seed(0)
    model = Forecaster(ForecasterSettings(features=1, calendar=2, hidden_size=8, layers=2)).eval()
    values, calendar = torch.randn(3, 9, 1), torch.randn(3, 9, 2)
    predicted, _ = model(values, calendar, fed=4)
    assert predicted.shape == (3, 9, 1)
    plain, _ = model(values[:, :5], calendar[:, :5])
    torch.testing.assert_close(predicted[:, :5], plain)
    sequence = values[:, :5]  # by hand: the prediction after each step appended as the next input
    for k in range(5, 9):
        sequence = torch.cat([sequence, model(sequence, calendar[:, :k])[0][:, -1:]], dim=1)
    torch.testing.assert_close(predicted, model(sequence, calendar)[0], rtol=1e-5, atol=1e-6)
    unread = values.clone()
    unread[:, 5:] = 100.0
    torch.testing.assert_close(model(unread, calendar, fed=4)[0], predicted)


def test_it_learns_a_seasonal_series_and_forecasts_it_ahead():
    torch.manual_seed(0)
    t = np.arange(400)
    series = np.sin(2 * np.pi * t / 12) + 0.5 * np.sin(2 * np.pi * t / 5)
    windows = np.stack([series[s : s + 25] for s in range(0, 340)]).astype(np.float32)[..., None]
    inputs, targets = torch.as_tensor(windows[:, :-1]), torch.as_tensor(windows[:, 1:])
    model = Forecaster(ForecasterSettings(features=1, hidden_size=32, layers=1))
    history, truth = torch.as_tensor(series[350:374], dtype=torch.float32)[None, :, None], series[374:398]

    def error() -> float:
        with torch.no_grad():
            return float(np.sqrt(np.mean((model.eval().generate(history, 24)[0, :, 0].numpy() - truth) ** 2)))

    before = error()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for epoch in range(60):
        for batch in torch.randperm(len(inputs)).split(32):
            loss = torch.nn.functional.mse_loss(model(inputs[batch])[0], targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = error()
    naive = float(np.sqrt(np.mean((series[373] - truth) ** 2)))  # the last value, repeated
    assert before > 0.5 and after < 0.2 * naive, (before, after, naive)
