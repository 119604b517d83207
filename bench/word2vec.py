"""Benchmark rnnmt's word2vec against gensim on the same tokens, side by side in one run.

    python bench/word2vec.py [--data-dir ../shared/data] [--words N] [--prepared DIR] [--layouts 1x2 2x1]
                             [--updates window pair]

Both train one epoch of skip-gram, 200 dimensions, window 5, 5 noise words, sample 1e-4,
min count 5, on two cores: gensim with two threads, rnnmt once per layout WORKERSxTHREADS (1x2: one
Ray Train worker whose C loop runs two threads; 2x1: two workers of one thread that add up their
updates every `train.sync_every` steps), and per layout once per `model.update` given (window: each
centre's window in one block; pair: word2vec.c's pair-by-pair updates). All train on the tokens of
rnnmt's preprocessing of
English Wikipedia (`conf/preprocess/wikipedia.yaml` with `vocab.min_count=5` and no size cap; made
once under bench/results unless --prepared is given), and gensim is given rnnmt's vocabulary and
counts. `--words N` trains on the first N tokens only. Each contender runs as a subprocess; its
peak memory is the RSS of its process tree. All vectors are scored by the same code
(rnn_models.embedding_eval). Words/s is tokens trained per second of the training loop (rnnmt: as
its workers measure it; gensim: its `train()` call); wall seconds include start-up. Ends with
one line of JSON: "rnnmt" is the first contender (layout/update), "rnnmt_layouts" has them all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from measure import PeakMemory, cpu_name  # noqa: E402

SETTINGS = {"dim": 200, "window": 5, "negatives": 5, "sample": 1e-4, "min_count": 5, "workers": 2}


def prepare(data_dir: Path, out: Path) -> Path:
    """rnnmt's preprocessing of Wikipedia with min count 5 and no vocabulary cap (reused if present)."""
    if not (out / "manifest.json").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "jobs.preprocess",
                "conf/preprocess/wikipedia.yaml",
                f"data_root={data_dir}",
                f"output_dir={out}",
                "vocab.max_size=10000000",
                f"vocab.min_count={SETTINGS['min_count']}",
                "mlflow.enabled=false",
                "overwrite=true",
            ],
            cwd=PROJECT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def _run(cmd: list[str]) -> tuple[dict, float, int]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")},
    )
    with PeakMemory(proc.pid, interval=0.5) as memory:  # Ray's process tree is large: sample gently
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), time.perf_counter() - started, memory.peak


def run_rnnmt(
    prepared: Path, data_dir: Path, words: int, out: Path, layout: str, update: str, extra: list[str]
) -> dict:
    s = SETTINGS
    workers, threads = (int(x) for x in layout.split("x"))
    summary, wall, peak = _run(
        [
            sys.executable,
            "-m",
            "jobs.train_word2vec",
            f"data_dir={prepared}",
            f"output_dir={out}",
            "overwrite=true",
            f"data_root={data_dir}",
            f"run_name=bench-word2vec-{int(time.time())}",
            "mlflow.enabled=false",
            f"model.dim={s['dim']}",
            f"model.negatives={s['negatives']}",
            f"train.window={s['window']}",
            f"train.sample={s['sample']}",
            f"train.num_workers={workers}",
            f"train.cpus_per_worker={threads}",
            f"train.max_words={words}",
            f"model.update={update}",
            "train.epochs=1",
            f"ray.num_cpus={psutil.cpu_count()}",
            *extra,
        ]
    )
    return {
        "words_per_sec": round(summary["words_per_sec"]),
        "wall_seconds": round(wall, 1),
        "train_words": summary["train_words"],
        "peak_rss_mb": round(peak / 2**20),
        "analogy": summary.get("analogy"),
        "wordsim353": summary.get("similarity"),
        "sync_mb": summary.get("sync_mb"),
        "vectors": summary["vectors"],
    }


def run_gensim(prepared: Path, data_dir: Path, words: int) -> dict:
    summary, wall, peak = _run(
        [sys.executable, __file__, "--gensim-child", str(prepared), "--data-dir", str(data_dir), "--words", str(words)]
    )
    return {**summary, "wall_seconds": round(wall, 1), "peak_rss_mb": round(peak / 2**20)}


def gensim_child(prepared: Path, data_dir: Path, words: int) -> None:
    """Train gensim on rnnmt's tokens and print its figures as one JSON line (runs as a subprocess)."""
    import numpy as np
    import torch
    from gensim.models import Word2Vec

    from jobs.common.reports import evaluate
    from pipelines.contract.manifest import load_manifest
    from pipelines.contract.token_stream import read_token_share
    from pipelines.contract.vocab import Vocab

    manifest = load_manifest(prepared, "monolingual")
    vocab = Vocab.load(prepared / manifest["vocab"]["words"]["file"])
    share = read_token_share(prepared, manifest["splits"]["train"]["files"], 0, 1, words)
    bounds = np.flatnonzero(np.diff(share.sentences)) + 1
    sentences = [s.tolist() for s in np.split(np.array(vocab.tokens, dtype=object)[share.tokens], bounds)]
    s = SETTINGS
    model = Word2Vec(
        vector_size=s["dim"],
        window=s["window"],
        negative=s["negatives"],
        sample=s["sample"],
        min_count=s["min_count"],
        sg=1,
        workers=s["workers"],
        seed=0,
    )
    # rnnmt's vocabulary and counts (of the whole corpus): the same words, subsampling and noise for both
    model.build_vocab_from_freq(
        {w: c for w, c in zip(vocab.tokens, vocab.counts) if c > 0}, corpus_count=len(sentences)
    )
    started = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=1)
    seconds = time.perf_counter() - started
    eval_cfg = {
        "analogy": str(data_dir / "word-eval" / "questions-words.txt"),
        "analogy_vocab": 30000,
        "similarity": str(data_dir / "word-eval" / "wordsim353.tsv"),
        "probes": [],
        "neighbours": 0,
    }
    scores = evaluate(model.wv.index_to_key, torch.from_numpy(model.wv.vectors), eval_cfg)
    print(
        json.dumps(
            {
                "words_per_sec": round(share.tokens.size / seconds),
                "train_seconds": round(seconds, 1),
                "train_words": int(share.tokens.size),
                "analogy": scores.get("analogy"),
                "wordsim353": scores.get("similarity"),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=PROJECT.parent / "shared" / "data")
    parser.add_argument("--words", type=int, default=0, help="train on the first N tokens (0 = all)")
    parser.add_argument("--prepared", type=Path, default=None, help="an existing min-count-5 preprocessing output")
    parser.add_argument("--layouts", nargs="+", default=["1x2", "2x1"], help="rnnmt's WORKERSxTHREADS to run")
    parser.add_argument("--updates", nargs="+", default=["window", "pair"], help="rnnmt's model.update values to run")
    parser.add_argument("--rnnmt", nargs="*", default=[], help="extra key=value settings for rnnmt's job")
    parser.add_argument("--gensim-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    if args.gensim_child:
        gensim_child(args.gensim_child, data_dir, args.words)
        return
    results_dir = PROJECT / "bench" / "results"
    prepared = (args.prepared or prepare(data_dir, results_dir / "wikipedia-min5")).resolve()
    layouts = {}
    for layout in args.layouts:
        for update in args.updates:
            name = f"{layout}/{update}"
            out = results_dir / f"word2vec-vectors-{layout}-{update}"
            layouts[name] = run_rnnmt(prepared, data_dir, args.words, out, layout, update, args.rnnmt)
            print(f"rnnmt {name}: {json.dumps(layouts[name])}", flush=True)
    gensim = run_gensim(prepared, data_dir, args.words)
    print(f"gensim: {json.dumps(gensim)}", flush=True)
    for result in layouts.values():
        result["speed_ratio"] = round(result["words_per_sec"] / gensim["words_per_sec"], 2)
    rnnmt = next(iter(layouts.values()))
    machine = {
        "cpu": cpu_name(),
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
    print(
        json.dumps(
            {
                "machine": machine,
                "settings": SETTINGS,
                "words": args.words or "all",
                "rnnmt": rnnmt,
                "gensim": gensim,
                "speed_ratio": rnnmt["speed_ratio"],
                "rnnmt_layouts": layouts,
                "rnnmt_vectors": rnnmt["vectors"],
            }
        )
    )


if __name__ == "__main__":
    main()
