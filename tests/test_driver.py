"""What the driver takes from a finished run's checkpoint: the last state and the best model, or a
clear error when there is no best model (every validation score was NaN or infinite)."""

from __future__ import annotations

import math

import pytest
from test_training_loop import Regression, _config

from jobs.common.driver import last_and_best
from jobs.common.training_loop import BEST_FILE, STATE_FILE, TrainingLoop
from pipelines.contract.errors import TrainingError


def _files(scores: list[float]) -> dict:
    """The checkpoint files a real loop reports after validations that score ``scores``."""
    reports: list = []
    TrainingLoop(
        Regression(_config(), scores), _config(epochs=len(scores)), report=lambda m, f: reports.append(f)
    ).fit()
    return reports[-1]


def test_the_best_model_and_the_last_state_of_a_run():
    last, best = last_and_best(_files([3.0, 1.0, 2.0]), "valid_score")
    assert best["metrics"]["epoch"] == 2 and last["progress"]["epoch"] == 3


def test_a_run_without_a_finite_validation_is_a_clear_error():
    """It was a KeyError traceback on the driver."""
    files = _files([math.nan, math.inf])
    assert files[STATE_FILE] is not None and files[BEST_FILE] is None
    with pytest.raises(TrainingError, match="no validation gave a finite valid_score, so there is no best model"):
        last_and_best(files, "valid_score")
