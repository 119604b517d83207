"""Translate raw text with a trained translator, one output line per input line.

    python -m jobs.translate CHECKPOINT [CHECKPOINT ...] [--input FILE] [--output FILE] [--beam N]
    [--unk keep|copy] [--nbest N]

CHECKPOINT is a ``translator.pt``, a directory holding one (``output_dir/best``), or an MLflow URI
(``runs:/RUN_ID/best``, ``models:/rnnmt-translator@champion``, ``models:/NAME/VERSION``); several
checkpoints with the same vocabularies decode as an ensemble (log-probabilities averaged). Input is
normalized with the rules the model was trained with, output is
detokenized with numbers and links filled back in from the source. Empty lines stay empty; lines
longer than ``--max-tokens`` tokens are translated up to it and counted. With ``--nbest N`` each
output line is a JSON object whose ``nbest`` lists the N best ``{"text", "score"}``, best first
(JSON Lines). Decode settings are the checkpoint's (its training config's ``decode``), with the
flags given on top.

The input is read, translated and written in chunks of 20 decoding batches, so memory stays
bounded however long it is; a progress bar shows on a terminal (``--no-progress``: never).
``--output`` is written atomically: input that is not UTF-8 stops the job with the number of the
offending line and no output file (on stdout, the chunks before it have been written). Counts and
throughput go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import cli
from jobs.common.checkpoint import Bundle
from jobs.common.line_stream import check_input, map_lines
from jobs.common.translation import translate
from rnn_models.search import UNK_POLICIES, DecodeSettings

CHUNK_BATCHES = 20  # lines read, translated and written at a time: this many decoding batches
FLAGS = ("beam", "alpha", "unk", "max_tokens", "batch_size", "nbest")  # the DecodeSettings the command line sets


def run(argv: Sequence[str] | None = None) -> dict[str, int]:
    """Translate; returns the counts it prints to stderr."""
    parser = argparse.ArgumentParser(prog="python -m jobs.translate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoints",
        nargs="+",
        help="translator.pt, a directory with one, runs:/RUN_ID/best or models:/NAME@ALIAS; several: an ensemble",
    )
    parser.add_argument("--input", type=Path, help="input file (default: stdin)")
    parser.add_argument("--output", type=Path, help="output file (default: stdout)")
    parser.add_argument("--beam", type=int, help="beam size (1 = greedy; default: the training config's)")
    parser.add_argument("--alpha", type=float, help="length penalty of beam search")
    parser.add_argument(
        "--unk", choices=UNK_POLICIES, help="[UNK] in the output: keep it or copy the attended source word"
    )
    parser.add_argument("--max-tokens", type=int, help="translate at most this many source tokens per line")
    parser.add_argument("--batch-size", type=int, help="sentences per batch")
    parser.add_argument(
        "--nbest",
        type=int,
        help="write the N best translations of each line as JSON Lines (needs a beam of at least N)",
    )
    parser.add_argument("--use-gpu", action="store_true", help="decode on the GPU")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a progress bar on stderr when it is a terminal (default: on)",
    )
    args = parser.parse_args(argv)
    check_input(args.input)
    device = "cuda" if args.use_gpu else "cpu"
    bundle = Bundle.load_all(args.checkpoints, device)
    settings = DecodeSettings.from_dict({key: getattr(args, key) for key in FLAGS}, base=bundle.decode_settings())
    counts = {"lines": 0, "empty": 0, "truncated": 0, "translated": 0, "tokens": 0}  # tokens: output words

    def translate_chunk(lines: list[str]) -> list[str]:
        translations = translate(bundle, lines, settings, device)
        counts["empty"] += sum(1 for line in lines if not line.strip())
        counts["truncated"] += sum(t.truncated for t in translations)
        counts["tokens"] += sum(len(t.tokens) for t in translations)
        if settings.nbest > 1:
            return [
                json.dumps({"nbest": [{"text": text, "score": score} for text, score in t.nbest]}, ensure_ascii=False)
                for t in translations
            ]
        return [t.text for t in translations]

    stats = map_lines(
        args.input, args.output, CHUNK_BATCHES * settings.batch_size, translate_chunk, args.progress, desc="translating"
    )
    counts["lines"] = stats.lines
    counts["translated"] = stats.lines - counts["empty"]
    print(
        f"translated {counts['translated']} of {counts['lines']} lines ({counts['empty']} empty, "
        f"{counts['truncated']} cut to {settings.max_tokens} tokens) with beam {settings.beam} in "
        f"{stats.seconds:.1f} s: {stats.lines_per_sec:.1f} lines/s, "
        f"{counts['tokens'] / stats.seconds if stats.seconds else 0:.0f} output tokens/s",
        file=sys.stderr,
    )
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
