"""jobs.tune end to end: a small ASHA search over the translator on the toy corpus, its MLflow
parent and child runs, the best config training as it is, and resuming a finished search; a search
over the language model; every preset names keys its trainer knows."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from omegaconf import OmegaConf

from jobs import train_translator
from jobs import tune as job
from jobs.common.config import PROJECT_DIR, ConfigError, load_config, to_dict


def test_search_space_and_concurrency():
    space = job.search_space({"train.lr": {"loguniform": [1e-4, 1e-2]}, "model.cell": {"choice": ["lstm", "gru"]}})
    assert 1e-4 <= space["train.lr"].sample() <= 1e-2 and space["model.cell"].sample() in ("lstm", "gru")
    with pytest.raises(ConfigError, match="space.train.lr"):
        job.search_space({"train.lr": [1e-4, 1e-2]})
    trainer = {"train": {"num_workers": 1, "cpus_per_worker": 2, "use_gpu": False}}
    auto = {"max_concurrent": 0, "num_samples": 4}
    assert job.concurrency(auto, trainer, {"CPU": 2.0}) == (1, 1.9)  # shrunk to fit beside the trial's 0.1
    assert job.concurrency(auto, trainer, {"CPU": 16.0}) == (4, 2)  # no more trials at once than there are
    grid = {"max_concurrent": 0, "num_samples": 2, "space": {"train.lr": {"grid": [1, 2, 3]}, "x": {"choice": [1]}}}
    assert job.trial_count(grid) == 6 and job.concurrency(grid, trainer, {"CPU": 16.0}) == (6, 2)
    assert job.concurrency({"max_concurrent": 2, "num_samples": 4}, trainer, {"CPU": 2.0}) == (2, 0.9)
    gpu = {"train": {"num_workers": 2, "cpus_per_worker": 1, "use_gpu": True}}
    assert job.concurrency(auto, gpu, {"CPU": 16.0, "GPU": 4.0}) == (2, 1)
    from ray.tune.search.optuna import OptunaSearch

    assert isinstance(job._search_alg({"search": "optuna", "seed": 0}, 2), OptunaSearch)
    with pytest.raises(ConfigError, match="search must be one of random, optuna"):
        job._search_alg({"search": "grid", "seed": 0}, 2)


@pytest.mark.parametrize("preset", sorted((PROJECT_DIR / "conf/tune").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_searches_keys_its_trainer_knows(preset: Path):
    config = job.trainer_config(to_dict(load_config("tune", [str(preset)])))
    assert config["data_dir"].startswith("/")  # made absolute for the trials


@pytest.fixture(scope="module")
def data_dir(toy_pairs_data):
    return toy_pairs_data


@pytest.mark.slow
def test_asha_search_logs_trials_and_its_best_config_trains(tmp_path, data_dir, ray_local):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_args = [
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
        "mlflow.experiment=test-tune",
    ]
    args = [
        f"overrides.data_dir={data_dir}",
        "overrides.train.epochs=2",
        "overrides.train.num_workers=1",
        "overrides.train.batch_tokens=300",
        "overrides.model.embedding_size=16",
        "overrides.valid.test_split=",
        "overrides.valid.heatmaps=0",
        "overrides.decode.beam=2",
        "num_samples=1",
        "max_concurrent=1",
        # three trials in turn, the last clearly worse: ASHA has two results to compare it with
        "space={model.hidden_size: {choice: [8, 16]}, train.lr: {grid: [0.01, 0.005, 0.00000001]}}",
        "metric=valid_loss",
        "mode=min",
        f"storage_path={tmp_path / 'ray'}",
        f"output_dir={tmp_path / 'out'}",
        "name=tune-test",
        *mlflow_args,
    ]
    summary = job.run(args)
    assert summary["trials"] == 3 and summary["trials_failed"] == 0
    assert set(summary["best_params"]) == {"model.hidden_size", "train.lr"}

    client = mlflow.MlflowClient(uri)
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_valid_loss"] == summary["best_valid_loss"]
    trials = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == 3
    for trial in trials:  # ASHA may stop a trial after its first epoch: KILLED, never left RUNNING
        epochs = [m.step for m in client.get_metric_history(trial.info.run_id, "valid_loss")]
        assert trial.info.status == ("FINISHED" if epochs == [1, 2] else "KILLED"), (trial.info.status, epochs)
        assert epochs in ([1], [1, 2]) and trial.data.params["model.embedding_size"] == "16"
    (worst,) = [t for t in trials if float(t.data.params["train.lr"]) < 1e-6]
    assert worst.info.status == "KILLED"  # stopped by ASHA after its first epoch
    assert [m.step for m in client.get_metric_history(worst.info.run_id, "valid_loss")] == [1]
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert min(t["valid_loss"] for t in results) == summary["best_valid_loss"]
    assert summary["best_params"]["train.lr"] != 0.00000001

    best = OmegaConf.load(summary["best_config"])
    assert best.model.hidden_size == summary["best_params"]["model.hidden_size"] and best.data_dir == str(data_dir)
    trained = train_translator.run(
        [
            summary["best_config"],
            "train.epochs=1",
            f"output_dir={tmp_path / 'best'}",
            f"storage_path={tmp_path / 'ray'}",
            "run_name=best",
            *mlflow_args,
        ]
    )
    assert trained["epochs"] == 1 and (tmp_path / "best/best/translator.pt").is_file()

    again = job.run(args)  # the finished search is restored, not rerun
    assert again["mlflow_run_id"] == summary["mlflow_run_id"] and again["best_params"] == summary["best_params"]
    assert (
        len(client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")) == 3
    )


@pytest.mark.slow
def test_a_search_over_the_language_model(tmp_path, spark, toy_text, ray_local):
    from test_preprocess import config as preprocess_config

    from pipelines.spark.preprocess import preprocess

    text = tmp_path / "text"
    preprocess(
        spark,
        preprocess_config(
            [{"path": str(toy_text), "format": "text"}], "split.valid=0.1", "filter.max_len=1000", kind="monolingual"
        ),
        text,
        log=lambda m: None,
    )
    args = [
        str(PROJECT_DIR / "conf/tune/lm.yaml"),
        f"overrides.data_dir={text}",
        "overrides.train.epochs=2",
        "overrides.model.embedding_size=16",
        "overrides.model.hidden_size=16",
        "overrides.train.batch_size=4",
        "overrides.valid.samples=0",
        "overrides.valid.test_split=",
        "num_samples=2",
        "max_concurrent=1",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "mlflow.experiment=test-tune-lm",
        f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
        f"storage_path={tmp_path / 'ray'}",
        f"output_dir={tmp_path / 'out'}",
        "name=tune-lm-test",
    ]
    summary = job.run(args)
    assert summary["trials"] == 2 and summary["trials_failed"] == 0
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert min(t["valid_perplexity"] for t in results) == summary["best_valid_perplexity"] < 1000
    best = OmegaConf.load(summary["best_config"])
    assert best.model.cell == summary["best_params"]["model.cell"] and best.data_dir == str(text)
