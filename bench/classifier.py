"""Benchmark the sentiment classifier on SST-2 and SST-5 (sentence level, official splits), side by
side with a TF-IDF logistic regression, in one run.

    python bench/classifier.py [--data-dir ../shared/data] [--minutes 15] [--tasks sst2 sst5] [--phrases]
                               [--no-random] [--vectors DIR] [--seeds N] [--rnnmt k=v ...]

First word2vec vectors are trained by rnnmt on English Wikipedia (`bench/word2vec.py`'s
preprocessing and settings: one epoch of skip-gram with window updates, 200 dimensions, one worker
with two threads),
unless --vectors names a `jobs.train_word2vec` output; their time is reported. Then, for each task,
rnnmt's preprocessing with `conf/preprocess/<task>.yaml` (made once under bench/results) and three
contenders trained on its train split, chosen on its valid split (the official dev set) and scored
on its test split:
- `rnnmt`: `conf/train_classifier/sst.yaml` (a bidirectional LSTM with max pooling) on the
  word2vec vectors, fine-tuned, for at most `--minutes` of wall clock; with `--seeds N` once per
  seed 0..N-1 (its figures the mean, each run listed), and `rnnmt_ensemble` is the N models
  classifying the raw test sentences together (`jobs.classify`'s ensemble: mean probabilities);
- `rnnmt_random_embeddings`: the same with random embeddings (left out with --no-random);
- `tfidf_logreg`: scikit-learn's logistic regression on TF-IDF word 1-2-grams of the same
  normalized tokens, its C chosen on the dev set.
Training uses the training sentences, or with --phrases every labelled phrase of the training trees
(`conf/preprocess/<task>_phrases.yaml`; dev and test stay the sentences). Ends with one line of
JSON: per task and contender, test accuracy and macro-F1 in percent, with the published anchors
and the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from measure import cpu_name, preprocess_once, run_job  # noqa: E402
from word2vec import prepare as prepare_wikipedia  # noqa: E402
from word2vec import run_rnnmt as train_word2vec  # noqa: E402

ANCHORS = {
    "sst2": {"tai2015_lstm": 84.9, "tai2015_bilstm": 87.5, "kim2014_cnn_non_static": 87.2, "target": 84.9},
    "sst5": {"tai2015_lstm": 46.4, "tai2015_bilstm": 49.1, "kim2014_cnn_non_static": 48.0, "target": 46.4},
}


def word2vec_vectors(data_dir: Path, out: Path) -> tuple[Path, dict]:
    """rnnmt's word2vec vectors of Wikipedia, trained once under ``out`` (with how long they took)."""
    record = out / "bench-classifier.json"
    if record.is_file():
        return out, json.loads(record.read_text())
    started = time.perf_counter()
    prepared = prepare_wikipedia(data_dir, out.parent / "wikipedia-min5")
    preprocess_seconds = time.perf_counter() - started
    trained = train_word2vec(prepared, data_dir, 0, out, "1x2", "window", [])
    info = {
        "preprocess_seconds": round(preprocess_seconds, 1),
        "train_wall_seconds": trained["wall_seconds"],
        "words_per_sec": trained["words_per_sec"],
        "train_words": trained["train_words"],
        "analogy": trained["analogy"],
        "wordsim353": trained["wordsim353"],
    }
    record.write_text(json.dumps(info))
    return out, info


def rnnmt(prepared: Path, out: Path, minutes: float, vectors: Path | None, extra: list[str]) -> dict:
    """Train and test the classifier preset; its summary's figures."""
    cmd = [
        sys.executable,
        "-m",
        "jobs.train_classifier",
        "conf/train_classifier/sst.yaml",
        f"data_dir={prepared}",
        f"output_dir={out}",
        "overwrite=true",
        f"train.max_minutes={minutes}",
        f"run_name=bench-classifier-{out.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        "mlflow.registry_name=",  # tracked, not registered: a bench never takes the champion alias
        *([f"embeddings.path={vectors}"] if vectors else []),
        *extra,
    ]
    summary, wall, peak = run_job(cmd, PROJECT)
    return {
        "test_accuracy": round(summary["test_accuracy"], 2),
        "test_macro_f1": round(summary["test_macro_f1"], 2),
        "valid_accuracy": round(summary["valid_accuracy"], 2),
        "best_epoch": summary["best_epoch"],
        "epochs": summary["epochs"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(peak / 2**20),
    }


def ensemble(prepared: Path, checkpoints: list[Path]) -> dict:
    """Test accuracy and macro-F1 of the models classifying the raw test texts together (mean probabilities)."""
    import numpy as np
    from sklearn.metrics import f1_score

    from jobs.common.classifier_checkpoint import ClassifierBundle, mean_classify
    from pipelines.contract.labelled_shards import read_labelled
    from pipelines.contract.manifest import load_manifest

    manifest = load_manifest(prepared, "labelled")
    test = read_labelled(prepared, manifest["splits"]["test"]["files"], text=True)
    names = manifest["labels"]["names"]
    predictions = mean_classify([ClassifierBundle.load(c) for c in checkpoints], test.text)
    predicted = np.array([names.index(p.label) if p else -1 for p in predictions])
    return {
        "test_accuracy": round(100 * float(np.mean(predicted == test.labels)), 2),
        "test_macro_f1": round(
            100
            * float(f1_score(test.labels, predicted, labels=list(range(len(names))), average="macro", zero_division=0)),
            2,
        ),
        "models": len(checkpoints),
    }


def tfidf_logreg(prepared: Path) -> dict:
    """A logistic regression on TF-IDF 1-2-grams of the normalized tokens, C chosen on valid."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from pipelines.contract.labelled_shards import read_labelled
    from pipelines.contract.manifest import load_manifest
    from pipelines.contract.vocab import load_vocab

    started = time.perf_counter()
    manifest = load_manifest(prepared, "labelled")
    vocab, _ = load_vocab(prepared, manifest["vocab"]["words"])
    splits = {}
    for split in ("train", "valid", "test"):
        data = read_labelled(prepared, manifest["splits"][split]["files"])
        # the token ids as words: the tokens rnnmt's models read, [UNK] included
        splits[split] = ([" ".join(f"w{i}" for i in ids) for ids in data.ids], data.labels)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"\S+")
    train_x = vectorizer.fit_transform(splits["train"][0])
    best = None
    for c in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(train_x, splits["train"][1])
        accuracy = float(np.mean(model.predict(vectorizer.transform(splits["valid"][0])) == splits["valid"][1]))
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    accuracy, c, model = best
    predicted = model.predict(vectorizer.transform(splits["test"][0]))
    labels = splits["test"][1]
    return {
        "test_accuracy": round(100 * float(np.mean(predicted == labels)), 2),
        "test_macro_f1": round(100 * float(f1_score(labels, predicted, average="macro")), 2),
        "valid_accuracy": round(100 * accuracy, 2),
        "C": c,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=PROJECT.parent / "shared" / "data")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each rnnmt run")
    parser.add_argument("--tasks", nargs="+", choices=tuple(ANCHORS), default=list(ANCHORS))
    parser.add_argument("--phrases", action="store_true", help="train on every phrase of the training trees")
    parser.add_argument("--no-random", action="store_true", help="skip the run with random embeddings")
    parser.add_argument("--vectors", type=Path, help="a jobs.train_word2vec output to use instead of training one")
    parser.add_argument("--seeds", type=int, default=1, help="rnnmt runs per task (seeds 0, 1, ...) and their ensemble")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results")
    parser.add_argument("--rnnmt", nargs="*", default=[], help="extra key=value overrides for the training job")
    args = parser.parse_args()
    if not (args.data_dir / "sst").is_dir():
        sys.exit(f"error: {args.data_dir / 'sst'} not found (pass --data-dir)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.vectors:
        vectors, word2vec = args.vectors, {"given": str(args.vectors)}
    else:
        vectors, word2vec = word2vec_vectors(args.data_dir, args.out / "classifier-word2vec")
    suffix = "_phrases" if args.phrases else ""
    result: dict = {
        "cpu": cpu_name(),
        "word2vec": word2vec,
        "minutes": args.minutes,
        "training": "phrases" if args.phrases else "sentences",
    }
    for task in args.tasks:
        name = f"{task}{suffix}"
        prepared = preprocess_once([f"conf/preprocess/{name}.yaml"], args.data_dir, args.out / name, PROJECT)
        if args.seeds == 1:
            result[task] = {
                "rnnmt": rnnmt(prepared, args.out / f"classifier-{name}", args.minutes, vectors, args.rnnmt)
            }
        else:
            outs = [args.out / f"classifier-{name}-seed{seed}" for seed in range(args.seeds)]
            runs = [
                {"seed": seed, **rnnmt(prepared, out, args.minutes, vectors, [f"seed={seed}", *args.rnnmt])}
                for seed, out in enumerate(outs)
            ]
            mean = {k: round(sum(r[k] for r in runs) / len(runs), 2) for k in ("test_accuracy", "test_macro_f1")}
            # the first model alone through the same raw-text path: its accuracy must be the job's own
            check = ensemble(prepared, [outs[0] / "best"])["test_accuracy"]
            result[task] = {
                "rnnmt": {**mean, "runs": runs, "seed0_test_accuracy_from_raw_text": check},
                "rnnmt_ensemble": ensemble(prepared, [out / "best" for out in outs]),
            }
        if not args.no_random:
            result[task]["rnnmt_random_embeddings"] = rnnmt(
                prepared, args.out / f"classifier-{name}-random", args.minutes, None, args.rnnmt
            )
        result[task].update(tfidf_logreg=tfidf_logreg(prepared), anchors=ANCHORS[task])
        print(json.dumps({task: result[task]}), file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
