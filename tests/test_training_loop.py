"""The shared training loop, in-process and without Ray, on a tiny fake family: early stopping, the
time budget, the best model in both directions, learning-rate schedules, the validation cadence,
resuming, and non-finite gradients."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from jobs.common.config import CONF_DIR
from jobs.common.torch_files import load_checked
from jobs.common.training_loop import BEST_FILE, MAX_NONFINITE, STATE_FILE, Family, LoopSettings, TrainingLoop
from pipelines.contract.errors import CheckpointError, ConfigError, TrainingError
from rnn_models.batching import epoch_batches


class FakeClock:
    """A clock that moves only when told: one second per training step."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Regression(Family):
    """A small network with dropout fitting y = x . w on fixed data; its validation scores are the
    valid loss, or follow ``scores`` (one per validation) where given."""

    metric, higher_is_better, unit = "valid_score", False, "examples"

    def __init__(
        self,
        config: dict[str, Any],
        scores: list[float] | None = None,
        clock: FakeClock | None = None,
        poison: set[int] | None = None,
    ):
        self.config, self.scores, self.clock, self.poison = config, scores, clock, poison or set()
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(64, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.fingerprint = "regression"
        self.steps_taken, self.lrs, self.validated = 0, [], []

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))

    def batches(self, epoch: int) -> list:
        return epoch_batches(len(self.x), self.config["train"]["batch_size"], self.config["seed"], epoch)

    def step(self, batch, forward):
        if self.clock is not None:
            self.clock.t += 1.0
        self.lrs.append(self._optimizer_lr())
        loss = torch.nn.functional.mse_loss(forward(self.x[batch]).squeeze(1), self.y[batch])
        if self.steps_taken in self.poison:
            loss = loss * math.nan
        self.steps_taken += 1
        return loss, float(loss.detach()) * len(batch), len(batch)

    def _optimizer_lr(self) -> float:
        return self.loop.optimizer.param_groups[0]["lr"] if hasattr(self, "loop") else math.nan

    def validate(self, epoch: int) -> dict[str, Any]:
        self.validated.append(epoch)
        if self.scores is not None:
            return {"valid_score": self.scores[len(self.validated) - 1]}
        with torch.no_grad():
            self.model.eval()
            return {"valid_score": float(torch.nn.functional.mse_loss(self.model(self.x).squeeze(1), self.y))}


class Higher(Regression):
    higher_is_better = True


def _config(**train: Any) -> dict[str, Any]:
    """The shared loop's defaults (conf/training.yaml) with ``train`` overrides."""
    config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "training.yaml"))
    config["train"].update({"batch_size": 8, "epochs": 6, "lr": 0.05, "patience": 0, **train})
    config.update(run_name="test", seed=7)
    return config


def _loop(family: Regression, config: dict[str, Any], reports: list | None = None, **kwargs: Any) -> TrainingLoop:
    loop = TrainingLoop(
        family, config, report=(lambda m, f: reports.append((m, f))) if reports is not None else None, **kwargs
    )
    family.loop = loop
    return loop


def test_the_settings_are_read_typed_from_the_shared_defaults():
    settings = LoopSettings.from_config(_config(lr=0.02))
    assert settings.lr == 0.02 and settings.valid_every == 1 and settings.optimizer == "adam"
    assert settings.epochs == 6 and isinstance(settings.use_gpu, bool)  # conf/training.yaml, overridden


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("optimizer", "lbfgs", "train.optimizer must be one of adam, adamw, adagrad, sgd; got 'lbfgs'"),
        ("schedule", "cosine", "train.schedule must be one of constant, fixed, plateau"),
        ("epochs", 0, "train.epochs"),
        ("patience", 1.5, "train.patience"),
        ("max_failures", -1, "train.max_failures"),
        ("lr", 0, "train.lr must be > 0"),
        ("lr", math.inf, "train.lr must be finite, got inf"),
        ("lr", math.nan, "train.lr must be a number >= 0, got nan"),
        ("weight_decay", math.inf, "train.weight_decay must be finite"),
        ("lr_decay", 1.5, "train.lr_decay in"),
        ("clip_norm", "big", "train.clip_norm must be a number >= 0, got 'big'"),
        ("report_seconds", -1, "train.report_seconds must be a number >= 0"),
        ("cpus_per_worker", 0, "train.cpus_per_worker must be a number > 0, got 0"),
        ("use_gpu", "yes", "train.use_gpu must be true or false, got 'yes'"),
        ("amp", "fp8", "train.amp"),
    ],
)
def test_a_setting_that_cannot_work_is_named(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        LoopSettings.from_config(_config(**{key: value}))


@pytest.mark.parametrize("seed", [math.nan, -1, "7"])
def test_a_seed_that_cannot_seed_is_named(seed):
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        LoopSettings.from_config({**_config(), "seed": seed})


def test_early_stopping_after_exactly_patience_bad_validations():
    scores = [5.0, 4.0, 6.0, 4.5, 4.0, 3.0, 2.0, 1.0]  # the best at epoch 1; 2, 3 and 4 are no better
    reports: list = []
    family = Regression(_config(), scores)
    progress = _loop(family, _config(patience=3, epochs=8), reports).fit()
    assert family.validated == [0, 1, 2, 3, 4]
    assert progress.epoch == 5 and progress.best_epoch == 2 and progress.bad_validations == 3
    assert [m["stopped_early"] for m, _ in reports] == [False] * 4 + [True]
    # no patience: every epoch runs
    family = Regression(_config(), scores)
    assert _loop(family, _config(patience=0, epochs=8)).fit().epoch == 8


def test_the_time_budget_ends_an_epoch_early_and_it_is_validated():
    clock = FakeClock()
    family = Regression(_config(batch_size=1), clock=clock)  # 64 steps an epoch, one second each
    reports: list = []
    progress = _loop(family, _config(batch_size=1, max_minutes=0.5, epochs=3), reports, now=clock).fit()
    assert family.steps_taken == 30  # the budget is read every 10th step: 30 s are spent at the 30th
    assert family.validated == [0] and progress.epoch == 1
    assert reports[-1][0]["stopped_early"] and progress.train_seconds == 30.0


@pytest.mark.parametrize("family_type, best_epoch", [(Regression, 1), (Higher, 3)])
def test_the_best_model_by_the_familys_metric_and_direction(family_type, best_epoch):
    scores = [3.0, 1.0, 2.0, 5.0, 4.0]
    family = family_type(_config(), scores)
    weights: list = []
    reports: list = []
    loop = _loop(family, _config(epochs=5), reports)
    original = family.validate

    def validate(epoch):  # the weights each validation saw
        weights.append({k: v.clone() for k, v in family.model.state_dict().items()})
        return original(epoch)

    family.validate = validate
    progress = loop.fit()
    assert progress.best_epoch == best_epoch + 1 and progress.best_score == scores[best_epoch]  # counted from 1
    best = reports[-1][1][BEST_FILE]
    assert best["metrics"]["epoch"] == best_epoch + 1
    assert all(torch.equal(best["model"][k], weights[best_epoch][k]) for k in best["model"])
    assert [m["best_epoch"] for m, _ in reports] == ([1, 2, 2, 2, 2] if best_epoch == 1 else [1, 1, 1, 4, 4])


@pytest.mark.parametrize("family_type", [Regression, Higher])
def test_a_score_that_is_not_finite_is_never_the_best(family_type):
    scores = [math.inf if family_type is Regression else -math.inf, math.nan, 2.0, math.inf, -math.inf, math.nan]
    family = family_type(_config(), scores)
    reports: list = []
    progress = _loop(family, _config(epochs=6), reports).fit()
    assert progress.best_epoch == 3 and progress.best_score == 2.0
    assert [m["best_epoch"] for m, _ in reports] == [0, 0, 3, 3, 3, 3]
    assert reports[1][1][BEST_FILE] is None and reports[-1][1][BEST_FILE]["metrics"]["epoch"] == 3


def _epoch_lrs(family: Regression, config: dict[str, Any]) -> list[float]:
    steps = math.ceil(64 / config["train"]["batch_size"])
    return [round(lr, 6) for lr in family.lrs[::steps]]


@pytest.mark.parametrize(
    "schedule, extra, scores, expected",
    [
        ("constant", {}, None, [0.05] * 6),
        ("fixed", {"decay_after": 2}, None, [0.05, 0.05, 0.025, 0.0125, 0.00625, 0.003125]),
        ("fixed", {"decay_after": 2, "min_lr": 0.02}, None, [0.05, 0.05, 0.025, 0.02, 0.02, 0.02]),
        # plateau, one stale validation tolerated: the best at epoch 1, then the rate halves after the
        # 2nd stale validation (epoch 3) and again after the 2nd one since (epoch 5)
        ("plateau", {"lr_patience": 1}, [5.0, 4.0, 4.0, 4.0, 4.0, 4.0], [0.05, 0.05, 0.05, 0.05, 0.025, 0.025]),
        ("plateau", {"lr_patience": 0}, [5.0, 4.0, 4.5, 3.0, 3.5, 3.5], [0.05, 0.05, 0.05, 0.025, 0.025, 0.0125]),
    ],
)
def test_learning_rate_schedules(schedule, extra, scores, expected):
    config = _config(schedule=schedule, **extra)
    family = Regression(config, scores)
    _loop(family, config).fit()
    assert _epoch_lrs(family, config) == expected


def test_validation_every_n_epochs_and_after_the_last():
    config = _config(epochs=5)
    config["valid"]["every"] = 2
    family = Regression(config)
    reports: list = []
    _loop(family, config, reports).fit()
    assert family.validated == [1, 3, 4] and [m["epoch"] for m, _ in reports] == [2, 4, 5]


def _save(files: dict[str, Any], directory: Path) -> None:
    """A checkpoint through torch's files, as Ray Train stores it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        if value is not None:
            torch.save(value, directory / name)


def _load(directory: Path) -> dict[str, Any]:
    return {name: load_checked(directory / name) for name in (STATE_FILE, BEST_FILE) if (directory / name).exists()}


class Crash(Exception):
    pass


@pytest.mark.parametrize("stop_after", [0, 2, 4])
def test_a_resumed_run_ends_exactly_as_an_uninterrupted_one(tmp_path, stop_after):
    """Stopped after any epoch and resumed from its checkpoint, a run ends with the very weights,
    optimizer state, progress and random-generator state of one that was never stopped (on CPU, bit
    for bit): the per-epoch seeds make the resumed epochs draw the same dropout masks."""
    config = _config(epochs=6, optimizer="adam", schedule="plateau")
    whole = Regression(config)
    _loop(whole, config).fit()
    whole_rng = torch.get_rng_state()

    def crash_after(metrics, files):
        _save(files, tmp_path / "checkpoint")
        if metrics["epoch"] == stop_after + 1:
            raise Crash

    torch.manual_seed(999)  # whatever state the process is in when the run starts again
    with pytest.raises(Crash):
        TrainingLoop(Regression(config), config, report=crash_after).fit()
    torch.manual_seed(4242)
    resumed = Regression(config)
    loop = TrainingLoop(resumed, config)
    loop.restore(_load(tmp_path / "checkpoint"))
    assert loop.progress.epoch == stop_after + 1
    loop.fit()
    assert torch.equal(torch.get_rng_state(), whole_rng)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    ours, theirs = loop.optimizer.state_dict(), whole.loop.optimizer.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    for n, state in theirs["state"].items():
        assert all(torch.equal(ours["state"][n][k], v) for k, v in state.items())
    keep = ("epoch", "best_score", "best_epoch", "bad_validations", "stale_lr", "lr", "train_units")
    assert {k: getattr(loop.progress, k) for k in keep} == {k: getattr(whole.loop.progress, k) for k in keep}


def test_a_checkpoint_of_other_data_or_an_older_loop_is_refused(tmp_path):
    config = _config(epochs=1)
    family = Regression(config)
    reports: list = []
    _loop(family, config, reports).fit()
    files = reports[-1][1]
    other = Regression(config)
    other.fingerprint = "another vocabulary"
    with pytest.raises(CheckpointError, match="trained on other data"):
        TrainingLoop(other, config).restore(files)
    old = {**files[STATE_FILE], "progress": {"epoch": 1, "best_bleu": 3.0, "bad_epochs": 0}}
    with pytest.raises(CheckpointError, match="older rnnmt.*delete its directory"):
        TrainingLoop(Regression(config), config).restore({STATE_FILE: old})


def test_a_non_finite_gradient_skips_its_update_and_too_many_stop_training():
    config = _config(epochs=2)
    family = Regression(config, poison={3, 9})
    progress = _loop(family, config).fit()
    assert progress.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in family.model.parameters())
    assert progress.best_score < 30  # it still learned: the valid loss of untrained weights is far above

    family = Regression(config, poison=set(range(5, 100)))
    with pytest.raises(TrainingError, match=f"{MAX_NONFINITE} updates in a row had a non-finite gradient"):
        _loop(family, config).fit()
    assert family.steps_taken == 5 + MAX_NONFINITE


@pytest.mark.parametrize(
    "module, family",
    [
        ("jobs.train_translator", "TranslatorFamily"),
        ("jobs.train_lm", "LanguageModelFamily"),
        ("jobs.train_classifier", "ClassifierFamily"),
        ("jobs.train_forecaster", "ForecasterFamily"),
    ],
)
def test_every_family_pickles_by_value_as_when_its_job_runs_as_main(module, family):
    """``python -m jobs.train_<family>`` makes the family a class of ``__main__``, which Ray sends to
    its workers by value (cloudpickle): nothing in it may hold a lock (Python 3.11's cached_property does)."""
    import importlib

    import cloudpickle

    imported = importlib.import_module(module)
    cloudpickle.register_pickle_by_value(imported)
    try:
        assert cloudpickle.loads(cloudpickle.dumps(getattr(imported, family))).__name__ == family
    finally:
        cloudpickle.unregister_pickle_by_value(imported)
