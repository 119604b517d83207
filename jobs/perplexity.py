"""Score a trained language model on any text: perplexity, loss per token, bits per character.

    python -m jobs.perplexity CHECKPOINT [FILE ...] [--batch-size N] [--bptt N] [--use-gpu]

CHECKPOINT is an ``lm.pt``, a directory holding one (``output_dir/best``), or an MLflow URI. Each
line of the files (none or ``-``: stdin; strictly UTF-8, a bad byte is refused with its line and
position) is normalized with the rules the model was trained with and ended by ``<eos>``, as the
training stream is; the text is read as one stream from the start of a line, so every token and
``<eos>`` is predicted. ``--batch-size 1`` (the default) gives each token its whole history; more
rows score faster but start each row without one, as the training job's validation does. Prints one
line of JSON: lines, tokens scored, ``[UNK]``s in the text, loss (nats per token), perplexity, and
bits per character for character models.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jobs.common import cli
from jobs.common.line_stream import read_lines
from jobs.common.lm_checkpoint import LMBundle
from pipelines.contract.errors import ConfigError, InputError
from pipelines.contract.specials import EOS_ID, UNK_ID
from rnn_models.language_model import loss_metrics, stream_loss


def read_texts(paths: Sequence[str]) -> list[str]:
    """The lines of the files (``-``: stdin), strictly UTF-8."""
    lines: list[str] = []
    for path in paths or ["-"]:
        if path == "-":
            lines += read_lines(sys.stdin.buffer.read(), "<stdin>")
        elif not Path(path).is_file():
            raise InputError(f"{path}: no such file")
        else:
            lines += read_lines(Path(path).read_bytes(), path)
    return lines


def text_stream(bundle: LMBundle, lines: Sequence[str]) -> np.ndarray:
    """``<eos>`` then each line's ids followed by ``<eos>``: the first token is read as a line's start."""
    ids = [EOS_ID]
    for line in lines:
        ids += bundle.encode(line)
        ids.append(EOS_ID)
    return np.asarray(ids, dtype=np.int64)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Score; returns the summary it prints."""
    parser = argparse.ArgumentParser(prog="python -m jobs.perplexity", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="lm.pt, a directory with one, or runs:/RUN_ID/best")
    parser.add_argument("files", nargs="*", help="text files, one document or sentence per line (- = stdin)")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="rows scored in parallel (1: every token with its whole history)"
    )
    parser.add_argument("--bptt", type=int, default=100, help="steps per forward pass (the state goes on)")
    parser.add_argument("--use-gpu", action="store_true", help="score on the GPU")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.bptt < 1:
        raise ConfigError("--batch-size and --bptt must be >= 1")
    lines = read_texts(args.files)
    if not lines:
        raise InputError("no text to score: the input has no lines")
    device = "cuda" if args.use_gpu else "cpu"
    bundle = LMBundle.load(args.checkpoint, device)
    tokens = text_stream(bundle, lines)
    total, count = stream_loss(bundle.model, tokens, args.batch_size, args.bptt, device)
    if count == 0:
        raise InputError(f"{len(tokens)} tokens are too few for --batch-size {args.batch_size}: lower it")
    metrics = loss_metrics("text", total / count, count, bundle.kind == "char")
    summary = {
        "lines": len(lines),
        "tokens": count,
        "unk": int((tokens[1:] == UNK_ID).sum()),
        **{k.removeprefix("text_"): v for k, v in metrics.items() if k != "text_tokens"},
        "kind": bundle.kind,
        "batch_size": args.batch_size,
    }
    print(json.dumps(summary))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
