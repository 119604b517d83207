"""Benchmark the language model for a fixed wall-clock budget: word-level Penn Treebank or
character-level Tiny Shakespeare.

    python bench/lm.py [--data-dir ../shared/data] [--minutes 35] [--corpus ptb|shakespeare]
                       [--prepared DIR] [--rnnmt k=v ...]

Preprocesses the corpus with `conf/preprocess/ptb.yaml` (read as it is: its tokens, its <unk>, its
official splits) or `conf/preprocess/tinyshakespeare.yaml` (characters, the 90/5/5 split by
character offset), made once under bench/results unless --prepared is given, then trains
`conf/train_lm/ptb.yaml` (Zaremba et al.'s small 2 x 200 LSTM) or `conf/train_lm/tinyshakespeare.yaml`
(a 2 x 512 character LSTM) for `--minutes` of wall clock and scores the best checkpoint on the
valid and test streams. Training tokens/s counts the tokens predicted per second of training steps;
peak memory is the RSS of the job's process tree. Ends with one line of JSON: `valid_perplexity` and
`test_perplexity` (words) or `valid_loss_nats` and `test_loss_nats` per character (characters),
tokens/s, the CPU, and `checkpoint` (what `python -m jobs.generate` takes).
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

CORPORA = {"ptb": ("ptb", "ptb"), "shakespeare": ("tinyshakespeare", "tinyshakespeare")}  # data dir, preset
ANCHORS = {
    "ptb": {
        "zaremba_small_test_perplexity": 114.5,
        "zaremba_medium_test_perplexity": 82.7,
        "kneser_ney_5gram_test_perplexity": 141.2,
        "target_test_perplexity": 114.5,
    },
    "shakespeare": {"nanogpt_baby_gpt_valid_loss_nats": 1.4697, "target_valid_loss_nats": 1.50},
}


def prepare(corpus: str, data_dir: Path, out: Path) -> Path:
    """rnnmt's preprocessing of the corpus with its preset (reused if present)."""
    return preprocess_once([f"conf/preprocess/{CORPORA[corpus][1]}.yaml"], data_dir, out, PROJECT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=PROJECT.parent / "shared" / "data")
    parser.add_argument("--minutes", type=float, default=35.0)
    parser.add_argument("--corpus", choices=tuple(CORPORA), default="ptb")
    parser.add_argument("--prepared", type=Path, help="an existing preprocessing output of the corpus")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results")
    parser.add_argument("--rnnmt", nargs="*", default=[], help="extra key=value overrides for the training job")
    args = parser.parse_args()
    source, preset = CORPORA[args.corpus]
    if not args.prepared and not (args.data_dir / source).is_dir():
        sys.exit(f"error: {args.data_dir / source} not found (pass --data-dir)")
    args.out.mkdir(parents=True, exist_ok=True)
    prepared = args.prepared or prepare(args.corpus, args.data_dir, args.out / preset)
    output = args.out / f"lm-{preset}"
    cmd = [
        sys.executable,
        "-m",
        "jobs.train_lm",
        f"conf/train_lm/{preset}.yaml",
        f"data_dir={prepared}",
        f"output_dir={output}",
        "overwrite=true",
        f"train.max_minutes={args.minutes}",
        f"run_name=bench-lm-{preset}-{time.strftime('%Y%m%d-%H%M%S')}",
        "mlflow.registry_name=",
        *args.rnnmt,
    ]  # tracked, not registered: a bench never takes the champion alias
    summary, wall, peak = run_job(cmd, PROJECT)
    result = {
        "corpus": args.corpus,
        "minutes": args.minutes,
        "cpu": cpu_name(),
        "epochs": summary["epochs"],
        "best_epoch": summary["best_epoch"],
        "train_tokens_per_sec": round(summary["train_tokens_per_sec"]),
        "wall_seconds_with_startup": round(wall, 1),
        "peak_rss_mb": round(peak / 2**20),
        "checkpoint": summary["best"],
        "sample": summary["samples"][0],
        "anchors": ANCHORS[args.corpus],
    }
    if args.corpus == "ptb":
        result.update(valid_perplexity=summary["valid_perplexity"], test_perplexity=summary["test_perplexity"])
    else:
        result.update(
            valid_loss_nats=summary["valid_loss"],
            test_loss_nats=summary["test_loss"],
            valid_bits_per_char=summary["valid_bits_per_char"],
            test_bits_per_char=summary["test_bits_per_char"],
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
