"""Classify raw text with a trained classifier, one output line per input line.

    python -m jobs.classify CHECKPOINT [--input FILE] [--output FILE] [--all] [--max-tokens N]

CHECKPOINT is a ``classifier.pt``, a directory holding one (``output_dir/best``) or an MLflow URI
(``runs:/RUN_ID/best``). Each input line is normalized with the rules the model was trained with;
the output line is ``label<TAB>probability``, or with ``--all`` a JSON object with every label's
probability. An empty line (no tokens) gives an empty line; lines longer than ``--max-tokens``
tokens are read up to it and counted; input that is not UTF-8 stops the job with the number of the
offending line, before anything is written. Counts go to stderr; ``--output`` is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import cli
from jobs.common.classifier_checkpoint import ClassifierBundle
from jobs.common.translation import read_lines
from pipelines.contract.atomic import write_atomically
from pipelines.contract.errors import InputError


def run(argv: Sequence[str] | None = None) -> dict[str, int]:
    """Classify; returns the counts it prints to stderr."""
    parser = argparse.ArgumentParser(prog="python -m jobs.classify", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="classifier.pt, a directory with one, or runs:/RUN_ID/best")
    parser.add_argument("--input", type=Path, help="input file (default: stdin)")
    parser.add_argument("--output", type=Path, help="output file (default: stdout)")
    parser.add_argument("--all", action="store_true", help="print every label's probability as JSON")
    parser.add_argument("--max-tokens", type=int, default=500, help="read at most this many tokens per line "
                                                                    "(0 = all; default 500)")
    parser.add_argument("--batch-size", type=int, default=64, help="lines per batch")
    parser.add_argument("--use-gpu", action="store_true", help="classify on the GPU")
    args = parser.parse_args(argv)
    if args.max_tokens < 0 or args.batch_size < 1:
        raise InputError("--max-tokens must be >= 0 and --batch-size >= 1")
    name = str(args.input) if args.input else "<stdin>"
    if args.input and not args.input.is_file():
        raise InputError(f"--input {args.input}: no such file")
    lines = read_lines(args.input.read_bytes() if args.input else sys.stdin.buffer.read(), name)
    device = "cuda" if args.use_gpu else "cpu"
    bundle = ClassifierBundle.load(args.checkpoint, device)
    predictions = bundle.classify(lines, args.batch_size, args.max_tokens, device)
    out = []
    for p in predictions:
        if p is None:
            out.append("")
        elif args.all:
            out.append(json.dumps({"label": p.label, "probability": round(p.probability, 6),
                                   "probabilities": {k: round(v, 6) for k, v in p.probabilities.items()}},
                                  ensure_ascii=False))
        else:
            out.append(f"{p.label}\t{p.probability:.4f}")
    text = "".join(line + "\n" for line in out)
    if args.output:
        write_atomically(args.output, text)
    else:
        sys.stdout.write(text)
    counts = {"lines": len(lines), "empty": sum(p is None for p in predictions),
              "truncated": sum(1 for p in predictions if p is not None and p.truncated)}
    counts["classified"] = counts["lines"] - counts["empty"]
    print(f"classified {counts['classified']} of {counts['lines']} lines ({counts['empty']} without tokens, "
          f"{counts['truncated']} cut to {args.max_tokens} tokens)", file=sys.stderr)
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
