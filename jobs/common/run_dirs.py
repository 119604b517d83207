"""The directories a job keeps its Ray state in (``storage_path/<run_name>`` of a training run,
``storage_path/<name>`` of a search): their names, and the rule that a job deletes one only when
it made it. A job marks what it makes with a small file that names the kind of run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pipelines.contract.errors import ConfigError, OutputExistsError

MARKER = ".rnnmt-run"  # in a run's directory: the kind of run that made it ("training", "search")
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]*")


def check_run_name(key: str, name: object) -> str:
    """``name`` when it is a plain name (letters, digits, ``. _ = -``, not starting with a dot or a
    dash): it names a directory under ``storage_path``, never a path out of it."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise ConfigError(
            f"{key} must be a plain name (letters, digits and . _ = -, not starting with . or -), got {name!r}"
        )
    return name


def mark(directory: Path, kind: str) -> None:
    """Make ``directory`` as a run of ``kind`` (with the marker) when it is not there; one that is
    there is left as it is, unless another kind of run made it (:func:`check_kind`)."""
    check_kind(directory, kind)
    if not directory.exists():
        directory.mkdir(parents=True)
        (directory / MARKER).write_text(f"{kind}\n", encoding="utf-8")


def check_kind(directory: Path, kind: str) -> None:
    """An OutputExistsError when ``directory`` holds another kind of run than ``kind`` (a search
    named like a training run, say)."""
    made = _kind(directory)
    if made is not None and made != kind:
        raise OutputExistsError(f"{directory} holds a {made} run, not a {kind} run; choose another name")


def remove_run(directory: Path, kind: str, why: str) -> None:
    """Delete ``directory`` (``why``: said first) when a job made it as a run of ``kind``; any other
    directory there (not marked: another program's, or an rnnmt run older than the marker) is
    refused with an OutputExistsError and left as it is."""
    if not directory.exists():
        return
    check_kind(directory, kind)
    if _kind(directory) is None:
        raise OutputExistsError(
            f"{directory} was not made by an rnnmt {kind} run (no {MARKER} file in it), so it is not "
            "deleted; delete it yourself or choose another name"
        )
    print(f"{why}: removing {directory}", flush=True)
    shutil.rmtree(directory)


def _kind(directory: Path) -> str | None:
    marker = directory / MARKER
    return marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
