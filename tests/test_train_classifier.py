"""The classifier job end to end (2 DDP workers on CPU, MLflow, best/last outputs, resume) and
jobs.classify on its result: the same predictions from raw text, bad input refused."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from test_preprocess import config as preprocess_config

from jobs import classify
from jobs import train_classifier as job
from jobs.common.classifier_checkpoint import ClassifierBundle
from pipelines.contract.errors import CheckpointError, InputError
from pipelines.contract.labelled_shards import read_labelled
from pipelines.contract.manifest import load_manifest
from pipelines.contract.specials import SPECIALS
from pipelines.spark.preprocess import preprocess
from pipelines.text.normalize import NormalizeOptions
from rnn_models.classifier import Classifier, ClassifierSettings

SAMPLE = Path(__file__).resolve().parent.parent / "data/sample/sentiment-en.tsv.gz"


@pytest.fixture(scope="module")
def sentiment(spark, tmp_path_factory):
    """The first 3,000 lines of the generated sentiment sample, hash-split 80/10/10."""
    root = tmp_path_factory.mktemp("classifier")
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()[:3000]
    (root / "sentiment.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = preprocess_config(
        [{"path": str(root / "sentiment.tsv"), "format": "labelled"}],
        "split.valid=0.1",
        "split.test=0.1",
        "data.labels=[0,1]",
        kind="labelled",
    )
    preprocess(spark, cfg, root / "data", log=lambda m: None)
    return root / "data"


def _args(tmp_path, data_dir, out, uri, *extra):
    return [
        f"data_dir={data_dir}",
        f"output_dir={out}",
        f"storage_path={tmp_path / 'ray'}",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
        "mlflow.experiment=test-classifier",
        "model.embedding_size=24",
        "model.hidden_size=24",
        "train.batch_size=16",
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
        "train.lr=0.01",
        "train.report_seconds=0",
        "valid.misclassified=5",
        *extra,
    ]


@pytest.mark.slow
def test_two_workers_learn_sentiment_resume_and_classify(tmp_path, sentiment, ray_local, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "classifier"
    summary = job.run(
        _args(
            tmp_path,
            sentiment,
            out,
            uri,
            "run_name=cls-test",
            "train.epochs=4",
            "train.patience=0",
            "train.batch_tokens=300",
        )
    )
    assert summary["epochs"] == 4 and summary["labels"] == ["0", "1"]
    # it learns: far above always answering the most common test label (counted from the shards)
    manifest = load_manifest(sentiment, "labelled")
    test = read_labelled(sentiment, manifest["splits"]["test"]["files"], text=True)
    majority = 100 * max(test.labels.mean(), 1 - test.labels.mean())
    assert majority < 60 and summary["test_accuracy"] > 90, (majority, summary["test_accuracy"])
    assert summary["test_examples"] == len(test) and 0 < summary["test_macro_f1"] <= 100

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("test-classifier").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FINISHED"
    accuracy = client.get_metric_history(run.info.run_id, "valid_accuracy")
    assert [m.step for m in accuracy] == [1, 2, 3, 4]  # epochs count from 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "misclassified.jsonl", "best", "config.yaml"} <= artifacts
    # the logged model carries the metrics of the model it holds (the best epoch's), and its test scores, once each
    (model,) = client.search_logged_models([experiment])
    keys = [m.key for m in model.metrics]
    assert len(keys) == len(set(keys)), keys
    linked = {m.key: m.value for m in model.metrics}
    assert linked["epoch"] == linked["best_epoch"] == summary["best_epoch"] > 0
    assert linked["valid_accuracy"] == summary["valid_accuracy"]
    assert linked["test_accuracy"] == summary["test_accuracy"]
    # registered: the first version is the champion
    assert summary["registry"]["name"] == "rnnmt-classifier" and summary["registry"]["version"] == 1
    assert summary["registry"]["champion"]
    assert summary["registry"]["test_accuracy"] == round(summary["test_accuracy"], 2)

    # the same run name resumes after the last epoch: only epoch 4 is trained
    again = job.run(
        _args(
            tmp_path, sentiment, out, uri, "run_name=cls-test", "train.epochs=5", "overwrite=true", "train.patience=0"
        )
    )
    assert again["epochs"] == 5
    (_, rerun) = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    assert [m.step for m in client.get_metric_history(rerun.info.run_id, "valid_accuracy")] == [5]
    # version 2 takes the alias only with a higher accuracy on the same test examples
    decision = again["registry"]
    assert decision["version"] == 2 and decision["previous_champion_accuracy"] == pytest.approx(
        summary["test_accuracy"], abs=0.01
    )
    assert decision["champion"] == (round(again["test_accuracy"], 2) > round(summary["test_accuracy"], 2))

    # jobs.classify reads the raw test texts as the pipeline did: the same accuracy
    (tmp_path / "test.txt").write_text("\n".join(test.text) + "\n", encoding="utf-8")
    capsys.readouterr()
    counts = classify.run([str(out / "best"), "--input", str(tmp_path / "test.txt")])
    lines = capsys.readouterr().out.splitlines()
    assert counts == {"lines": len(test), "empty": 0, "truncated": 0, "classified": len(test)}
    right = sum(line.split("\t")[0] == str(label) for line, label in zip(lines, test.labels))
    assert 100 * right / len(test) == pytest.approx(again["test_accuracy"])
    # the logged model (models from code, no pickle) labels raw texts as jobs.classify does
    mlflow.set_tracking_uri(uri)
    try:  # the version the rerun registered
        logged = mlflow.pyfunc.load_model("models:/rnnmt-classifier/2")
    finally:
        mlflow.set_tracking_uri(None)
    predictions = logged.predict(list(test.text[:20]) + [""])
    assert [p["label"] for p in predictions[:20]] == [line.split("\t")[0] for line in lines[:20]]
    assert [f"{p['probability']:.4f}" for p in predictions[:20]] == [line.split("\t")[1] for line in lines[:20]]
    assert predictions[20] == {"label": None, "probability": None, "probabilities": {}}
    with pytest.raises(mlflow.exceptions.MlflowException, match="non-empty list"):
        logged.predict([])
    # every probability, as JSON Lines; an empty line stays empty
    (tmp_path / "two.txt").write_text("the plot was not dull .\n\nthe cast was not brilliant .\n")
    classify.run(
        [str(out / "best"), "--input", str(tmp_path / "two.txt"), "--all", "--output", str(tmp_path / "two.jsonl")]
    )
    first, empty, third = (tmp_path / "two.jsonl").read_text().split("\n")[:3]
    assert empty == "" and json.loads(first)["label"] == "1" and json.loads(third)["label"] == "0"
    assert sum(json.loads(first)["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # input that is not UTF-8: the line named, no output file
    (tmp_path / "bad.txt").write_bytes(b"fine\nnot \xff fine\n")
    with pytest.raises(InputError, match=r"bad.txt: line 2 is not valid UTF-8 \(invalid start byte at byte 4\)"):
        classify.run([str(out / "best"), "--input", str(tmp_path / "bad.txt"), "--output", str(tmp_path / "bad.out")])
    assert not (tmp_path / "bad.out").exists()
    bundle = ClassifierBundle.load(out / "best")
    cut = bundle.classify(["the plot was not dull ."], max_tokens=2)[0]
    assert cut.truncated and not bundle.classify(["the plot was not dull ."])[0].truncated


def test_classify_refuses_bad_input(tmp_path):
    (tmp_path / "good.txt").write_text("fine\n")
    with pytest.raises(CheckpointError, match="no classifier checkpoint"):
        classify.run([str(tmp_path / "nowhere"), "--input", str(tmp_path / "good.txt")])
    with pytest.raises(InputError, match="--input .*missing.txt: no such file"):
        classify.run([str(tmp_path), "--input", str(tmp_path / "missing.txt")])
    with pytest.raises(InputError, match="--max-tokens must be >= 0"):
        classify.run([str(tmp_path), "--max-tokens", "-1"])


def _untrained(path: Path, labels: list[str], seed: int) -> Path:
    """A classifier checkpoint of untrained weights over a few words (an ensemble needs no trained one)."""
    torch.manual_seed(seed)
    tokens = [*SPECIALS, "good", "bad", "film", "plot"]
    model = Classifier(ClassifierSettings(vocab=len(tokens), classes=len(labels), embedding_size=8, hidden_size=8))
    ClassifierBundle(model, tokens, "word", NormalizeOptions(), "en", labels).save(path)
    return path


def test_several_checkpoints_classify_with_their_mean_probabilities(tmp_path, capsys):
    """An ensemble's probabilities are each label's mean over its members' (each run on its own
    here), its label their argmax; members with other labels are refused."""
    labels = ["neg", "pos", "mid"]
    one, two = _untrained(tmp_path / "a.pt", labels, 0), _untrained(tmp_path / "b.pt", labels, 1)
    texts = tmp_path / "in.txt"
    texts.write_text("good film\nbad plot\n\nfilm plot good bad\n", encoding="utf-8")

    def probabilities(*checkpoints: Path) -> list[dict | None]:
        classify.run([*map(str, checkpoints), "--input", str(texts), "--all"])
        return [json.loads(line) if line else None for line in capsys.readouterr().out.split("\n")[:4]]

    alone, other, both = probabilities(one), probabilities(two), probabilities(one, two)
    assert both[2] is None and alone[2] is None
    for a, b, mean in zip(alone, other, both):
        if mean is None:
            continue
        expected = {k: (a["probabilities"][k] + b["probabilities"][k]) / 2 for k in labels}
        assert mean["probabilities"] == pytest.approx(expected, abs=2e-6)
        assert mean["label"] == max(expected, key=expected.get)
    assert any(
        a["label"] != b["label"] or abs(a["probability"] - b["probability"]) > 1e-3 for a, b in zip(alone, other) if a
    )  # two different models
    with pytest.raises(CheckpointError, match="must have the same labels"):
        classify.run([str(one), str(_untrained(tmp_path / "c.pt", ["pos", "neg", "mid"], 0)), "--input", str(texts)])


@pytest.mark.parametrize(
    "override, message",
    [
        ("valid.test_split=dev", "valid.test_split must be train, valid or test"),
        ("train.optimizer=lbfgs", "train.optimizer must be one of"),
        ("train.batch_size=0", "train.batch_size must be an integer >= 1"),
        ("train.batch_tokens=-1", "train.batch_tokens must be an integer >= 0"),
        ("train.label_prior=test", "train.label_prior must be one of"),
    ],
)
def test_bad_settings_are_refused_before_training(override, message):
    from jobs.common.config import load_config, to_dict
    from pipelines.contract.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        job.prepare(to_dict(load_config("train_classifier", [override])))


def test_batches_by_tokens_hold_every_example_once_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=1000)
    train = {"batch_size": 16, "batch_tokens": 120}
    batches = job.training_batches(lengths, train, seed=3, epoch=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) <= 16 and (len(b) == 1 or len(b) * lengths[b].max() <= 120) for b in batches)
    # similar lengths together: far fewer padded positions than batches of 16 in random order
    padded = sum(len(b) * lengths[b].max() for b in batches)
    shuffled = job.training_batches(lengths, {**train, "batch_tokens": 0}, seed=3, epoch=1)
    assert [len(b) for b in shuffled[:-1]] == [16] * (len(shuffled) - 1)
    assert padded < 0.7 * sum(len(b) * lengths[b].max() for b in shuffled)
    # the same for the same seed and epoch, another order in the next epoch
    again = job.training_batches(lengths, train, seed=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(job.training_batches(lengths, train, 3, 2)))


def test_label_shift_turns_the_training_label_frequencies_into_the_valid_splits():
    # add-one smoothed: train (3+1, 1+1) / 6, valid (1+1, 3+1) / 6
    manifest = {"labels": {"names": ["neg", "pos"], "counts": {"train": [3, 1], "valid": [1, 3], "test": [5, 5]}}}
    assert job.label_shift(manifest, "train") == ()
    assert job.label_shift(manifest, "valid") == pytest.approx((math.log(2 / 4), math.log(4 / 2)))
