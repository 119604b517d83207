"""The translator job end to end: 2 DDP workers on CPU, MLflow, best/last outputs, resume,
pretrained embeddings from a word2vec export, and jobs.evaluate on the result."""

from __future__ import annotations

import hashlib
import json

import mlflow
import numpy as np
import pytest
import torch

from jobs import evaluate
from jobs import train_translator as job
from jobs.common.checkpoint import BUNDLE_FILE, Bundle
from pipelines.contract.errors import CheckpointError, ConfigError, ManifestError
from pipelines.contract.parallel_shards import Pairs, read_pairs
from pipelines.contract.pieces import PieceModel, train_piece_model
from pipelines.contract.vocab import Vocab
from pipelines.text.normalize import NormalizeOptions, tokenize
from rnn_models.word_vectors import save_word2vec


@pytest.fixture(scope="module")
def data_dir(toy_pairs_data):
    return toy_pairs_data


def _args(tmp_path, data_dir, out, uri, *extra):
    return [
        f"data_dir={data_dir}",
        f"output_dir={out}",
        f"storage_path={tmp_path / 'ray'}",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_location={(tmp_path / 'artifacts').as_uri()}",
        "mlflow.experiment=test-translator",
        "model.embedding_size=16",
        "model.hidden_size=16",
        "train.batch_tokens=300",
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
        "train.epochs=2",
        "train.lr=0.01",
        "train.patience=0",
        "train.report_seconds=0",
        "valid.samples=3",
        "valid.heatmaps=2",
        "decode.beam=3",
        *extra,
    ]


@pytest.mark.slow
def test_two_workers_train_resume_and_evaluate(tmp_path, data_dir, ray_local, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "model"
    src_vocab = Vocab.load(data_dir / "vocab/src.tsv")
    words = list(src_vocab.tokens[6:40])
    vectors = torch.randn(len(words), 16)
    save_word2vec(tmp_path / "vectors.txt", words, vectors)
    summary = job.run(
        _args(tmp_path, data_dir, out, uri, "run_name=tr-test", f"embeddings.src={tmp_path}", "embeddings.freeze=true")
    )
    assert summary["epochs"] == 2 and summary["best"] == str(out / "best")
    assert {"test_greedy_bleu", "test_beam3_bleu", "test_greedy_chrf", "test_bleu_signature"} <= set(summary)
    assert summary["train_tokens_per_sec"] > 0
    assert {p.name for p in out.iterdir()} >= {"best", "last", "config.yaml", "attention-0.png"}
    # frozen pretrained source embeddings come out unchanged but for the one rescaling factor
    best = Bundle.load(out / "best")
    embedding = best.model.encoder.embedding.weight
    scale = embedding[6:40].norm() / vectors.norm()
    assert torch.allclose(embedding[6:40], vectors * scale, atol=1e-5)
    last_before = Bundle.load(out / "last")
    assert best.src_tokens == list(src_vocab.tokens) and best.info["decode"]["beam"] == 3

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("test-translator").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FINISHED" and run.data.params["model.hidden_size"] == "16"
    # a model-training experiment (the UI opens on its runs), the run's dataset the preprocessing output
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert dataset.name == data_dir.name and json.loads(dataset.source) == {"uri": str(data_dir / "manifest.json")}
    assert dataset.digest == hashlib.sha256((data_dir / "manifest.json").read_bytes()).hexdigest()[:16]
    bleu = client.get_metric_history(run.info.run_id, "valid_bleu")
    assert [m.step for m in bleu] == [1, 2]  # epochs count from 1
    valid_loss = [m.value for m in client.get_metric_history(run.info.run_id, "valid_loss")]
    assert valid_loss[1] < valid_loss[0] - 0.05, valid_loss  # it learns
    train_loss = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert "test_beam3_bleu" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best", "attention", "samples.json", "config.yaml"} <= artifacts
    (logged,) = client.search_logged_models([experiment])
    assert logged.source_run_id == run.info.run_id and logged.name == "model"
    # registered with its test BLEU, and champion as the first version
    assert summary["registry"]["version"] == 1 and summary["registry"]["reason"] == "no champion yet"
    first = client.get_model_version_by_alias("rnnmt-translator", "champion")
    assert int(first.version) == 1 and first.run_id == run.info.run_id
    assert first.tags["test_beam3_bleu"] == f"{summary['test_beam3_bleu']:.2f}"
    assert run.data.tags["registry.champion"] == "True"

    # the same run name resumes after the last epoch: only epoch 2 is trained
    again = job.run(
        _args(
            tmp_path,
            data_dir,
            out,
            uri,
            "run_name=tr-test",
            "train.epochs=3",
            "overwrite=true",
            f"embeddings.src={tmp_path}",
            "embeddings.freeze=true",
            "train.average_last=2",
        )
    )
    (_, rerun) = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    assert [m.step for m in client.get_metric_history(rerun.info.run_id, "valid_bleu")] == [3]
    # the resumed run goes on from the trained weights: its first loss continues the curve, far
    # below where the first run started (a model restored wrongly would start over near there)
    resumed = [m.value for m in client.get_metric_history(rerun.info.run_id, "train_loss")]
    assert resumed[0] < train_loss[0] - 0.08, (train_loss, resumed)
    assert client.get_metric_history(rerun.info.run_id, "valid_loss")[0].value < valid_loss[0]
    assert again["epochs"] == 3
    # the last two epochs averaged and validated; published as best only if it validates better
    averaging = again["averaging"]
    assert averaging["epochs"] == [2, 3]  # epochs count from 1
    assert averaging["published"] == (averaging["valid_bleu_averaged"] > averaging["valid_bleu_best_epoch"])
    assert ("averaged_epochs" in Bundle.load(out / "best").info) == averaging["published"]
    # both candidates are kept; best/ is the one published
    kept = {name: Bundle.load(out / name) for name in ("best", "best_epoch", "averaged")}
    assert kept["averaged"].info["averaged_epochs"] == [2, 3] and "averaged_epochs" not in kept["best_epoch"].info
    assert kept["averaged"].info["valid_bleu"] == averaging["valid_bleu_averaged"]
    assert kept["best_epoch"].info["valid_bleu"] == averaging["valid_bleu_best_epoch"]
    published = kept["averaged" if averaging["published"] else "best_epoch"].model.state_dict()
    other = kept["best_epoch" if averaging["published"] else "averaged"].model.state_dict()
    weights = kept["best"].model.state_dict()
    assert all(torch.equal(weights[k], published[k]) for k in weights)
    assert not all(torch.equal(weights[k], other[k]) for k in weights)
    assert {"valid_bleu_averaged", "valid_bleu_best_epoch"} <= set(client.get_run(rerun.info.run_id).data.metrics)
    # the second version takes the champion alias only if it scores better on the same test set
    second = again["registry"]
    assert second["version"] == 2 and second["test_set"] == summary["registry"]["test_set"]
    better = round(again["test_beam3_bleu"], 2) > round(summary["test_beam3_bleu"], 2)
    assert second["champion"] == better and "(its tag)" in second["reason"]
    assert int(client.get_model_version_by_alias("rnnmt-translator", "champion").version) == (2 if better else 1)
    last_after = Bundle.load(out / "last")
    assert not torch.equal(last_after.model.decoder.output.weight, last_before.model.decoder.output.weight)

    # jobs.evaluate scores the checkpoint on the test split, by name, greedy and beam
    scores = evaluate.run(
        [
            f"checkpoint={out / 'best' / BUNDLE_FILE}",
            f"mlflow.tracking_uri={uri}",
            "mlflow.experiment=test-translator",
            "beams=[1,2]",
            f"sets=[{{name: toy, data_dir: '{data_dir}', split: test}}]",
        ]
    )
    assert set(scores) == {"checkpoint", "toy_greedy", "toy_beam2"}
    assert scores["toy_greedy"]["sentences"] > 0 and "nrefs:1" in scores["toy_greedy"]["bleu_signature"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == scores


@pytest.mark.slow
def test_bad_settings_and_inputs_are_clear(tmp_path, data_dir):
    with pytest.raises(ManifestError, match="no manifest.json"):
        job.run([f"data_dir={tmp_path}", f"output_dir={tmp_path / 'o'}", "mlflow.enabled=false"])
    with pytest.raises(ConfigError, match="model.attention must be one of dot, general, bahdanau, none; got 'luong'"):
        job.run(
            [f"data_dir={data_dir}", f"output_dir={tmp_path / 'o'}", "mlflow.enabled=false", "model.attention=luong"]
        )


def test_subword_sampling_draws_the_training_pairs_anew_reproducibly(toy_pairs):
    lines = [line.split("\t") for line in toy_pairs.read_text(encoding="utf-8").splitlines()]
    texts = [
        [" ".join(tokenize(pair[side], NormalizeOptions.for_language(lang))) for pair in lines]
        for side, lang in ((0, "en"), (1, "fr"))
    ]
    src, tgt = (PieceModel(train_piece_model(t, "unigram", 300)) for t in texts)
    pairs = Pairs(
        [np.asarray(ids) for ids in src.encode(texts[0])], [np.asarray(ids) for ids in tgt.encode(texts[1])], None, None
    )
    kept = [ids.copy() for ids in pairs.src]
    sampler = job.SubwordSampler(pairs, src, tgt)
    first, again, other = (sampler.draw(0.5, seed) for seed in (3, 3, 5))
    assert all(np.array_equal(a, b) for a, b in zip(first.src + first.tgt, again.src + again.tgt))
    changed = sum(not np.array_equal(a, b) for a, b in zip(first.tgt, pairs.tgt))
    assert changed > len(pairs) // 4  # many sentences segmented otherwise than the most likely way
    assert any(not np.array_equal(a, b) for a, b in zip(first.src, other.src))  # another seed, another draw
    assert all(np.array_equal(a, b) for a, b in zip(pairs.src, kept))  # the preprocessed pairs stay as they were
    # a draw spells the same text
    assert [tgt.processor.decode(ids.tolist()) for ids in first.tgt] == texts[1]
    assert [src.processor.decode(ids.tolist()) for ids in first.src] == texts[0]


# A synthetic domain: word-by-word pairs built from words both toy vocabularies know (subject, verb, object).
DOMAIN = {
    "subject": [("tom", "tom"), ("i", "je"), ("you", "vous"), ("he", "il"), ("she", "elle"), ("we", "nous")],
    "verb": [("want", "veux"), ("have", "ai"), ("know", "sais"), ("like", "aime"), ("see", "vois")],
    "object": [
        ("cat", "chat"),
        ("dog", "chien"),
        ("book", "livre"),
        ("house", "maison"),
        ("car", "voiture"),
        ("money", "argent"),
        ("school", "école"),
    ],
}


def _domain_pairs(src_vocab: Vocab, tgt_vocab: Vocab) -> list[str]:
    known = {
        slot: [(e, f) for e, f in words if e in src_vocab.index and f in tgt_vocab.index]
        for slot, words in DOMAIN.items()
    }
    assert all(len(words) >= 3 for words in known.values()), known
    return [
        f"{s} {v} {o} .\t{s2} {v2} {o2} ."
        for s, s2 in known["subject"]
        for v, v2 in known["verb"]
        for o, o2 in known["object"]
    ]


@pytest.mark.slow
def test_fine_tuning_on_an_in_domain_corpus_raises_its_bleu(tmp_path, data_dir, spark, ray_local):
    from test_preprocess import config as preprocess_config

    from jobs.common.translation import translate_and_score
    from jobs.preprocess import given_vocabs
    from pipelines.contract.manifest import load_manifest
    from pipelines.spark.preprocess import preprocess

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    small = [
        "model.embedding_size=32",
        "model.hidden_size=32",
        "train.num_workers=1",
        "train.cpus_per_worker=1",
        "train.batch_tokens=200",
        "train.lr=0.01",
        "train.patience=0",
        "decode.beam=2",
    ]
    base = job.run(
        _args(
            tmp_path,
            data_dir,
            tmp_path / "base",
            uri,
            "run_name=ft-base",
            "train.num_workers=1",
            "train.epochs=2",
            *small,
        )
    )
    parent = Bundle.load(base["best"])

    # the in-domain corpus, encoded with the base model's vocabularies (vocab.from)
    corpus = tmp_path / "domain.tsv"
    src_vocab, tgt_vocab = (
        Vocab(tuple(parent.src_tokens), (0,) * len(parent.src_tokens)),
        Vocab(tuple(parent.tgt_tokens), (0,) * len(parent.tgt_tokens)),
    )
    corpus.write_text("\n".join(_domain_pairs(src_vocab, tgt_vocab)) + "\n", encoding="utf-8")
    domain = tmp_path / "domain"
    cfg = preprocess_config(
        [{"path": str(corpus), "format": "tsv"}], "split.valid=0.1", "split.test=0.2", f"vocab.from={base['best']}"
    )
    preprocess(spark, cfg, domain, log=lambda m: None, given=given_vocabs(base["best"], {}))
    manifest = load_manifest(domain, "parallel")
    assert manifest["vocab"]["src"]["fingerprint"] == Vocab.load(data_dir / "vocab/src.tsv").fingerprint()
    assert manifest["vocab"]["tgt"]["from"] == base["best"] and manifest["vocab_kind"] == "word"

    # the base model on the in-domain test split, then fine-tuned from it
    test = read_pairs(domain, manifest["splits"]["test"]["files"], text=True)
    before = translate_and_score(parent, test.src_text, test.tgt_text, parent.decode_settings(), 1)[0]["bleu"]
    tuned = job.run(
        _args(
            tmp_path,
            domain,
            tmp_path / "tuned",
            uri,
            "run_name=ft-tuned",
            "train.epochs=12",
            f"init_from={base['best']}",
            *small,
        )
    )
    print(f"in-domain test BLEU: base {before:.2f}, fine-tuned {tuned['test_greedy_bleu']:.2f}")
    assert tuned["test_greedy_bleu"] > before + 20
    run = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("test-translator").experiment_id],
        "tags.mlflow.runName = 'ft-tuned'",
    )[0]
    assert run.data.tags["parent_model"] == base["best"]
    assert Bundle.load(tmp_path / "tuned/best").info["parent_model"] == base["best"]

    # a model of another shape, or data with other vocabularies, is refused before training
    with pytest.raises(CheckpointError, match="model.hidden_size=16 here, 32 there"):
        job.run(
            _args(
                tmp_path,
                domain,
                tmp_path / "x",
                uri,
                "run_name=ft-x",
                f"init_from={base['best']}",
                *small,
                "model.hidden_size=16",
            )
        )
    with pytest.raises(CheckpointError, match="preprocess the data with vocab.from"):
        other = tmp_path / "other"
        preprocess(
            spark,
            preprocess_config([{"path": str(corpus), "format": "tsv"}], "split.valid=0.1", "split.test=0.2"),
            other,
            log=lambda m: None,
        )
        job.run(_args(tmp_path, other, tmp_path / "y", uri, "run_name=ft-y", f"init_from={base['best']}", *small))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.batch_tokens=0", "train.batch_tokens must be an integer >= 1"),
        ("train.batch_tokens=nan", "train.batch_tokens must be an integer >= 1, got 'nan'"),
        ("train.batch_sentences=-1", "train.batch_sentences must be an integer >= 0"),
        ("train.label_smoothing=inf", "train.label_smoothing must be a finite number in \\[0, 0.99\\]"),
        ("train.label_smoothing=1", "train.label_smoothing must be a finite number in"),
        ("train.subword_alpha=nan", "train.subword_alpha must be a finite number in \\[0, 1\\]"),
        ("valid.max_sentences=1e18", "valid.max_sentences must be an integer >= 0"),
        ("valid.samples=-1", "valid.samples must be an integer >= 0"),
        ("valid.heatmaps=inf", "valid.heatmaps must be an integer >= 0"),
        ("model.hidden_size=inf", "model.hidden_size must be an integer, got 'inf'"),
    ],
)
def test_a_number_that_cannot_work_is_refused_before_training(tmp_path, data_dir, setting, message):
    """Before the check these reached the workers (or were TypeError tracebacks)."""
    from jobs.common.config import load_config, to_dict
    from jobs.common.ray_train import resolve_paths

    config = resolve_paths(
        to_dict(load_config("train_translator", [f"data_dir={data_dir}", f"output_dir={tmp_path}", setting])),
        job.TranslatorTrainer.path_keys,
    )
    with pytest.raises(ConfigError, match=message):
        job.prepare(config)
