"""Translate raw text with a trained translator, one output line per input line.

    python -m jobs.translate CHECKPOINT [--input FILE] [--output FILE] [--beam N] [--unk keep|copy]

CHECKPOINT is a ``translator.pt``, a directory holding one (``output_dir/best``), or an MLflow URI
(``runs:/RUN_ID/best``). Input is normalized with the rules the model was trained with, output is
detokenized with numbers and links filled back in from the source. Empty lines stay empty; lines
longer than ``--max-tokens`` tokens are translated up to it and counted; input that is not UTF-8
stops the job with the number of the offending line, before anything is written. Counts go to
stderr; ``--output`` is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.translation import Bundle, InputError, read_lines, translate
from pipelines.atomic import write_atomically


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(prog="python -m jobs.translate", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="translator.pt, a directory with one, or runs:/RUN_ID/best")
    parser.add_argument("--input", type=Path, help="input file (default: stdin)")
    parser.add_argument("--output", type=Path, help="output file (default: stdout)")
    parser.add_argument("--beam", type=int, help="beam size (1 = greedy; default: the training config's)")
    parser.add_argument("--alpha", type=float, help="length penalty of beam search")
    parser.add_argument("--unk", choices=("keep", "copy"),
                        help="[UNK] in the output: keep it or copy the attended source word")
    parser.add_argument("--max-tokens", type=int, help="translate at most this many source tokens per line")
    parser.add_argument("--batch-size", type=int, help="sentences per batch")
    parser.add_argument("--use-gpu", action="store_true", help="decode on the GPU")
    args = parser.parse_args(argv)
    try:
        name = str(args.input) if args.input else "<stdin>"
        lines = read_lines(args.input.read_bytes() if args.input else sys.stdin.buffer.read(), name)
        device = "cuda" if args.use_gpu else "cpu"
        bundle = Bundle.load(args.checkpoint, device)
    except (InputError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    d = {"beam": 5, "alpha": 0.6, "max_ratio": 1.5, "max_extra": 5, "batch_size": 64, "unk": "keep",
         "max_tokens": 200, **bundle.info.get("decode", {})}
    for key in ("beam", "alpha", "unk", "max_tokens", "batch_size"):
        if getattr(args, key) is not None:
            d[key] = getattr(args, key)
    translations = translate(bundle, lines, **d, device=device)
    text = "".join(t.text + "\n" for t in translations)
    if args.output:
        write_atomically(args.output, text)
    else:
        sys.stdout.write(text)
    counts = {"lines": len(lines), "empty": sum(1 for line in lines if not line.strip()),
              "truncated": sum(t.truncated for t in translations)}
    counts["translated"] = counts["lines"] - counts["empty"]
    print(f"translated {counts['translated']} of {counts['lines']} lines ({counts['empty']} empty, "
          f"{counts['truncated']} cut to {d['max_tokens']} tokens) with beam {d['beam']}", file=sys.stderr)
    return counts


if __name__ == "__main__":
    main()
