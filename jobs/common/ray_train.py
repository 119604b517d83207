"""What the Ray Train jobs share: the start of a training run, the trainer built from a config,
collectives that also work with one worker, MLflow logging from rank 0, and path resolution for
workers that run elsewhere."""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from ray.train import UserCallback

from jobs.common import progress
from jobs.common.collectives import worker_log, world
from jobs.common.config import PROJECT_DIR, ConfigError, load_config, to_dict, to_yaml
from jobs.common.job_output import show_config
from jobs.common.ray_cluster import connect
from jobs.common.ray_private import in_tune_session, worker_failures, worker_progress_bar
from jobs.common.run_dirs import check_run_name, mark, remove_run
from jobs.common.torch_files import check_file, load_checked
from jobs.common.tracking import MetricsLog, log_dataset, mlflow_run, tracking_uri
from jobs.common.training_loop import BEST_FILE, STATE_FILE, Family, TrainingLoop
from pipelines.contract.errors import CheckpointError, OutputExistsError, UserError


def epoch_bar(config: dict[str, Any], rank: int, epoch: int, steps: int) -> Any:
    """Rank 0's progress bar over an epoch's ``steps`` when the driver shows bars (the driver draws
    it from the state lines Ray forwards: ``ray.experimental.tqdm_ray``), else None."""
    if rank != 0 or not config.get("progress_bars"):
        return None
    return worker_progress_bar(f"epoch {epoch}", steps, " steps")


class EpochMetrics(UserCallback):
    """Logs what the workers report (rank 0's numbers) to the job's MLflow run at step
    ``metrics[step_key]``; run by the Ray Train controller. A report reaches it only once its
    checkpoint is persisted, and an epoch already logged (redone after a restart from an earlier
    checkpoint) is not logged again (:class:`MetricsLog`), so each epoch appears once."""

    def __init__(self, tracking_uri: str, run_id: str, step_key: str = "epoch"):
        self.log, self.step_key = MetricsLog(tracking_uri, run_id), step_key

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        self.log(
            {k: v for k, v in metrics[0].items() if isinstance(v, (int, float))}, int(metrics[0].get(self.step_key, 0))
        )


def report(metrics: dict[str, Any], rank: int, files: dict[str, Any]) -> None:
    """Report an epoch to Ray Train; rank 0 attaches a checkpoint holding ``files`` (file name ->
    what ``torch.save`` writes there; None values are left out)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        for name, value in files.items():
            if value is not None:
                torch.save(value, Path(directory) / name)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def loop_worker(family: type[Family], config: dict[str, Any]) -> None:
    """A Ray Train worker: the shared training loop over ``family`` on this worker (DDP), from the
    latest readable checkpoint if there is one, reporting each validation to Ray Train."""
    from ray.train.torch import get_device, prepare_model

    rank, size = world()
    device = get_device()
    torch.set_num_threads(max(1, int(config["train"]["cpus_per_worker"])))
    loop = TrainingLoop(
        family(config, rank, size, device),
        config,
        rank,
        size,
        device,
        wrap=lambda model: prepare_model(model, move_to_device=False),
        report=lambda metrics, files: report(metrics, rank, files),
        log_metrics=MetricsLog.for_rank(config, rank),
        bar=lambda epoch, steps: epoch_bar(config, rank, epoch + 1, steps),
    )
    checkpoint = resumable_checkpoint()
    if checkpoint is not None:
        files = read_checkpoint(checkpoint, [STATE_FILE], device)
        if rank == 0:  # the best model so far stays on the CPU
            files.update(read_checkpoint(checkpoint, [BEST_FILE]))
        loop.restore(files)
    loop.fit()


def resumable_checkpoint() -> Any:
    """The checkpoint a (restarted or resumed) run goes on from (:func:`whole_checkpoint` of Ray
    Train's latest, said in rank 0's log); None for a new run."""
    import ray.train

    rank = world()[0]
    return whole_checkpoint(ray.train.get_checkpoint(), worker_log if rank == 0 else lambda line: None)


def whole_checkpoint(checkpoint: Any, say: Callable[[str], None] = print) -> Any:
    """``checkpoint`` (Ray Train's latest) when it is whole, else the newest earlier one kept beside
    it: a checkpoint without ``state.pt`` (a partial upload) or with a truncated or corrupt file
    is skipped, ``say`` naming why. None stays None; CheckpointError when none is whole."""
    import ray.train

    latest = Path(checkpoint.path) if checkpoint is not None else None
    if latest is None or not latest.is_dir():  # none, or not on a file system this node sees
        return checkpoint
    earlier = sorted(
        (p for p in latest.parent.glob("checkpoint_*") if p.is_dir() and p.name < latest.name), reverse=True
    )  # Ray names them checkpoint_<date>_<time>: by name is by age
    problems = []
    for directory in [latest, *earlier]:
        try:
            if not (directory / STATE_FILE).is_file():
                raise CheckpointError(f"{directory} has no {STATE_FILE} (a partial upload?)")
            for file in sorted(directory.glob("*.pt")):
                check_file(file)
        except CheckpointError as err:
            problems.append(str(err))
            say(f"{err}; trying the checkpoint before it")
            continue
        return checkpoint if directory == latest else ray.train.Checkpoint.from_directory(str(directory))
    raise CheckpointError(f"no readable checkpoint in {latest.parent}: {'; '.join(problems)}; resume=false starts over")


def read_checkpoint(checkpoint: Any, names: Sequence[str], device: torch.device | str = "cpu") -> dict[str, Any]:
    """The files of a Ray Train checkpoint that ``report`` wrote, by name (those present), checked
    and loaded with ``weights_only=True``."""
    with checkpoint.as_directory() as directory:
        return {
            name: load_checked(Path(directory) / name, device) for name in names if (Path(directory) / name).exists()
        }


@contextmanager
def training_run(
    job: str, argv: Sequence[str] | None, path_keys: Sequence[str], prepare: Callable[[dict[str, Any]], None]
) -> Iterator[tuple[DictConfig, dict[str, Any], Any]]:
    """The start every trainer shares: load and print the config, make its ``path_keys`` absolute
    (workers may run in another directory or on another machine), let ``prepare`` check the
    config and add what the workers need, refuse an existing output, open the job's MLflow run,
    connect to Ray, and let rank 0 log to that run (its id and tracking URI travel in the config).
    Yields the config as loaded, the worker config and the ``mlflow`` module (or its stand-in)."""
    cfg = load_config(job, argv)
    show_config(cfg, job)
    config = resolve_paths(to_dict(cfg), path_keys)
    prepare(config)
    config["progress_bars"] = progress.shown(config["progress"])  # the driver's terminal decides
    output_dir = Path(config["output_dir"])
    if output_dir.exists() and not config["overwrite"]:
        raise OutputExistsError(f"{output_dir} exists; pass overwrite=true to replace it")
    with mlflow_run(config["mlflow"], config["run_name"], params=to_dict(cfg)) as mlflow:
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        run = mlflow.active_run() if config["mlflow"]["enabled"] else None
        if run:
            log_dataset(mlflow, Path(config["data_dir"]))
        config["mlflow_run_id"] = run.info.run_id if run else None
        config["mlflow_tracking_uri"] = tracking_uri(config["mlflow"])
        connect(config["ray"])
        yield cfg, config, mlflow


def resolve_paths(config: dict[str, Any], path_keys: Sequence[str]) -> dict[str, Any]:
    """``data_dir`` and ``output_dir`` required, every set key of ``path_keys`` (dotted) made
    absolute, ``storage_path`` defaulted to ``<project>/ray_results``."""
    for key in ("data_dir", "output_dir"):
        if not config.get(key):
            raise ConfigError(f"{key} must be set (e.g. {key}=DIR)")
    for key in path_keys:
        *parents, name = key.split(".")
        section = config
        for parent in parents:
            section = section[parent]
        if section.get(name):
            section[name] = str(Path(section[name]).resolve())
    config["storage_path"] = str(Path(config["storage_path"] or PROJECT_DIR / "ray_results").resolve())
    return config


def fit(
    train_func: Callable[[dict[str, Any]], None], config: dict[str, Any], log_reports: bool = False, keep: int = 2
) -> Any:
    """Run ``train_func`` on ``train.num_workers`` Ray Train workers (DDP: gloo on CPU, NCCL on
    GPU) under ``run_name`` in ``storage_path``, which resumes an earlier run of that name unless
    ``resume`` is false; returns Ray's result (last metrics, latest checkpoint). With
    ``log_reports`` the reports go to the job's MLflow run (:class:`EpochMetrics`); inside a Ray Tune
    trial they also go to Tune. The ``keep`` latest checkpoints are kept (``result.best_checkpoints``)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    t = config["train"]
    previous = Path(config["storage_path"]) / check_run_name("run_name", config["run_name"])
    if not config.get("resume", True):
        remove_run(previous, "training", "resume=false: the earlier run's checkpoints")
    mark(previous, "training")
    callbacks: list[UserCallback] = []
    if log_reports and config.get("mlflow_run_id"):
        callbacks.append(EpochMetrics(config["mlflow_tracking_uri"], config["mlflow_run_id"]))
    if in_tune_session():
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        train_func,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=t["num_workers"], use_gpu=t["use_gpu"], resources_per_worker={"CPU": t["cpus_per_worker"]}
        ),
        run_config=RunConfig(
            name=config["run_name"],
            storage_path=config["storage_path"],
            failure_config=FailureConfig(max_failures=t["max_failures"]),
            checkpoint_config=CheckpointConfig(num_to_keep=max(2, keep)),
            callbacks=callbacks,
        ),
    )
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        return trainer.fit()
    except TrainingFailedError as error:
        # a user's mistake found by a worker (a checkpoint of another model, say) is reported as
        # the one-line error it is, not as a wrapped traceback
        mistakes = [f for f in worker_failures(error) if isinstance(f, UserError)]
        if mistakes:
            raise mistakes[0] from None
        raise
    except SystemExit as exit:
        # Train V2's SIGINT handler aborts the run and then calls sys.exit: make it the Ctrl-C it
        # was, so that the job's MLflow run ends KILLED rather than FAILED
        raise KeyboardInterrupt from exit
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)  # V2 leaves its handler installed after fit
