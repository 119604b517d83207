"""Loading the torch files rnnmt writes (checkpoints, training states): checked, then loaded with
``weights_only=True``. ``torch.save`` writes a zip archive holding a CRC-32 of every member, but
``torch.load`` does not check them: a truncated file fails with a zip error that names no file, and
a flipped byte inside a tensor loads without a word. Every load goes through here instead."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from pipelines.contract.errors import CheckpointError


def check_file(file: str | Path) -> None:
    """Raise CheckpointError naming ``file`` when it is truncated or any member fails its CRC-32."""
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"{file} is truncated or corrupt (not a whole torch file: {err})") from None
    if bad is not None:
        raise CheckpointError(f"{file} is corrupt (its part {bad} fails its CRC-32 check)")


def load_checked(file: str | Path, map_location: torch.device | str = "cpu") -> Any:
    """``torch.load(file, weights_only=True)`` of a file that passed :func:`check_file`."""
    check_file(file)
    return torch.load(file, map_location=map_location, weights_only=True)
