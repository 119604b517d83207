"""Forecast the next values of series with a trained forecaster, in the series' original units.

    python -m jobs.forecast CHECKPOINT [CHECKPOINT ...] --series FILE --steps N [--output FILE]

CHECKPOINT is a ``forecaster.pt``, a directory holding one (``output_dir/best``) or an MLflow URI
(``runs:/RUN_ID/best``); several forecast as an ensemble, each step the mean of their forecasts
(they must have been trained on the same columns). FILE is a CSV (``.gz`` ok) with the columns the
model was trained on: the
time, the values and, for a model of many series, the series id. Each series is read with the
training rules (sorted by time, gaps and missing values interpolated or dropped), then the model
reads its last window and feeds its predictions back for N steps. A series the model was trained
on keeps its training scaling; another is scaled by its own history. The output is CSV: the id
column (if any), the time and the forecast values, one row per step; ``--output`` is written
atomically. Counts go to stderr.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from jobs.common import cli
from jobs.common.forecaster_checkpoint import ForecasterBundle, mean_forecast
from jobs.common.job_output import data_stdout
from pipelines.contract.atomic import write_atomically
from pipelines.contract.errors import InputError
from pipelines.series.regular import series_name


def read_csv(path: Path) -> pd.DataFrame:
    """The CSV file as text columns; InputError for a missing, empty, non-UTF-8 or malformed file."""
    if not path.is_file():
        raise InputError(f"--series {path}: no such file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"--series {path}: not UTF-8 (byte {err.start})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError) as err:
        raise InputError(f"--series {path}: not a readable CSV file ({str(err).strip()})") from None


def run(argv: Sequence[str] | None = None) -> dict[str, int]:
    """Forecast; returns the counts it prints to stderr."""
    parser = argparse.ArgumentParser(prog="python -m jobs.forecast", description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoints", nargs="+", help="forecaster.pt, a directory with one, or runs:/RUN_ID/best; several: an ensemble"
    )
    parser.add_argument("--series", type=Path, required=True, help="CSV with the history of one or more series")
    parser.add_argument("--steps", type=int, required=True, help="how many steps to forecast")
    parser.add_argument("--output", type=Path, help="output CSV file (default: stdout)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}")
    frame = read_csv(args.series)
    bundles = [ForecasterBundle.load(checkpoint) for checkpoint in args.checkpoints]
    # a file's one series (no id column) is named by the file
    table, reports = mean_forecast(bundles, frame, args.steps, f"--series {args.series}", series_name(args.series))
    for report in reports:
        print(report, file=sys.stderr)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    if args.output:
        write_atomically(args.output, buffer.getvalue())
    else:
        data_stdout().write(buffer.getvalue())
    counts = {"series": len(reports), "steps": args.steps, "rows": len(frame)}
    print(f"forecast {counts['steps']} steps of {counts['series']} series from {counts['rows']} rows", file=sys.stderr)
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
