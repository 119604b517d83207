"""Series shards read back for training and evaluation (schema in docs/data-format.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = (
    "series",
    "origin",
    "time",
    "inputs",
    "targets",
    "calendar",
    "before",
    "future",
    "centre",
    "spread",
    "mase_scale",
)


@dataclass
class SeriesRows:
    """Rows in file order. Train rows: windows (inputs, targets the same steps shifted by one);
    valid and test rows: a forecast's context (inputs), the held-out values in model units
    (targets) and original units (future), the raw values before them (for an inverse
    difference), the series' scaling and MASE's scale."""

    series: list[str]
    origin: np.ndarray  # (N,) the series' point of the first target
    time: list[str]  # (N,) its time, ISO
    inputs: np.ndarray  # (N, W, F) float32
    targets: np.ndarray  # (N, S, F) float32
    calendar: np.ndarray  # (N, K, C) float32; C = 0 without calendar features
    before: np.ndarray  # (N, D, F) float64
    future: np.ndarray  # (N, H, F) float64
    centre: np.ndarray  # (N, F)
    spread: np.ndarray  # (N, F)
    mase_scale: np.ndarray  # (N, F); empty rows for train

    def __len__(self) -> int:
        return len(self.series)


def _stacked(column: pa.ChunkedArray, rows: int, features: int, dtype: type) -> np.ndarray:
    """A list column of equal-length rows as an array (rows, steps, features)."""
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(dtype)  # a writable copy
    return flat.reshape(rows, -1, features) if rows else flat.reshape(0, 0, features)


def read_windows(data_dir: Path, files: Sequence[str], features: int, calendar: int) -> SeriesRows:
    """The rows of ``files`` (relative to ``data_dir``), for data with ``features`` values and
    ``calendar`` calendar features per step."""
    tables = [pq.read_table(Path(data_dir) / name, columns=list(COLUMNS)) for name in files]
    table = pa.concat_tables(tables) if tables else pa.table({c: [] for c in COLUMNS})
    n = table.num_rows
    return SeriesRows(
        series=table["series"].to_pylist(),
        origin=table["origin"].to_numpy().astype(np.int64),
        time=table["time"].to_pylist(),
        inputs=_stacked(table["inputs"], n, features, np.float32),
        targets=_stacked(table["targets"], n, features, np.float32),
        calendar=_stacked(table["calendar"], n, max(calendar, 1), np.float32)[..., :calendar],
        before=_stacked(table["before"], n, features, np.float64),
        future=_stacked(table["future"], n, features, np.float64),
        centre=_stacked(table["centre"], n, features, np.float64).reshape(n, features),
        spread=_stacked(table["spread"], n, features, np.float64).reshape(n, features),
        mase_scale=_stacked(table["mase_scale"], n, features, np.float64).reshape(n, -1),
    )
