"""Average the parameters of several checkpoints of one translator into one.

    python -m jobs.average CHECKPOINT CHECKPOINT [...] --output DIR

Each CHECKPOINT is what ``jobs.translate`` takes (a ``translator.pt``, a directory holding one, an
MLflow URI). They must share model settings and vocabularies (a clear error otherwise). Writes
``DIR/translator.pt`` atomically, with the first checkpoint's decode settings and the averaged
sources recorded in its info. ``train.average_last`` does the same at the end of training.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from jobs.common import cli
from jobs.common.checkpoint import BUNDLE_FILE, Bundle
from pipelines.contract.atomic import atomic_directory
from pipelines.contract.errors import ConfigError


def run(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Average; returns what it prints."""
    parser = argparse.ArgumentParser(prog="python -m jobs.average", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="translator.pt files, directories or MLflow URIs")
    parser.add_argument("--output", type=Path, required=True, help="directory to write translator.pt into")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    if len(args.checkpoints) < 2:
        raise ConfigError("give at least two checkpoints to average")
    bundle = Bundle.average([Bundle.load(c) for c in args.checkpoints])
    bundle.info["averaged_from"] = [str(c) for c in args.checkpoints]
    with atomic_directory(args.output, overwrite=args.overwrite) as tmp:
        bundle.save(tmp / BUNDLE_FILE)
    summary = {"output": str(args.output / BUNDLE_FILE), "averaged": len(args.checkpoints)}
    print(f"averaged {len(args.checkpoints)} checkpoints into {summary['output']}")
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
