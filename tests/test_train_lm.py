"""The language-model job end to end (2 DDP workers on CPU, MLflow, best/last outputs, resume) and
jobs.generate on its result: reproducible samples, greedy at temperature 0, bad input refused."""

from __future__ import annotations

import math
from collections import Counter

import mlflow
import numpy as np
import pytest
from test_preprocess import config as preprocess_config

from jobs import generate
from jobs import train_lm as job
from jobs.common.lm_checkpoint import LMBundle
from pipelines.contract.errors import ConfigError, InputError
from pipelines.contract.manifest import load_manifest
from pipelines.spark.preprocess import preprocess

NUMBERS = "zero one two three four five six seven eight nine".split()


def _counting_lines(n: int, seed: int) -> list[str]:
    """Lines counting up from a random number: each word all but fixes the next."""
    rng = np.random.default_rng(seed)
    return [
        " ".join(NUMBERS[(start + k) % 10] for k in range(length))
        for start, length in zip(rng.integers(0, 10, n), rng.integers(3, 9, n))
    ]


@pytest.fixture(scope="module")
def counting(spark, tmp_path_factory):
    """Counting text as a word stream in input order (80/10/10 by hash), and its lines."""
    root = tmp_path_factory.mktemp("lm")
    lines = _counting_lines(900, 0)
    (root / "count.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = preprocess_config(
        [{"path": str(root / "count.txt"), "format": "text"}],
        "split.valid=0.1",
        "split.test=0.1",
        "filter.dedup=false",
        "output.order=input",
        kind="monolingual",
    )
    preprocess(spark, cfg, root / "data", log=lambda m: None)
    return root / "data", lines


def _args(tmp_path, data_dir, out, uri, *extra):
    return [
        f"data_dir={data_dir}",
        f"output_dir={out}",
        f"storage_path={tmp_path / 'ray'}",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
        "mlflow.experiment=test-lm",
        "model.embedding_size=24",
        "model.hidden_size=24",
        "model.layers=1",
        "train.batch_size=4",
        "train.bptt=12",
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
        "train.optimizer=adam",
        "train.lr=0.01",
        "train.clip_norm=5.0",
        "train.schedule=plateau",
        "train.report_seconds=0",
        "valid.samples=2",
        "valid.sample_tokens=12",
        *extra,
    ]


@pytest.mark.slow
def test_two_workers_learn_to_count_resume_and_generate(tmp_path, counting, ray_local, capsys):
    data_dir, lines = counting
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "lm"
    summary = job.run(_args(tmp_path, data_dir, out, uri, "run_name=lm-test", "train.epochs=3"))
    assert summary["epochs"] == 3 and summary["best"] == str(out / "best")
    # it learns: far below what the word frequencies alone give (the unigram model, by hand)
    counts = Counter(w for line in lines for w in line.split() + ["<eos>"])
    total = sum(counts.values())
    unigram = math.exp(-sum(c * math.log(c / total) for c in counts.values()) / total)
    assert unigram > 9 and summary["test_perplexity"] < 3.0, (unigram, summary["test_perplexity"])
    manifest = load_manifest(data_dir, "monolingual")
    test = manifest["splits"]["test"]
    assert summary["test_tokens"] == test["examples"] + test["tokens"]["words"] - 10  # all but each row's first
    assert "test_bits_per_char" not in summary and summary["train_tokens_per_sec"] > 0

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("test-lm").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FINISHED"
    ppl = [m.value for m in client.get_metric_history(run.info.run_id, "valid_perplexity")]
    assert len(ppl) == 3 and ppl[-1] < ppl[0], ppl
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert {"samples/epoch-001.txt", "samples/epoch-003.txt", "samples/best.txt"} <= artifacts
    assert "best/lm.pt" in {a.path for a in client.list_artifacts(run.info.run_id, "best")}
    # the logged model continues prompts (no pickle: models from code, lm.pt loaded weights-only)
    (logged,) = client.search_logged_models([experiment])
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(logged.model_uri)
        assert model.predict(["four five"], params={"tokens": 3, "temperature": 0.0}) == ["six seven eight"]
    finally:
        mlflow.set_tracking_uri(None)

    # registered: the first version is champion, its test perplexity its tag
    assert summary["registry"]["version"] == 1 and summary["registry"]["reason"] == "no champion yet"
    assert client.get_model_version("rnnmt-lm", "1").tags["test_perplexity"] == f"{summary['test_perplexity']:.2f}"

    # the same run name resumes after the last epoch: only epoch 3 is trained
    again = job.run(_args(tmp_path, data_dir, out, uri, "run_name=lm-test", "train.epochs=4", "overwrite=true"))
    assert again["epochs"] == 4
    (_, rerun) = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    assert [m.step for m in client.get_metric_history(rerun.info.run_id, "valid_perplexity")] == [4]
    # version 2, on the same test stream: champion only with a lower perplexity
    registry = again["registry"]
    assert registry["version"] == 2 and registry["test_set"] == summary["registry"]["test_set"]
    assert "(its tag)" in registry["reason"]
    assert registry["champion"] == (round(again["test_perplexity"], 2) < round(summary["test_perplexity"], 2))

    # generation: counting goes on, the same seed gives the same samples, temperature 0 is greedy
    capsys.readouterr()
    greedy = generate.run([str(out / "best"), "--prompt", "four five", "--words", "4", "--temperature", "0"])
    assert greedy["samples"] == ["four five six seven eight nine"]
    assert (
        generate.run([str(out / "best"), "--prompt", "four five", "--words", "4", "--temperature", "0", "--seed", "5"])[
            "samples"
        ]
        == greedy["samples"]
    )
    a = generate.run([str(out / "best"), "--num", "3", "--seed", "1", "--temperature", "2"])["samples"]
    b = generate.run([str(out / "best"), "--num", "3", "--seed", "1", "--temperature", "2"])["samples"]
    c = generate.run([str(out / "best"), "--num", "3", "--seed", "2", "--temperature", "2"])["samples"]
    assert a == b and a != c and len(a) == 3
    assert capsys.readouterr().out.startswith("four five six seven eight nine\n")
    # a long prompt keeps its end, and says so
    long = generate.run(
        [
            str(out / "best"),
            "--prompt",
            " ".join(NUMBERS * 3),
            "--max-context",
            "5",
            "--words",
            "1",
            "--temperature",
            "0",
        ]
    )
    assert long["truncated"] == 25 and long["samples"][0].startswith(" ".join(NUMBERS * 3))
    assert "the prompt has 30 tokens: the model read its last 5" in capsys.readouterr().err


def test_generate_refuses_bad_input(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"one two\nthree \xff four\n")
    with pytest.raises(InputError, match=r"bad.txt: line 2 is not valid UTF-8 \(invalid start byte at byte 6\)"):
        generate.run(["unused", "--prompt-file", str(bad)])
    with pytest.raises(ConfigError, match="--prompt or --prompt-file, not both"):
        generate.run(["unused", "--prompt", "x", "--prompt-file", str(bad)])
    with pytest.raises(Exception, match="no language model checkpoint"):
        generate.run([str(tmp_path / "nowhere")])


@pytest.mark.slow
def test_characters_of_a_text_in_order(spark, tmp_path, ray_local):
    lines = _counting_lines(300, 1)
    (tmp_path / "count.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = preprocess_config(
        [{"path": str(tmp_path / "count.txt"), "format": "text", "split_at": [0.8, 0.9]}],
        "vocab.kind=char",
        "normalize.tokenize=none",
        "filter.dedup=false",
        "output.order=input",
        kind="monolingual",
    )
    preprocess(spark, cfg, tmp_path / "data", log=lambda m: None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = job.run(
        _args(
            tmp_path,
            tmp_path / "data",
            tmp_path / "lm",
            uri,
            "run_name=lm-chars",
            "train.epochs=2",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
        )
    )
    assert summary["valid_bits_per_char"] == pytest.approx(summary["valid_loss"] / math.log(2))
    counts = Counter("\n".join(lines) + "\n")  # a unigram model of the characters, by hand
    unigram_bits = -sum(c * math.log2(c / sum(counts.values())) for c in counts.values()) / sum(counts.values())
    assert summary["test_bits_per_char"] < unigram_bits - 1.0, (summary["test_bits_per_char"], unigram_bits)
    bundle = LMBundle.load(tmp_path / "lm" / "best")
    assert bundle.kind == "char" and bundle.decode(bundle.encode("one two")) == "one two"
    out = generate.run([str(tmp_path / "lm" / "best"), "--prompt", "one tw", "--chars", "3", "--temperature", "0"])
    assert out["samples"][0].startswith("one tw") and len(out["samples"][0]) == len("one tw") + 3
    with pytest.raises(ConfigError, match="--words counts words: this is a char model"):
        generate.run([str(tmp_path / "lm" / "best"), "--words", "3"])
    # the time budget ends training within the first epoch (checked every 10 steps)
    budget = job.run(
        _args(
            tmp_path,
            tmp_path / "data",
            tmp_path / "lm-budget",
            uri,
            "run_name=lm-budget",
            "train.epochs=5",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
            "train.max_minutes=1e-4",
        )
    )
    assert budget["epochs"] == 1 and 0 < budget["train_tokens"] <= 10 * 4 * 12  # 10 segments of 4 x 12 at most
    assert summary["train_tokens"] > 10 * 4 * 12
