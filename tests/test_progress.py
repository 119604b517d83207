"""Progress bars: drawn only on a terminal, and a worker's bar reaches the driver as Ray expects."""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch

from jobs.common import progress
from jobs.common.ray_private import worker_progress_bar
from jobs.common.ray_train import epoch_bar
from jobs.common.training_loop import EpochClock


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_and_when_wanted(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress.shown(True)
    with progress.bar(True, total=3) as bar:
        bar.update(3)
    assert sys.stderr.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress.shown(True) and not progress.shown(False)
    with progress.bar(True, total=3, desc="lines") as bar:
        bar.update(3)
    assert "lines: 100%" in sys.stderr.getvalue() and "3/3" in sys.stderr.getvalue()


@pytest.mark.parametrize("rank, bars, drawn", [(0, True, True), (1, True, False), (0, False, False)])
def test_rank_0_draws_the_epoch_bar_when_the_driver_shows_bars(rank, bars, drawn, capfd):
    bar = epoch_bar({"progress_bars": bars}, rank, 3, 40)
    assert (bar is not None) == drawn
    if drawn:
        bar.close()
        assert '"desc": "epoch 3"' in capfd.readouterr().out


def test_a_workers_bar_writes_its_state_lines_past_ray_trains_print(capfd):
    """The driver draws a worker's bar from JSON lines carrying Ray's tqdm token on the worker's
    stdout (ray.experimental.tqdm_ray); the epoch clock feeds it every 10th step and at the end."""
    clock = EpochClock(0.0, 0.0, 3600.0, torch.device("cpu"), epoch_bar({"progress_bars": True}, 0, 0, 25))
    for step in range(25):
        clock.check(step, 25)
    clock.stop()
    states = [json.loads(line) for line in capfd.readouterr().out.splitlines() if "__ray_tqdm_magic_token__" in line]
    assert states[0]["desc"] == "epoch 0" and states[0]["total"] == 25
    assert states[-1]["x"] == 25 and states[-1]["closed"]
    bar = worker_progress_bar("x", 2, " it")
    bar.update(2)
    bar.close()
    assert json.loads(capfd.readouterr().out.splitlines()[-1])["x"] == 2
