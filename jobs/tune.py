"""Search a trainer's hyperparameters with Ray Tune: ASHA early stopping, random or Optuna search.

    python -m jobs.tune [CONFIG.yaml] [key=value ...]
    python -m jobs.tune conf/tune/word2vec.yaml num_samples=8

Each trial runs the training job itself (``jobs.train_translator``, ``jobs.train_word2vec``,
``jobs.train_lm``, ``jobs.train_classifier`` or ``jobs.train_forecaster``, the Ray Train V2
pattern: a function trainable that fits a TorchTrainer, whose reports reach Tune)
with the sampled keys as overrides. MLflow gets one parent run for the search and a child run per
trial (its params, metrics per epoch, and FINISHED, FAILED or KILLED at the end: trials ASHA stops
are marked KILLED). The best trial's config is written to ``output_dir/best.yaml``, which the
training job takes as it is. Rerunning the same ``name`` resumes an interrupted search.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from ray.tune import Callback

from jobs.common import cli
from jobs.common import progress as progress_bars
from jobs.common.config import PROJECT_DIR, ConfigError, flatten, load_config, to_dict, to_dotlist
from jobs.common.job_output import show_config
from jobs.common.ray_cluster import connect
from jobs.common.run_dirs import check_run_name, mark, remove_run
from jobs.common.tracking import mlflow_run, tracking_uri
from pipelines.contract.atomic import write_atomically
from pipelines.contract.errors import check_integer

TRAINERS = ("train_translator", "train_word2vec", "train_lm", "train_classifier", "train_forecaster")
SAMPLERS = ("choice", "grid", "uniform", "loguniform", "randint")
SEARCHES = ("random", "optuna")
TRIAL_CPU = 0.1  # the trial's own process: it starts the trainer and publishes its output


def search_space(space: dict[str, Any]) -> dict[str, Any]:
    """``{"train.lr": {"loguniform": [1e-4, 1e-2]}}`` -> Tune's sampling objects."""
    from ray import tune

    out = {}
    for key, spec in space.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ConfigError(
                f"space.{key} must be one of {{choice: [...]}}, {{grid: [...]}}, {{uniform: [low, high]}}, "
                f"{{loguniform: [low, high]}}, {{randint: [low, high]}}; got {spec!r}"
            )
        ((kind, values),) = spec.items()
        if kind == "choice":
            out[key] = tune.choice(list(values))
        elif kind == "grid":  # every value, in order, num_samples times each
            out[key] = tune.grid_search(list(values))
        else:
            out[key] = getattr(tune, kind)(*values)
    return out


def trial_count(config: dict[str, Any]) -> int:
    """How many trials the search runs: ``num_samples`` for every combination of the grid values."""
    return config["num_samples"] * math.prod(
        len(spec["grid"]) for spec in config.get("space", {}).values() if isinstance(spec, dict) and "grid" in spec
    )


def trainer_config(config: dict[str, Any]) -> dict[str, Any]:
    """The trainer's resolved config (preset and overrides applied, the search's ``mlflow`` and
    ``ray`` settings), its paths made absolute."""
    if not config["space"]:
        raise ConfigError("space is empty: give a preset (conf/tune/*.yaml) or space={key: {choice: [...]}, ...}")
    if config["trainer"] not in TRAINERS:
        raise ConfigError(f"trainer must be one of {TRAINERS}, got {config['trainer']!r}")
    # the trainer's own registry_name (trials register nothing; best.yaml keeps the trainer's name)
    shared = {
        "mlflow": {k: v for k, v in config["mlflow"].items() if k not in ("parent_run_id", "registry_name")},
        "ray": config["ray"],
    }
    argv = ([config["preset"]] if config["preset"] else []) + to_dotlist(config["overrides"]) + to_dotlist(shared)
    trainer = to_dict(load_config(config["trainer"], argv))
    unknown = [k for k in config["space"] if k not in flatten(trainer)]
    if unknown:
        raise ConfigError(f"space has keys that {config['trainer']} does not know: {unknown}")
    # paths made absolute here (the trainer's own PATH_KEYS), because trials run in other directories
    cfg = OmegaConf.create(trainer)
    for key in importlib.import_module(f"jobs.{config['trainer']}").PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value:
            OmegaConf.update(cfg, key, str(Path(value).resolve()))
    OmegaConf.update(cfg, "mlflow.tracking_uri", tracking_uri(trainer["mlflow"]))
    return to_dict(cfg)


def concurrency(config: dict[str, Any], trainer: dict[str, Any], resources: dict[str, float]) -> tuple[int, float]:
    """How many trials run at once, and the CPUs each of a trial's workers gets so that they fit
    the cluster (``max_concurrent`` 0: as many as fit at the trainer's ``cpus_per_worker``)."""
    t = trainer["train"]
    workers, cpus = t["num_workers"], resources.get("CPU", 1.0)
    fit = max(1, math.floor(cpus / (TRIAL_CPU + workers * t["cpus_per_worker"]) + 1e-9))
    if t["use_gpu"]:
        fit = min(fit, max(1, math.floor(resources.get("GPU", 0) / workers)))
    wanted = min(config["max_concurrent"] or fit, trial_count(config))
    per_worker = min(t["cpus_per_worker"], round((cpus / wanted - TRIAL_CPU) / workers, 2))
    if per_worker <= 0:
        raise ConfigError(f"{wanted} trials of {workers} workers do not fit {cpus:g} CPUs")
    return wanted, per_worker


def _trial(params: dict[str, Any], spec: dict[str, Any]) -> None:
    """One trial: the training job with the sampled keys, as a child of the search's MLflow run."""
    from ray import tune

    trial = tune.get_context().get_trial_id()
    trial_dir = Path(spec["trials_dir"]) / trial
    argv = [
        spec["trainer_yaml"],
        *to_dotlist(params),
        f"run_name={spec['name']}-{trial}",
        f"output_dir={trial_dir / 'output'}",
        f"storage_path={spec['trials_dir']}",
        "overwrite=true",
        f"train.cpus_per_worker={spec['cpus_per_worker']}",
        f"mlflow.parent_run_id={spec['parent_run_id']}",
        "mlflow.registry_name=",
    ]  # trials are not registered
    importlib.import_module(f"jobs.{spec['trainer']}").run(argv)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) the search; returns the summary it prints last."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    cfg = load_config("tune", argv)
    show_config(cfg, "tune")
    config = to_dict(cfg)
    trainer = trainer_config(config)
    space = search_space(config["space"])
    check_integer("num_samples", config["num_samples"], 1)
    check_integer("max_concurrent", config["max_concurrent"], 0, " (0: as many as fit)")
    if config["search"] not in SEARCHES:
        raise ConfigError(f"search must be one of {', '.join(SEARCHES)}, got {config['search']!r}")
    if config["search"] != "random" and any("grid" in spec for spec in config["space"].values()):
        raise ConfigError("space: {grid: [...]} needs search=random (Optuna samples, it does not enumerate)")
    storage = Path(config["storage_path"] or PROJECT_DIR / "ray_results").resolve()
    experiment_dir = storage / check_run_name("name", config["name"])
    output_dir = Path(config["output_dir"]).resolve()
    resources = connect(config["ray"])
    trials, cpus_per_worker = concurrency(config, trainer, resources)
    print(
        f"tune: {trial_count(config)} trials of {config['trainer']}, {trials} at a time, "
        f"{cpus_per_worker:g} CPUs per worker ({resources.get('CPU', 0):g} CPUs in the cluster)",
        flush=True,
    )
    restore = config["resume"] and tune.Tuner.can_restore(str(experiment_dir))
    if not restore:
        remove_run(experiment_dir, "search", "tune: starting over")
    mark(experiment_dir, "search")
    parent_file = experiment_dir / "mlflow_run_id"
    parent_id = parent_file.read_text().strip() if restore and parent_file.is_file() else None
    with mlflow_run(config["mlflow"], config["name"], params=config, run_id=parent_id) as mlflow:
        run_id = mlflow.active_run().info.run_id if config["mlflow"]["enabled"] else None
        write_atomically(parent_file, f"{run_id or ''}\n")
        write_atomically(experiment_dir / "trainer.yaml", OmegaConf.to_yaml(OmegaConf.create(trainer)))
        spec = {
            "trainer": config["trainer"],
            "trainer_yaml": str(experiment_dir / "trainer.yaml"),
            "name": config["name"],
            "trials_dir": str(experiment_dir / "trials"),
            "cpus_per_worker": cpus_per_worker,
            "parent_run_id": run_id,
        }
        trainable = tune.with_resources(tune.with_parameters(_trial, spec=spec), {"CPU": TRIAL_CPU})
        results = None
        try:
            if restore:
                print(f"tune: resuming the search in {experiment_dir}", flush=True)
                tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, resume_errored=True)
            else:
                tuner = tune.Tuner(
                    trainable,
                    param_space=space,
                    tune_config=tune.TuneConfig(
                        metric=config["metric"],
                        mode=config["mode"],
                        num_samples=config["num_samples"],
                        max_concurrent_trials=None if config["search"] == "random" else trials,
                        search_alg=_search_alg(config, trials),
                        # max_t past the last epoch: ASHA stops a trial at max_t, which would cut off
                        # the job's work after its last epoch (publishing its output, test scores)
                        scheduler=ASHAScheduler(
                            time_attr="training_iteration",
                            max_t=trainer["train"]["epochs"] + 1,
                            grace_period=config["scheduler"]["grace_period"],
                            reduction_factor=config["scheduler"]["reduction_factor"],
                        ),
                    ),
                    run_config=tune.RunConfig(
                        name=config["name"],
                        storage_path=str(storage),
                        callbacks=[TrialBar(trial_count(config), config["progress"])],
                    ),
                )
            results = tuner.fit()
        finally:
            if run_id:
                clean = {
                    f"{config['name']}-{r.metrics['trial_id']}"
                    for r in results or []
                    if not r.error and "trial_id" in (r.metrics or {})
                }
                _end_trial_runs(mlflow, run_id, clean)
        summary = _publish(config, trainer, results, output_dir, mlflow)
    summary["mlflow_run_id"] = run_id
    print(json.dumps(summary))
    return summary


class TrialBar(Callback):
    """A progress bar over the search's trials (ended, stopped early or failed), on a terminal."""

    def __init__(self, trials: int, progress: bool):
        self.bar = progress_bars.bar(progress, total=trials, desc="trials", unit=" trials")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.bar.update(1)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.bar.update(1)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.bar.close()


def _search_alg(config: dict[str, Any], trials: int) -> Any:
    from ray.tune.search import BasicVariantGenerator

    if config["search"] == "random":
        return BasicVariantGenerator(random_state=config["seed"], max_concurrent=trials)
    if config["search"] == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as err:
            raise ConfigError("search=optuna needs optuna: pip install 'rnnmt[tune]' (or optuna)") from err
        return OptunaSearch(seed=config["seed"])
    raise ConfigError(f"search must be one of {', '.join(SEARCHES)}, got {config['search']!r}")


def _end_trial_runs(mlflow: Any, parent_id: str, clean: set[str]) -> None:
    """Mark KILLED the trial runs that were stopped from outside: still RUNNING (Ctrl-C, a killed
    actor), or FAILED although Tune saw no error (ASHA's stop can surface in the trial as one)."""
    client = mlflow.MlflowClient()
    experiment = mlflow.get_run(parent_id).info.experiment_id
    for run in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'"):
        if run.info.status == "RUNNING" or (run.info.status == "FAILED" and run.info.run_name in clean):
            client.set_terminated(run.info.run_id, "KILLED")


def _publish(
    config: dict[str, Any], trainer: dict[str, Any], results: Any, output_dir: Path, mlflow: Any
) -> dict[str, Any]:
    """Write best.yaml (the trainer config with the best trial's keys) and results.json; log them."""
    metric, mode = config["metric"], config["mode"]
    trials = []
    for result in results:
        history = result.metrics_dataframe
        values = history[metric].dropna().tolist() if history is not None and metric in history else []
        trials.append(
            {
                "trial": result.path and Path(result.path).name,
                "params": result.config,
                metric: (max if mode == "max" else min)(values) if values else None,
                "epochs": len(values),
                "error": str(result.error) if result.error else None,
            }
        )
    trials.sort(key=lambda t: t["trial"] or "")  # ties go to the earliest trial, also after a resume
    scored = [t for t in trials if t[metric] is not None]
    if not scored:
        raise RuntimeError(f"no trial reported {metric!r}: see the errors in {results.experiment_path}")
    best = (max if mode == "max" else min)(scored, key=lambda t: t[metric])
    cfg = OmegaConf.create(trainer)
    for key, value in best["params"].items():
        OmegaConf.update(cfg, key, value)
    best_yaml = (
        f"# jobs.tune {config['name']}: the best of {len(trials)} trials ({metric} {best[metric]:.4g}).\n"
        f"# python -m jobs.{config['trainer']} {output_dir / 'best.yaml'} [key=value ...]\n" + OmegaConf.to_yaml(cfg)
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(output_dir / "best.yaml", best_yaml)
    write_atomically(output_dir / "results.json", json.dumps(trials, indent=2, default=str) + "\n")
    mlflow.log_artifact(str(output_dir / "best.yaml"))
    mlflow.log_artifact(str(output_dir / "results.json"))
    mlflow.log_metrics(
        {
            f"best_{metric}": best[metric],
            "trials": len(trials),
            "trials_failed": sum(t["error"] is not None for t in trials),
        }
    )
    mlflow.set_tags({f"best.{k}": v for k, v in best["params"].items()})  # tags: a resumed search may change them
    return {
        "best_config": str(output_dir / "best.yaml"),
        "best_params": best["params"],
        f"best_{metric}": best[metric],
        "trials": len(trials),
        "trials_failed": sum(t["error"] is not None for t in trials),
        "experiment_path": str(results.experiment_path),
    }


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
