"""Benchmark the translator on Multi30k (or Tatoeba) English->French for a fixed wall-clock budget.

    python bench/translator.py [--data-dir ../shared/data] [--minutes 35] [--corpus multi30k|tatoeba]
                               [--preset word|bpe] [--prepared DIR] [--rnnmt k=v ...]
    python bench/translator.py --peer joeynmt [--minutes 5]

Preprocesses the corpus with `conf/preprocess/<corpus>.yaml` and 10,000 words per side (Multi30k:
case kept, its official splits; Tatoeba: lowercased, hash split), or with `--preset bpe`
`conf/preprocess/<corpus>_bpe.yaml` (8,000 BPE pieces per side), made once under bench/results
unless --prepared is given, then trains `conf/train_translator/<corpus>[_bpe].yaml` (256-d embeddings,
bidirectional LSTM 256 encoder, LSTM 256 decoder, Bahdanau attention) for `--minutes` of wall
clock (epochs and their validation), and scores the best checkpoint on the test split (Multi30k:
test_2016_flickr) greedily and with beam 5 (sacreBLEU against the raw references; case-blind for
the lowercased Tatoeba). Training
target tokens/s is tokens (words, or pieces) trained per second of training steps; for pieces the
JSON also gives target words/s (pieces/s over the train split's pieces per word) and the `[UNK]`s
in the test output. Peak memory is the RSS of the job's process tree. Ends with one line of JSON.

The JoeyNMT figures printed next to ours in a quality run are those the project's issue gives for
JoeyNMT 2.3 on this kind of machine (same model size and budget). With `--peer joeynmt` JoeyNMT
2.3 runs here (set up on first use under bench/results/joeynmt-venv, see bench/peer_joeynmt.py):
it and rnnmt train one after the other for `--minutes` each on the same Multi30k tokens (word
preset), the same model size and batches of 64 sentences, and the JSON's
`ratios.target_tokens_per_sec_vs_joeynmt_measured` is rnnmt's target tokens/s over JoeyNMT's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

import peer_joeynmt  # noqa: E402
from measure import cpu_name, preprocess_once, run_job  # noqa: E402

JOEYNMT_REPORTED = {
    "epochs": 7,
    "target_tokens_per_sec": 1580,
    "test_bleu_greedy": 53.1,
    "test_bleu_beam5": 55.2,
    "test_chrf_greedy": 70.9,
    "test_chrf_beam5": 72.1,
}


def prepare(corpus: str, preset: str, data_dir: Path, out: Path) -> Path:
    """rnnmt's preprocessing of the corpus, 10,000 words or the preset's pieces per side (reused if present)."""
    config = (
        [f"conf/preprocess/{corpus}_bpe.yaml"]
        if preset == "bpe"
        else [f"conf/preprocess/{corpus}.yaml", "vocab.max_size=10006"]
    )
    return preprocess_once(config, data_dir, out, PROJECT)


def train_rnnmt(prepared: Path, name: str, minutes: float, out: Path, extra: list[str]) -> tuple[dict, float, int]:
    """rnnmt's translator preset ``name`` on ``prepared`` for ``minutes``: its summary, wall seconds, peak RSS."""
    cmd = [
        sys.executable,
        "-m",
        "jobs.train_translator",
        f"conf/train_translator/{name}.yaml",
        f"data_dir={prepared}",
        f"output_dir={out / f'translator-{name}'}",
        "overwrite=true",
        f"train.max_minutes={minutes}",
        f"run_name=bench-translator-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        "mlflow.registry_name=",
        *extra,
    ]  # tracked, not registered: a bench never takes the champion alias
    return run_job(cmd, PROJECT)


def peer_race(prepared: Path, args: argparse.Namespace) -> None:
    """JoeyNMT, then rnnmt, each for ``args.minutes`` on the same tokens and batches of 64 sentences;
    prints both target tokens/s and their ratio."""
    exe = peer_joeynmt.python(args.out)
    work = args.out / "joeynmt-peer"
    prefixes = peer_joeynmt.write_data(prepared, work / "data", "en", "fr")
    config = peer_joeynmt.write_config(prefixes, work / "model", "en", "fr", 64, work / "config.yaml")
    joey = peer_joeynmt.train(exe, config, work / "model", args.minutes)
    print(f"joeynmt: {json.dumps(joey)}", flush=True)
    # the same batches: 64 sentences, with a token budget that never binds first
    summary, _, _ = train_rnnmt(
        prepared,
        "multi30k",
        args.minutes,
        args.out,
        ["train.batch_sentences=64", "train.batch_tokens=1000000", *args.rnnmt],
    )
    rnnmt = {"target_tokens_per_sec": summary["train_tokens_per_sec"], "epochs": summary.get("epochs")}
    print(
        json.dumps(
            {
                "cpu": cpu_name(),
                "minutes": args.minutes,
                "batch_sentences": 64,
                "rnnmt": rnnmt,
                "joeynmt": joey,
                "ratios": {
                    "target_tokens_per_sec_vs_joeynmt_measured": round(
                        rnnmt["target_tokens_per_sec"] / joey["target_tokens_per_sec"], 3
                    )
                },
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=PROJECT.parent / "shared" / "data")
    parser.add_argument("--minutes", type=float, default=35.0)
    parser.add_argument("--corpus", choices=("multi30k", "tatoeba"), default="multi30k")
    parser.add_argument("--preset", choices=("word", "bpe"), default="word", help="word or subword vocabularies")
    parser.add_argument("--prepared", type=Path, help="an existing preprocessing output of the corpus")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results")
    parser.add_argument("--rnnmt", nargs="*", default=[], help="extra key=value overrides for the training job")
    parser.add_argument("--peer", choices=("joeynmt",), help="measure training speed against this peer, run here")
    args = parser.parse_args()
    source = {"multi30k": "multi30k", "tatoeba": "tatoeba-en-fr"}[args.corpus]
    if not args.prepared and not (args.data_dir / source).is_dir():
        sys.exit(f"error: {args.data_dir / source} not found (pass --data-dir)")
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.corpus + ("_bpe" if args.preset == "bpe" else "")
    prepared = args.prepared or prepare(
        args.corpus, args.preset, args.data_dir, args.out / f"{args.corpus}-{'bpe' if args.preset == 'bpe' else '10k'}"
    )
    if args.peer:
        if (args.corpus, args.preset) != ("multi30k", "word"):
            sys.exit("error: --peer runs on Multi30k words (--corpus multi30k --preset word)")
        peer_race(prepared, args)
        return
    summary, wall, peak = train_rnnmt(prepared, name, args.minutes, args.out, args.rnnmt)
    joey, nan = JOEYNMT_REPORTED, float("nan")
    tgt_vocab = json.loads((prepared / "manifest.json").read_text(encoding="utf-8"))["vocab"]["tgt"]
    pieces_per_word = tgt_vocab.get("pieces_per_word", {}).get("train") or 1.0
    summary["train_target_words_per_sec"] = summary["train_tokens_per_sec"] / pieces_per_word
    result = {
        "rnnmt": {**summary, "wall_seconds_with_startup": round(wall, 1), "peak_rss_mb": round(peak / 2**20)},
        "corpus": args.corpus,
        "preset": args.preset,
        "vocab_kind": tgt_vocab["kind"],
        "tgt_vocab_size": tgt_vocab["size"],
        "tgt_pieces_per_word": pieces_per_word,
        "minutes": args.minutes,
        **({"joeynmt_reported": JOEYNMT_REPORTED} if args.corpus == "multi30k" else {}),
        "checkpoint": summary["best"],
    }
    if args.corpus == "multi30k":
        # JoeyNMT's tokens are words: compare words (the same as tokens for the word preset)
        result["ratios"] = {
            "target_tokens_per_sec": summary["train_target_words_per_sec"] / joey["target_tokens_per_sec"],
            "bleu_greedy_diff": summary.get("test_greedy_bleu", nan) - joey["test_bleu_greedy"],
            "bleu_beam5_diff": summary.get("test_beam5_bleu", nan) - joey["test_bleu_beam5"],
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
