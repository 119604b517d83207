"""Classify raw text with a trained classifier, one output line per input line.

    python -m jobs.classify CHECKPOINT [CHECKPOINT ...] [--input FILE] [--output FILE] [--all] [--max-tokens N]

CHECKPOINT is a ``classifier.pt``, a directory holding one (``output_dir/best``) or an MLflow URI
(``runs:/RUN_ID/best``); several classify as an ensemble, each label's probability the mean of
theirs (they must have the same labels). Each input line is normalized with the rules the model was trained with;
the output line is ``label<TAB>probability``, or with ``--all`` a JSON object with every label's
probability. An empty line (no tokens) gives an empty line; lines longer than ``--max-tokens``
tokens are read up to it and counted. The input is read, classified and written in chunks, with a
progress bar on a terminal (``--no-progress``: never). ``--output`` is written atomically: input that
is not UTF-8 stops the job with the number of the offending line and no output file (on stdout, the
chunks before it have been written). Counts and throughput go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import cli
from jobs.common.classifier_checkpoint import ClassifierBundle, mean_classify
from jobs.common.line_stream import check_input, map_lines
from pipelines.contract.errors import InputError

CHUNK_BATCHES = 20  # lines read, classified and written at a time: this many batches


def run(argv: Sequence[str] | None = None) -> dict[str, int]:
    """Classify; returns the counts it prints to stderr."""
    parser = argparse.ArgumentParser(prog="python -m jobs.classify", description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoints", nargs="+", help="classifier.pt, a directory with one, or runs:/RUN_ID/best; several: an ensemble"
    )
    parser.add_argument("--input", type=Path, help="input file (default: stdin)")
    parser.add_argument("--output", type=Path, help="output file (default: stdout)")
    parser.add_argument("--all", action="store_true", help="print every label's probability as JSON")
    parser.add_argument(
        "--max-tokens", type=int, default=500, help="read at most this many tokens per line (0 = all; default 500)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="lines per batch")
    parser.add_argument("--use-gpu", action="store_true", help="classify on the GPU")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a progress bar on stderr when it is a terminal (default: on)",
    )
    args = parser.parse_args(argv)
    if args.max_tokens < 0 or args.batch_size < 1:
        raise InputError("--max-tokens must be >= 0 and --batch-size >= 1")
    check_input(args.input)
    device = "cuda" if args.use_gpu else "cpu"
    bundles = [ClassifierBundle.load(checkpoint, device) for checkpoint in args.checkpoints]
    counts = {"lines": 0, "empty": 0, "truncated": 0, "classified": 0}

    def classify_chunk(lines: list[str]) -> list[str]:
        out = []
        for p in mean_classify(bundles, lines, args.batch_size, args.max_tokens, device):
            counts["empty"] += p is None
            counts["truncated"] += p is not None and p.truncated
            if p is None:
                out.append("")
            elif args.all:
                out.append(
                    json.dumps(
                        {
                            "label": p.label,
                            "probability": round(p.probability, 6),
                            "probabilities": {k: round(v, 6) for k, v in p.probabilities.items()},
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                out.append(f"{p.label}\t{p.probability:.4f}")
        return out

    stats = map_lines(
        args.input, args.output, CHUNK_BATCHES * args.batch_size, classify_chunk, args.progress, desc="classifying"
    )
    counts["lines"] = stats.lines
    counts["classified"] = stats.lines - counts["empty"]
    print(
        f"classified {counts['classified']} of {counts['lines']} lines ({counts['empty']} without tokens, "
        f"{counts['truncated']} cut to {args.max_tokens} tokens) in {stats.seconds:.1f} s: "
        f"{stats.lines_per_sec:.1f} lines/s",
        file=sys.stderr,
    )
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
