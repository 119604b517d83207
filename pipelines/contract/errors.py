"""The errors a user can fix: every one of them ends a job with one ``error: ...`` line (exit 2),
never a traceback (``jobs.common.cli.main``). Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import math
from typing import Any


class UserError(Exception):
    """A mistake in what the user gave: a config value, a path, an input, a checkpoint. The message
    names the key or file and what would be accepted."""


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used (unknown key, invalid value)."""


class InputError(UserError, ValueError):
    """An input that cannot be read as configured or given (a missing file, bad bytes, a truncated archive)."""


class OutputExistsError(UserError, FileExistsError):
    """The output exists and overwriting was not asked for."""


class ManifestError(UserError, ValueError):
    """A data directory without a usable manifest, or one that does not fit the stage reading it."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not exist or does not fit the run (another model, other vocabularies)."""


def check_integer(key: str, value: Any, low: int, note: str = "") -> int:
    """``value`` when it is an integer (not a bool) of at least ``low``; else a ConfigError naming
    ``key``, the bound (and ``note``, what the bound or a value means) and the value given."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low}{note}, got {value!r}")
    return value


def check_number(key: str, value: Any, low: float, high: float = math.inf, note: str = "") -> float:
    """``value`` when it is a finite number (not a bool) in [``low``, ``high``]; else a ConfigError
    naming ``key``, the range (and ``note``) and the value given (text such as "nan" included)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        bound = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ConfigError(f"{key} must be a finite number {bound}{note}, got {value!r}")
    return value


class TrainingError(UserError, RuntimeError):
    """Training that cannot go on with these settings (it diverged: the gradient stays non-finite)."""
