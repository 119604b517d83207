"""Torch files are checked before they load: truncated or corrupt ones are refused by name."""

from __future__ import annotations

import pytest
import torch

from jobs.common.torch_files import check_file, load_checked
from pipelines.contract.errors import CheckpointError


def test_whole_files_load_and_damaged_ones_are_named(tmp_path):
    state = {"weights": torch.arange(5000, dtype=torch.float32), "epoch": 3}
    good = tmp_path / "state.pt"
    torch.save(state, good)
    loaded = load_checked(good)
    assert loaded["epoch"] == 3 and torch.equal(loaded["weights"], state["weights"])

    whole = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(CheckpointError, match=f"{truncated} is truncated or corrupt"):
        load_checked(truncated)

    flipped = bytearray(whole)
    flipped[whole.index(b"data/0") + 1000] ^= 0x01  # one bit of one weight
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(bytes(flipped))
    assert not torch.equal(torch.load(corrupt, weights_only=True)["weights"], state["weights"])  # torch alone: silent
    with pytest.raises(CheckpointError, match=f"{corrupt} is corrupt .*data/0 fails its CRC-32"):
        check_file(corrupt)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checked(empty)
