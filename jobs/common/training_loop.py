"""The training loop every recurrent family shares, run once per worker.

A :class:`Family` supplies what is its own: the model, the batches of an epoch, one step's loss,
the validation metrics and the metric that decides the best model. The :class:`TrainingLoop` owns
the rest, the same for every family:

- the optimizer, the learning-rate schedule and bf16 autocast (:class:`LoopSettings`);
- seeding: the initial parameters from ``seed`` (the same on every worker), and every epoch's
  random draws (dropout masks) from the seed, the epoch and the worker, so that a resumed run draws
  what an uninterrupted one would;
- each step: forward under autocast, backward, the gradient's global norm clipped, the update; an
  update whose gradient is not finite is skipped on every worker (they share the gradient), and
  :data:`MAX_NONFINITE` in a row stop training with an error;
- the time budget (``train.max_minutes``) and progress reports (:class:`EpochClock`);
- validation every ``valid.every`` epochs (and after the last epoch, or one cut short by the time
  budget): the best model so far by the family's metric and direction, early stopping after
  ``train.patience`` validations without a better one, and a checkpoint report;
- restoring from such a checkpoint.

The loop knows nothing of Ray: it is given a ``wrap`` for the model (DDP under Ray Train) and a
``report`` for each validation's metrics and checkpoint files (Ray Train's, or a test's).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from jobs.common.collectives import broadcast, check_replicas, worker_log
from jobs.common.precision import autocast
from pipelines.contract.errors import CheckpointError, ConfigError, TrainingError

STATE_FILE, BEST_FILE = "state.pt", "best.pt"  # a checkpoint: the training state; the best model so far
OPTIMIZERS = ("adam", "adamw", "adagrad", "sgd")
SCHEDULES = ("constant", "fixed", "plateau")
MAX_NONFINITE = 5  # updates in a row skipped for a non-finite gradient before training stops


@dataclass
class Progress:
    """Where training stands; every checkpoint stores it, and a resumed run goes on from it."""

    epoch: int = 0  # epochs finished
    best_score: float = math.nan  # the best validation score so far (the family's metric), and its epoch
    best_epoch: int = 0  # (epochs count from 1 in reports, logs and MLflow; 0: none yet)
    bad_validations: int = 0  # validations since the best one (early stopping)
    stale_lr: int = 0  # validations without a better score since the learning rate last changed
    lr: float = 0.0  # the learning rate of the next epoch
    train_seconds: float = 0.0  # spent in training steps
    loop_seconds: float = 0.0  # wall clock of the epochs, validation included (train.max_minutes)
    train_units: float = 0.0  # units trained on (the family's: tokens, examples, windows), by all workers
    skipped_steps: int = 0  # updates skipped for a non-finite gradient


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a worker's random draws (dropout masks) in an epoch."""
    return seed * 1_000_003 + epoch * 101 + rank


@dataclass(frozen=True)
class LoopSettings:
    """The loop's settings: ``train.*`` of ``conf/training.yaml`` (each explained there) and
    ``valid.every``, typed and checked (:meth:`from_config`)."""

    epochs: int
    max_minutes: float
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    decay_after: int
    lr_decay: float
    lr_patience: int
    min_lr: float
    clip_norm: float
    patience: int
    amp: str
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    max_failures: int
    report_seconds: float
    valid_every: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LoopSettings:
        """The settings of a job's config; a ConfigError names the first key that cannot work."""
        from jobs.common.precision import amp_mode
        from pipelines.contract.errors import check_integer

        train, valid = config["train"], config["valid"]
        amp_mode(train["amp"])
        for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if train[key] not in allowed:
                raise ConfigError(f"train.{key} must be one of {', '.join(allowed)}; got {train[key]!r}")
        for key, value, low in (
            ("train.epochs", train["epochs"], 1),
            ("train.num_workers", train["num_workers"], 1),
            ("train.patience", train["patience"], 0),
            ("train.lr_patience", train["lr_patience"], 0),
            ("train.decay_after", train["decay_after"], 0),
            ("train.max_failures", train["max_failures"], 0),
            ("valid.every", valid["every"], 1),
            ("seed", config["seed"], 0),
        ):
            check_integer(key, value, low)
        for key in ("lr", "max_minutes", "clip_norm", "weight_decay", "min_lr", "report_seconds"):
            value = train[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"train.{key} must be a number >= 0, got {value!r}")
        for key in ("lr", "weight_decay", "min_lr"):  # the others may be infinite: no budget, no clipping
            if not math.isfinite(train[key]):
                raise ConfigError(f"train.{key} must be finite, got {train[key]!r}")
        if not train["lr"] > 0 or not 0 < train["lr_decay"] <= 1:
            raise ConfigError(
                f"train.lr must be > 0 and train.lr_decay in (0, 1]; got {train['lr']}, {train['lr_decay']}"
            )
        cpus = train["cpus_per_worker"]
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not cpus > 0:
            raise ConfigError(f"train.cpus_per_worker must be a number > 0, got {cpus!r}")
        if not isinstance(train["use_gpu"], bool):
            raise ConfigError(f"train.use_gpu must be true or false, got {train['use_gpu']!r}")
        own = {f.name for f in fields(cls)} - {"valid_every"}
        return cls(**{key: train[key] for key in own}, valid_every=valid["every"])

    def optimizer_for(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer ``optimizer`` names over the trained ``parameters``, at ``lr`` with
        ``weight_decay``; Adam and AdamW use their fused kernel (one pass over each parameter: 6% of
        a translator's CPU step, a quarter of a classifier's, less than the for-each form)."""
        params = [p for p in parameters if p.requires_grad]
        lr, decay = self.lr, self.weight_decay
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=decay, fused=True)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=decay, fused=True)
        if self.optimizer == "adagrad":
            return torch.optim.Adagrad(params, lr=lr, weight_decay=decay)
        return torch.optim.SGD(params, lr=lr, weight_decay=decay)


class Family(ABC):
    """What a model family supplies to the loop, one instance per worker: made with ``(config,
    rank, world, device)``, it reads its data; the loop then seeds and calls :meth:`build_model`."""

    metric: ClassVar[str]  # the validation metric that decides the best model, e.g. "valid_bleu"
    higher_is_better: ClassVar[bool]
    unit: ClassVar[str] = "tokens"  # what a step counts (progress and throughput are per unit)

    model: torch.nn.Module  # set by the loop from build_model, on the worker's device
    fingerprint: Any  # what a checkpoint must have been trained on to be resumed here

    @abstractmethod
    def build_model(self) -> torch.nn.Module:
        """The untrained model (the loop has seeded torch: the same parameters on every worker)."""

    def parameters(self) -> Iterable[torch.nn.Parameter]:
        """What the optimizer trains (frozen parameters are left out by it)."""
        return self.model.parameters()

    @abstractmethod
    def batches(self, epoch: int) -> Sequence[Any]:
        """This worker's batches of epoch ``epoch`` (an index from 0): as many on every worker, in an
        order fixed by the seed, the epoch and the worker count."""

    @abstractmethod
    def step(self, batch: Any, forward: Callable[..., Any]) -> tuple[torch.Tensor, float, float]:
        """One batch through ``forward`` (the model as the loop runs it: data-parallel, under
        autocast): the loss to differentiate, the loss summed over the batch's units (for
        reports) and the number of units."""

    @abstractmethod
    def validate(self, epoch: int) -> dict[str, Any]:
        """Rank 0's validation metrics (``metric`` among them) after epoch ``epoch`` (an index from 0;
        reports and logs count epochs from 1); called on rank 0 only."""

    def progress_metrics(self, loss: float) -> dict[str, float]:
        """Metrics derived from the mean training loss for progress reports (a perplexity, say)."""
        return {}

    def describe(self, metrics: dict[str, Any]) -> str:
        """The validation part of an epoch's log line."""
        return f"{self.metric} {metrics[self.metric]:.4g}"


class EpochClock:
    """Rank 0's clock, for every worker: at every 10th step of an epoch (the same steps on every
    worker) and at its last, it says whether the time budget (``max_minutes`` of epochs, ``spent``
    already; 0 = none) has run out and whether a progress report (every ``report_seconds``) is due,
    and moves the epoch's progress ``bar`` if there is one. ``now`` is the clock it reads."""

    def __init__(
        self,
        spent: float,
        max_minutes: float,
        report_seconds: float,
        device: torch.device,
        bar: Any = None,
        now: Callable[[], float] = time.perf_counter,
    ):
        self.spent, self.budget = spent, max_minutes * 60 or float("inf")
        self.report_seconds, self.device, self.bar, self.now = report_seconds, device, bar, now
        self.start = self.last_report = now()

    def check(self, step: int, steps: int) -> tuple[bool, bool]:
        """(out of time, report due) after ``step`` of ``steps``, as rank 0 sees it."""
        if step % 10 != 9 and step + 1 != steps:
            return False, False
        if self.bar is not None:
            self.bar.update(step + 1 - self.bar.n)
        now = self.now()
        out_of_time, report = (
            flag > 0
            for flag in broadcast(
                [self.spent + now - self.start >= self.budget, now - self.last_report >= self.report_seconds],
                self.device,
            )
        )
        if report:
            self.last_report = now
        return out_of_time, report

    def stop(self) -> float:
        """The epoch's seconds so far; its bar is closed."""
        if self.bar is not None:
            self.bar.close()
        return self.now() - self.start


Report = Callable[[dict[str, Any], dict[str, Any]], None]  # (metrics, checkpoint files: name -> torch.save'able)


class TrainingLoop:
    """Trains a :class:`Family` on one worker: epochs of steps, validations and checkpoint reports.

    ``wrap`` makes the model the steps run (DDP); ``report`` receives each validation's metrics and,
    on rank 0, the checkpoint files (``state.pt``: model, optimizer, progress, the family's
    fingerprint; ``best.pt``: the best model so far with its metrics); ``log_metrics`` (rank 0)
    receives progress reports; ``bar`` makes an epoch's progress bar; ``now`` is the clock."""

    def __init__(
        self,
        family: Family,
        config: dict[str, Any],
        rank: int = 0,
        world: int = 1,
        device: torch.device = torch.device("cpu"),
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        report: Report | None = None,
        log_metrics: Callable[[dict[str, float], int], None] | None = None,
        bar: Callable[[int, int], Any] | None = None,
        now: Callable[[], float] = time.perf_counter,
    ):
        self.family, self.config, self.rank, self.world, self.device = family, config, rank, world, device
        self.settings = LoopSettings.from_config(config)
        torch.manual_seed(config["seed"])  # the same initial parameters on every worker
        family.model = family.build_model().to(device)
        self.optimizer = self.settings.optimizer_for(family.parameters())
        self.forward_model = wrap(family.model) if wrap else family.model
        self.autocast = autocast(device, self.settings.amp)
        self.progress = Progress(lr=self.settings.lr)
        self.best_state: dict[str, Any] | None = None  # rank 0: the best model so far, on the CPU
        self.report, self.log_metrics, self.bar, self.now = report, log_metrics, bar, now
        self.nonfinite_in_a_row = 0

    # -- restoring ---------------------------------------------------------------------------------

    def restore(self, files: dict[str, Any]) -> None:
        """Go on from a checkpoint's files (as ``report`` got them; {}: start afresh)."""
        state = files.get(STATE_FILE)
        if state is None:
            return
        if state.get("vocab") != self.family.fingerprint:
            raise CheckpointError(
                f"run {self.config['run_name']!r}: the checkpoint was trained on other data "
                "(another vocabulary or shape) than this; use another run_name, or resume=false "
                "to start over"
            )
        known = {f.name for f in fields(Progress)}
        if not isinstance(state.get("progress"), dict) or set(state["progress"]) - known:
            raise CheckpointError(
                f"run {self.config['run_name']!r}: the checkpoint was written by an older rnnmt "
                "whose training loop kept other progress; use another run_name, or delete its directory "
                "under storage_path to start over"
            )
        self.family.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        self.best_state = files.get(BEST_FILE) if self.rank == 0 else None
        if self.rank == 0:
            worker_log(f"resumed from the checkpoint after epoch {self.progress.epoch}")

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self) -> Progress:
        """Epochs from where the progress stands until the last, early stopping or the time budget."""
        epochs, every = self.settings.epochs, self.settings.valid_every
        for epoch in range(self.progress.epoch, epochs):
            out_of_time = self.train_epoch(epoch)
            self.progress.epoch = epoch + 1
            self._fixed_schedule(epoch)
            if (out_of_time or (epoch + 1) % every == 0 or epoch + 1 == epochs) and self.end_validation(
                epoch, out_of_time
            ):
                break
        return self.progress

    def train_epoch(self, epoch: int) -> bool:
        """One epoch of steps over this worker's batches; True when the time budget ran out."""
        progress, family = self.progress, self.family
        torch.manual_seed(epoch_seed(self.config["seed"], epoch, self.rank))  # dropout masks
        for group in self.optimizer.param_groups:
            group["lr"] = progress.lr
        family.model.train()
        batches = family.batches(epoch)
        clock = EpochClock(
            progress.loop_seconds,
            self.settings.max_minutes,
            self.settings.report_seconds,
            self.device,
            self.bar(epoch, len(batches)) if self.bar else None,
            self.now,
        )
        window = [0.0, 0.0, 0.0]  # loss, units, seconds since the last progress report
        out_of_time = False
        for step, batch in enumerate(batches):
            started = self.now()
            loss_sum, units = self._step(batch, epoch, step)
            seconds = self.now() - started
            window = [window[0] + loss_sum, window[1] + units, window[2] + seconds]
            progress.train_seconds += seconds
            progress.train_units += units * self.world
            # rank 0's clock decides for all: is the time budget spent, is a progress report due
            out_of_time, due = clock.check(step, len(batches))
            if due:
                self._log_progress(window, epoch + (step + 1) / len(batches))
                window = [0.0, 0.0, 0.0]
            if out_of_time:
                break
        progress.loop_seconds += clock.stop()
        return out_of_time

    def _step(self, batch: Any, epoch: int, step: int) -> tuple[float, float]:
        """Forward, backward, clip, update; returns the batch's loss sum and units."""
        loss, loss_sum, units = self.family.step(batch, self._forward)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the global norm, clipped when train.clip_norm > 0; the same on every worker (DDP averaged the gradients)
        norm = torch.nn.utils.clip_grad_norm_(self.family.model.parameters(), self.settings.clip_norm or math.inf)
        if torch.isfinite(norm):
            self.optimizer.step()
            self.nonfinite_in_a_row = 0
            return loss_sum, units
        self.progress.skipped_steps += 1
        self.nonfinite_in_a_row += 1
        if self.rank == 0:
            worker_log(
                f"epoch {epoch + 1} step {step + 1}: the gradient is not finite (loss {loss_sum!r}); update skipped"
            )
        if self.nonfinite_in_a_row >= MAX_NONFINITE:
            raise TrainingError(
                f"training diverged: {MAX_NONFINITE} updates in a row had a non-finite gradient "
                f"(epoch {epoch + 1}, step {step + 1}); lower train.lr, set train.clip_norm, or train.amp=off"
            )
        return 0.0, 0.0

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        """The model as a step runs it: data-parallel, under autocast."""
        with self.autocast:
            return self.forward_model(*args, **kwargs)

    def _log_progress(self, window: list[float], epoch_progress: float) -> None:
        if self.log_metrics is None:
            return
        loss = window[0] / max(window[1], 1)
        unit = self.family.unit
        self.log_metrics(
            {
                "train_loss": loss,
                **self.family.progress_metrics(loss),
                f"{unit}_per_sec": window[1] * self.world / max(window[2], 1e-9),
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_progress": epoch_progress,
            },
            int(self.progress.train_units),
        )

    # -- validation, the best model, schedules and early stopping -----------------------------------

    def _fixed_schedule(self, epoch: int) -> None:
        """``train.schedule=fixed``: the learning rate times ``lr_decay`` after every epoch from
        ``decay_after`` on (never below ``min_lr``)."""
        if self.settings.schedule == "fixed" and epoch + 1 >= self.settings.decay_after:
            self.progress.lr = max(self.settings.min_lr, self.progress.lr * self.settings.lr_decay)

    def improved(self, score: float) -> bool:
        """Whether ``score`` is better than the best so far in the family's direction (a first
        finite score always is; a NaN or an infinity never)."""
        best = self.progress.best_score
        if not math.isfinite(score):
            return False
        if math.isnan(best):
            return True
        return score > best if self.family.higher_is_better else score < best

    def end_validation(self, epoch: int, out_of_time: bool) -> bool:
        """Validate, keep the best model, apply the plateau schedule, report with a checkpoint;
        returns whether training stops here (time budget or early stopping)."""
        t, progress, family = self.settings, self.progress, self.family
        started = self.now()
        metrics = family.validate(epoch) if self.rank == 0 else {}
        family.model.train()
        progress.loop_seconds += self.now() - started
        check_replicas(family.model, self.device)
        score = broadcast([metrics.get(family.metric, math.nan)], self.device)[0]  # rank 0's, on every worker
        better = self.improved(score)
        progress.bad_validations = 0 if better else progress.bad_validations + 1
        progress.stale_lr = 0 if better else progress.stale_lr + 1
        if t.schedule == "plateau" and progress.stale_lr > t.lr_patience:
            progress.lr, progress.stale_lr = max(t.min_lr, progress.lr * t.lr_decay), 0
        if better:
            progress.best_score, progress.best_epoch = score, epoch + 1
            if self.rank == 0:
                self.best_state = {
                    "model": {k: v.detach().cpu().clone() for k, v in family.model.state_dict().items()},
                    "metrics": dict(metrics, epoch=epoch + 1),
                }
        stop = out_of_time or bool(t.patience and progress.bad_validations >= t.patience)
        unit = family.unit
        metrics.update(
            epoch=epoch + 1,  # counted from 1, as epoch_progress at its end
            best_epoch=progress.best_epoch,
            lr=self.optimizer.param_groups[0]["lr"],
            train_seconds=progress.train_seconds,
            loop_seconds=progress.loop_seconds,
            **{
                f"train_{unit}": progress.train_units,
                f"train_{unit}_per_sec": progress.train_units / max(progress.train_seconds, 1e-9),
            },
            skipped_steps=progress.skipped_steps,
            stopped_early=bool(stop and epoch + 1 < t.epochs),
        )
        if self.rank == 0:
            worker_log(
                f"epoch {epoch + 1}: {family.describe(metrics)}, {metrics[f'train_{unit}_per_sec']:,.0f} {unit}/s"
            )
        if self.report is not None:
            self.report(metrics, self.checkpoint_files())
        return stop

    def checkpoint_files(self) -> dict[str, Any]:
        """What a checkpoint holds (rank 0's; {} elsewhere): what :meth:`restore` reads."""
        if self.rank != 0:
            return {}
        return {
            STATE_FILE: {
                "model": self.family.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "progress": asdict(self.progress),
                "vocab": self.family.fingerprint,
            },
            BEST_FILE: self.best_state,
        }
