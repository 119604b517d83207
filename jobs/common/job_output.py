"""What a job shows on the terminal, and the log of everything it printed.

While a job runs (:func:`filtered`, around every job's ``main``), this process's stdout and stderr
pass through a filter: the lines other programs print about their own workings (Ray Train's
scheduling and checkpoint lines, Ray's core-worker notices, MLflow's database set-up) are kept off
the terminal unless ``log_level: debug``; everything else (stage banners, per-epoch metrics,
counts, where outputs went, warnings, errors, the final JSON line) shows as before. Every line,
shown or not, also goes to the log file of each MLflow run open at the time (:func:`run_log`),
logged to that run as ``logs/job.log``. A job's data on stdout (translations, labels, forecasts,
samples) goes around the filter (:func:`data_stdout`). The config is printed compactly: the keys
that differ from the job's defaults (the full config is the run's ``config.yaml``).
"""

from __future__ import annotations

import io
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig

from jobs.common.config import ConfigError, flatten, load_config, to_dict, to_yaml

LOG_LEVELS = ("info", "debug")  # info: the job's own lines; debug: also other programs' (and the full config)

# Lines that other programs print about their own workings: off the terminal at log_level info.
CHATTER = re.compile(
    "|".join(
        [
            r"Requesting resources: \{",  # Ray Train's controller
            r"Attempting to start training worker group",
            r"Started training worker group of size",
            r"\(ip=[^)]*, pid=\d+\) world_rank=\d+, local_rank=",
            r"Setting up process group for: ",
            r"Reporting training result \d+: TrainingReport",
            r"Checkpoint successfully created at: Checkpoint",
            r"core_worker\.cc:\d+: Actor with class name: '\w+' .* has constructor arguments in the object store",
            r"INFO mlflow\.store\.db\.utils: (Creating initial MLflow database tables|Updating database tables)",
            r"INFO alembic\.runtime\.migration: ",  # MLflow's SQLite schema set-up
            r"UserWarning: Any type hint is inferred as AnyType, and MLflow doesn't validate",  # logging a model
            r"^\s*col_spec_type = _infer_colspec_type_from_type_hint\(type_hint\)$",
            r"INFO mlflow\.models\.signature: Running the predict function to generate output",
            r"^Successfully registered model '[^']*'\.$",  # the job says what it registered
            r"^Created version '\d+' of model '[^']*'\.$",
            r"^Registered model '[^']*' already exists\. Creating a new version of this model\.\.\.$",
        ]
    )
)


ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # colours (Ray's prefixes, MLflow's warnings): ignored in matching


class _Filter(io.TextIOBase):
    """Stands in for stdout or stderr: whole lines to the terminal unless they are CHATTER (at
    log_level info), and every line to the open run logs."""

    def __init__(self, terminal: TextIO, state: "_State"):
        self.terminal, self.state, self.pending = terminal, state, ""
        self.lock = threading.Lock()  # Ray prints its workers' lines from a thread of its own

    def write(self, text: str) -> int:
        with self.lock:
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                for log in self.state.logs:
                    log.write(line + "\n")
                if self.state.level == "debug" or not CHATTER.search(ANSI_CODES.sub("", line)):
                    self.terminal.write(line + "\n")
            if lines:
                for log in self.state.logs:
                    log.flush()
            if "\r" in self.pending:  # a progress bar redrawing its line: to the terminal only, at once
                self.terminal.write(self.pending)
                self.pending = ""
        return len(text)

    def flush(self) -> None:  # a partial line waits for its end
        self.terminal.flush()
        for log in self.state.logs:
            log.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def fileno(self) -> int:
        return self.terminal.fileno()

    def __getattr__(self, name: str) -> Any:  # encoding, buffer, errors, ...: the terminal's
        return getattr(self.terminal, name)


@dataclass
class _State:
    level: str = "info"  # the job's log_level
    configured: bool = False  # the outermost job has set it
    logs: list[TextIO] = field(default_factory=list)  # the open runs' log files


_state: _State | None = None


@contextmanager
def filtered() -> Iterator[None]:
    """Filter this process's stdout and stderr for the length of a job (see the module's
    docstring), at log_level info until the job's config says otherwise (:func:`show_config`)."""
    global _state
    if _state is not None:  # a job inside another keeps the outer one's filter
        yield
        return
    _state = _State()
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Filter(sys.stdout, _state), _Filter(sys.stderr, _state)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, _Filter) and stream.pending:
                stream.write("\n")
        sys.stdout, sys.stderr = streams
        _state = None


def data_stdout() -> TextIO:
    """Where a job writes its data on stdout: never filtered, whatever the text."""
    return sys.stdout.terminal if isinstance(sys.stdout, _Filter) else sys.stdout


def differences(cfg: DictConfig, job: str) -> dict[str, Any]:
    """The keys of ``cfg`` (flattened) whose values differ from ``job``'s defaults
    (``conf/common.yaml`` and ``conf/<job>.yaml``)."""
    defaults = flatten(to_dict(load_config(job, [])))
    return {key: value for key, value in flatten(to_dict(cfg)).items() if key not in defaults or defaults[key] != value}


def show_config(cfg: DictConfig, job: str) -> None:
    """Print ``cfg`` compactly (the keys that differ from ``job``'s defaults; all of it at
    log_level debug) and take its ``log_level`` for the job's output (the outermost job's counts)."""
    level = cfg.get("log_level", "info")
    if level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}; got {level!r}")
    if _state is not None and not _state.configured:
        _state.level, _state.configured = level, True
    if level == "debug":
        print(to_yaml(cfg), flush=True)
        return
    changed = differences(cfg, job)
    print(
        f"{job}: "
        + (" ".join(f"{k}={v}" for k, v in changed.items()) if changed else "the defaults")
        + f" (defaults: conf/{job}.yaml; the full config goes to MLflow as config.yaml)",
        flush=True,
    )


@contextmanager
def run_log(path: Path) -> Iterator[Path]:
    """Copy every line this process prints from now on into ``path`` (while a job filters its
    output; else the file stays empty) until the block ends."""
    with path.open("w", encoding="utf-8") as log:
        state = _state
        if state is not None:
            state.logs.append(log)
        try:
            yield path
        finally:
            if state is not None:
                state.logs.remove(log)
