"""The word2vec job end to end: 2 DDP workers on CPU, MLflow, export read by gensim, resume."""

from __future__ import annotations

import io
import json

import mlflow
import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from test_preprocess import config as preprocess_config

from jobs import train_word2vec as job
from pipelines.contract.errors import CheckpointError, ManifestError
from pipelines.contract.vocab import load_vocab
from pipelines.spark.preprocess import preprocess
from rnn_models.skipgram import Word2Vec, Word2VecSettings
from rnn_models.word_vectors import init_embedding


@pytest.fixture(scope="module")
def data_dir(spark, tmp_path_factory, toy_text):
    out = tmp_path_factory.mktemp("w2v") / "data"
    cfg = preprocess_config(
        [{"path": str(toy_text), "format": "text"}],
        "filter.max_len=1000",
        "filter.dedup=false",
        "output.shards=3",
        kind="monolingual",
    )
    preprocess(spark, cfg, out, log=lambda m: None)
    return out


def _eval_files(tmp_path, words):
    analogy = tmp_path / "questions.txt"
    a, b, c, d, e, f = words[:6]
    analogy.write_text(f": capital-world\n{a} {b} {c} {d}\n{a} {b} zzzz {e}\n: gram1-x\n{c} {d} {e} {f}\n")
    similarity = tmp_path / "ws.tsv"
    similarity.write_text(f"# a comment\n{a}\t{b}\t7.5\n{c}\t{d}\t2\n{e}\t{f}\t4\n{a}\tzzzz\t1\n")
    return analogy, similarity


def _args(tmp_path, data_dir, out, uri, *extra):
    analogy, similarity = _eval_files(tmp_path, ["the", "of", "and", "in", "a", "to"])
    return [
        f"data_dir={data_dir}",
        f"output_dir={out}",
        f"storage_path={tmp_path / 'ray'}",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
        "mlflow.experiment=test-word2vec",
        "model.dim=16",
        "train.batch_words=200",
        "train.sync_every=5",
        "train.checkpoint_every=10",
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
        f"eval.analogy={analogy}",
        f"eval.similarity={similarity}",
        "eval.probes=[the,zzzz]",
        "eval.plot_words=20",
        *extra,
    ]


@pytest.mark.slow
def test_two_workers_train_export_and_resume(tmp_path, data_dir, ray_local, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "vectors"
    summary = job.run(_args(tmp_path, data_dir, out, uri, "run_name=w2v-test"))

    # the export opens in gensim, text and binary alike, with the vocabulary minus <go>/<eos>/[PAD]
    text = KeyedVectors.load_word2vec_format(str(out / "vectors.txt"))
    binary = KeyedVectors.load_word2vec_format(str(out / "vectors.bin"), binary=True)
    assert text.index_to_key == binary.index_to_key and text.index_to_key[:3] == ["[UNK]", "[NUM]", "[URL]"]
    assert np.allclose(text.vectors, binary.vectors, atol=1e-5) and text.vector_size == 16
    assert summary["words"] == len(text.index_to_key) and "<go>" not in text.key_to_index

    scores = json.loads((out / "eval.json").read_text())
    assert scores["analogy"]["covered"] == 2 and scores["analogy"]["questions"] == 3
    assert scores["similarity"]["covered"] == 3 and list(scores["neighbours"]) == ["the"]
    assert {p.name for p in out.iterdir()} == {"vectors.txt", "vectors.bin", "vocab.tsv", "eval.json", "projection.png"}

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test-word2vec").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model.dim"] == "16"
    progress = [m.value for m in client.get_metric_history(run.info.run_id, "progress")]
    assert progress[-1] == 1.0 and progress == sorted(progress)
    assert client.get_metric_history(run.info.run_id, "words_per_sec")[-1].value > 0
    assert "analogy.covered" in run.data.metrics and "similarity.spearman" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "vectors")}
    assert {"vectors/vectors.txt", "vectors/vectors.bin", "vectors/projection.png"} <= artifacts

    # the same run name resumes from the last checkpoint: one more epoch, not two (and the C loop's
    # checkpoint goes on with the tensor step)
    capsys.readouterr()
    again = job.run(
        _args(
            tmp_path, data_dir, out, uri, "run_name=w2v-test", "train.epochs=2", "overwrite=true", "train.loop=tensor"
        )
    )
    (_, rerun) = client.search_runs(
        [client.get_experiment_by_name("test-word2vec").experiment_id], order_by=["attributes.start_time ASC"]
    )
    epochs = {m.value for m in client.get_metric_history(rerun.info.run_id, "epoch")}
    assert epochs == {1.0} and again["words"] == summary["words"]
    # the resumed run starts from the trained vectors: its loss goes on below where the first run began
    first_losses = [m.value for m in client.get_metric_history(run.info.run_id, "loss")]
    resumed_losses = [m.value for m in client.get_metric_history(rerun.info.run_id, "loss")]
    assert resumed_losses[0] < first_losses[0] - 0.05, (first_losses, resumed_losses)
    resumed = KeyedVectors.load_word2vec_format(str(out / "vectors.txt"))
    assert not np.allclose(resumed.vectors, text.vectors)
    assert json.loads((out / "eval.json").read_text())["analogy"]["covered"] == 2

    # a checkpoint of another model is refused, not half loaded
    with pytest.raises(CheckpointError, match="checkpoint is of another model"):
        job.run(
            _args(tmp_path, data_dir, tmp_path / "other", uri, "run_name=w2v-test", "train.epochs=3", "model.dim=8")
        )
    assert not (tmp_path / "other").exists()
    (*_, refused) = client.search_runs(
        [client.get_experiment_by_name("test-word2vec").experiment_id], order_by=["attributes.start_time ASC"]
    )
    assert refused.info.status == "FAILED" and refused.data.params["model.dim"] == "8"


@pytest.mark.slow
def test_piece_vectors_export_with_their_pieces_and_initialise_a_translator(spark, tmp_path, toy_text, ray_local):
    data = tmp_path / "pieces"
    cfg = preprocess_config(
        [{"path": str(toy_text), "format": "text"}],
        "filter.max_len=1000",
        "vocab.kind=bpe",
        "vocab.max_size=500",
        "output.shards=2",
        kind="monolingual",
    )
    manifest = preprocess(spark, cfg, data, log=lambda m: None)
    out = tmp_path / "vectors"
    summary = job.run(
        _args(
            tmp_path,
            data,
            out,
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "run_name=w2v-pieces",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
        )
    )
    vectors = KeyedVectors.load_word2vec_format(str(out / "vectors.txt"))
    vocab, model = load_vocab(data, manifest["vocab"]["words"])
    assert (out / "pieces.model").read_bytes() == model.proto
    assert vectors.index_to_key == [t for t in vocab.tokens if t not in ("[PAD]", "<go>", "<eos>")]
    assert "\u2581the" in vectors.key_to_index  # piece strings, a word's start marked
    # the evaluation looks words up by their whole-word pieces ("the" -> "▁the")
    assert summary["analogy"]["covered"] >= 1 and summary["similarity"]["covered"] >= 2
    # a translator on the same pieces takes every exported vector
    embedding = torch.nn.Embedding(len(vocab), 16)
    coverage = init_embedding(embedding, vocab.tokens, vectors.index_to_key, torch.tensor(vectors.vectors), False)
    assert coverage.exact == len(vectors.index_to_key) and coverage.missing == 2  # <go>, <eos>


@pytest.mark.slow
def test_missing_inputs_and_bad_settings_are_clear(tmp_path):
    with pytest.raises(ManifestError, match="no manifest.json"):
        job.run([f"data_dir={tmp_path}", f"output_dir={tmp_path / 'o'}", "mlflow.enabled=false"])
    with pytest.raises(job.ConfigError, match="train.loop must be one of auto, c, tensor"):
        job.run([f"data_dir={tmp_path}", f"output_dir={tmp_path / 'o'}", "mlflow.enabled=false", "train.loop=cuda"])


@pytest.mark.c_loop
def test_the_loop_choice():
    cpu, gpu = job.torch.device("cpu"), job.torch.device("cuda")
    assert job.native_loop("c", cpu) and job.native_loop("auto", cpu) and not job.native_loop("tensor", cpu)
    assert not job.native_loop("auto", gpu)
    with pytest.raises(job.ConfigError, match="CPU only"):
        job.native_loop("c", gpu)


def test_restore_loads_the_checkpoint_model_and_refuses_another():
    counts = [0] * 6 + [5, 9, 2, 7]
    torch.manual_seed(0)
    model = Word2Vec(Word2VecSettings(10, dim=4), counts)
    torch.nn.init.normal_(model.output.weight)
    buffer = io.BytesIO()  # through torch's file format, as the checkpoint goes
    torch.save({"model": model.state_dict(), "epoch": 1, "step": 7, "settings": model.settings.to_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(1)
    fresh = Word2Vec(Word2VecSettings(10, dim=4), counts)
    assert job.restore(state, fresh) == job.Position(1, 7)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="checkpoint is of another model"):
        job.restore(state, Word2Vec(Word2VecSettings(10, dim=4, loss="negative"), counts))


def _sync_worker(rank: int, store: str, result: str) -> None:
    """One of two gloo workers: change some rows (rank 0: 1-3, rank 1: 3 and 7), sync each way, save."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    for rows in job.SYNC_ROWS:
        torch.manual_seed(0)
        model = Word2Vec(Word2VecSettings(12, 4), [0] * 6 + [5] * 6)
        sync = job.UpdateSync(model, rows)
        with torch.no_grad():
            for row in [1, 2, 3] if rank == 0 else [3, 7]:
                model.input.weight[row] += rank + 1
                model.output.weight[row] -= 0.5
        sync()
        torch.save({"tables": model.state_dict(), "sent": sync.sent}, f"{result}.{rows}.{rank}")
    dist.destroy_process_group()


def test_the_update_sync_adds_up_both_workers_changes(tmp_path):
    """Two real gloo processes: every worker ends with the initial tables plus both workers'
    changes, whether all rows or only the touched ones are all-reduced; the latter sends less."""
    result = str(tmp_path / "result")
    torch.multiprocessing.spawn(_sync_worker, args=(str(tmp_path / "store"), result), nprocs=2)
    torch.manual_seed(0)
    initial = Word2Vec(Word2VecSettings(12, 4), [0] * 6 + [5] * 6).state_dict()
    changed = torch.tensor([1, 2, 3, 3, 7])
    expected_in = initial["input.weight"].index_add(0, changed, torch.tensor([1.0, 1, 1, 2, 2])[:, None].expand(5, 4))
    expected_out = initial["output.weight"].index_add(0, changed, torch.full((5, 4), -0.5))
    for rows in job.SYNC_ROWS:
        done = [torch.load(f"{result}.{rows}.{rank}", weights_only=True) for rank in (0, 1)]
        for d in done:
            assert torch.allclose(d["tables"]["input.weight"], expected_in), rows
            assert torch.allclose(d["tables"]["output.weight"], expected_out), rows
        # three tables (input, output, NCE bias) of 12 rows; touched: a mask per table, then 4 changed
        # rows of the two 4-d tables
        expected_sent = {"all": (12 * 4 + 12 * 4 + 12) * 4, "touched": 3 * 12 * 4 + 2 * 4 * 4 * 4}[rows]
        assert done[0]["sent"] == done[1]["sent"] == expected_sent, rows
