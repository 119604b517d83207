"""jobs.pipeline end to end on the toy corpora (one MLflow parent run, a child per stage, stage
reuse), and jobs.ui serving those runs over MLflow's REST API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import mlflow
import psutil
import pytest

from conftest import DATA, PROJECT, free_port, get_json, wait_for_server
from jobs import pipeline
from jobs.common.config import load_config, to_dict

pytestmark = pytest.mark.slow

STAGES = ["corpus", "text", "word2vec", "lm", "translator", "evaluate"]


@pytest.fixture(scope="module")
def first_run(spark, ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    args = [
        str(DATA / "pipeline-toy.yaml"),
        f"work_dir={tmp / 'work'}",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_location={(tmp / 'artifacts').as_uri()}",
        "mlflow.experiment=test-pipeline",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(PROJECT)  # the toy preset's paths are relative to the project
        yield tmp, args, uri, pipeline.run(args)


def _children(client, parent):
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {r.info.run_name: r for r in runs}


def test_stages_run_as_child_runs_of_one_parent(first_run, capsys):
    tmp, _, uri, summary = first_run
    assert summary["tracking_uri"] == uri and summary["reused"] == []
    assert 0 <= summary["bleu"] <= 100 and summary["bleu_signature"].startswith("nrefs:1")
    for stage in ("corpus", "text", "word2vec", "lm", "translator"):
        assert (tmp / "work" / stage).is_dir() and summary["outputs"][stage] == str(tmp / "work" / stage)
    assert (tmp / "work/word2vec/vectors.txt").is_file() and (tmp / "work/translator/best/translator.pt").is_file()
    report = (tmp / "work/report.md").read_text()
    assert "test_greedy_bleu" in report and summary["bleu_signature"] in report
    # the report leads with the test BLEU, then sample translations, the registry's decision and
    # word2vec's neighbours; no Python structures in its tables
    assert report.splitlines()[2].startswith("**Translator: test BLEU ") and "with beam 3" in report.splitlines()[2]
    assert "## Sample translations" in report and "Registry: `rnnmt-translator` version 1 is the new champion" in report
    assert "- **the**: " in report and "| no |" in report and "{'" not in report and "False" not in report
    assert "make ui" in report and "make serve" in report
    assert "lm_valid_perplexity" in report and (tmp / "work/lm/best/lm.pt").is_file()

    client = mlflow.MlflowClient(uri)
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "pipeline"
    children = _children(client, parent)
    assert set(children) == {f"pipeline-{s}" for s in STAGES}
    assert all(r.info.status == "FINISHED" for r in children.values())
    for stage in STAGES:  # the parent links each stage's run and output
        assert parent.data.tags[f"stage.{stage}.run_id"] == children[f"pipeline-{stage}"].info.run_id
    translator = children["pipeline-translator"]
    assert [m.step for m in client.get_metric_history(translator.info.run_id, "valid_bleu")] == [1, 2]
    assert translator.data.params["embeddings.src"] == str(tmp / "work/word2vec")
    assert translator.data.params["model.embedding_size"] == "16"
    assert {"report.md", "report.json", "config.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.metrics["test_greedy_bleu"] == pytest.approx(summary["bleu"])


def test_rerun_reuses_stages_and_reruns_what_changed(first_run, capsys, monkeypatch):
    tmp, args, uri, first = first_run
    monkeypatch.chdir(PROJECT)
    again = pipeline.run(args)
    assert again["reused"] == STAGES and again["bleu"] == first["bleu"]
    assert "] translator: reusing" in capsys.readouterr().out
    client = mlflow.MlflowClient(uri)
    assert _children(client, client.get_run(again["mlflow_run_id"])) == {}
    changed = pipeline.run(args + ["stages.evaluate.overrides.beams=[1]"])
    assert changed["reused"] == ["corpus", "text", "word2vec", "lm", "translator"]
    assert set(_children(client, client.get_run(changed["mlflow_run_id"]))) == {"pipeline-evaluate"}


def test_ui_serves_the_pipeline_runs(first_run):
    _, _, uri, summary = first_run
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jobs.ui", f"mlflow.tracking_uri={uri}", f"port={port}"],
        cwd=PROJECT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        experiment = wait_for_server(f"{api}/experiments/get-by-name?experiment_name=test-pipeline", server)
        # it listens on the loopback interface only (a 0.0.0.0 bind would answer above too)
        listening = {
            c.laddr
            for p in [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
            for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening and {address.ip for address in listening} == {"127.0.0.1"}, listening
        search = {"experiment_ids": [experiment["experiment"]["experiment_id"]], "max_results": 100}
        runs = get_json(f"{api}/runs/search", search)["runs"]
        by_id = {r["info"]["run_id"]: r for r in runs}
        parent = by_id[summary["mlflow_run_id"]]
        assert parent["info"]["status"] == "FINISHED"
        assert {p["key"] for p in parent["data"]["params"]} >= {"work_dir", "stages.translator.overrides.train.epochs"}
        children = [
            r for r in runs if {"key": "mlflow.parentRunId", "value": summary["mlflow_run_id"]} in r["data"]["tags"]
        ]
        assert len(children) == len(STAGES)
        translator = next(r for r in children if r["info"]["run_name"] == "pipeline-translator")
        assert {m["key"] for m in translator["data"]["metrics"]} >= {"valid_bleu", "valid_loss", "test_greedy_bleu"}
        artifacts = get_json(f"{api}/artifacts/list?run_id={translator['info']['run_id']}")["files"]
        assert {"best", "attention", "samples.json"} <= {a["path"] for a in artifacts}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_subword_text_is_segmented_by_the_corpus_piece_model(tmp_path):
    config = to_dict(load_config("pipeline", ["vocab_kind=bpe", f"work_dir={tmp_path}"]))
    stages = {s.name: s for s in pipeline.plan(config)}
    corpus, text = load_config("preprocess", stages["corpus"].argv), load_config("preprocess", stages["text"].argv)
    assert (corpus.vocab.kind, corpus.vocab.max_size, corpus.vocab["from"]) == ("bpe", 4000, None)
    # the text takes the corpus's pieces (so every word2vec vector is one the translator knows), after it
    assert text.vocab["from"] == str(tmp_path / "corpus") and stages["text"].upstream == ("corpus",)
    words = {s.name: s for s in pipeline.plan(to_dict(load_config("pipeline", [f"work_dir={tmp_path}"])))}
    assert load_config("preprocess", words["text"].argv).vocab["from"] is None and words["text"].upstream == ()
