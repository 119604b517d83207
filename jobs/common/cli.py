"""The one ``main`` every job uses: its output filtered (``jobs.common.job_output``); a user's
mistake ends the job with one ``error: ...`` line on stderr and exit code 2; anything else is a
bug and keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from jobs.common.job_output import filtered
from pipelines.contract.errors import UserError

USER_ERROR_EXIT = 2


def main(run: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run a job's ``run(argv)`` (``argv`` None: the command line)."""
    try:
        with filtered():
            run(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT)
