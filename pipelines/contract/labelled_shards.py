"""Labelled shards read back for training and evaluation: id arrays, label ids, raw text if kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.contract.errors import ManifestError
from pipelines.contract.parallel_shards import id_lists


@dataclass
class Labelled:
    """Examples in file order: token ids, label ids and, when asked for and kept, the raw texts."""

    ids: list[np.ndarray]
    labels: np.ndarray
    text: list[str] | None

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(i) for i in self.ids), np.int64, len(self.ids))


def read_labelled(data_dir: Path, files: Sequence[str], text: bool = False) -> Labelled:
    """The examples of ``files`` (relative to ``data_dir``); with ``text`` the raw lines too, or a
    ManifestError when the shards were written without them."""
    columns = ["ids", "label"] + (["text"] if text else [])
    tables = []
    for name in files:
        path = Path(data_dir) / name
        missing = [c for c in columns if c not in pq.read_schema(path).names]
        if missing:
            raise ManifestError(
                f"{path} has no column(s) {missing}"
                + ("; preprocess with output.keep_text=true to keep the raw text" if text else "")
            )
        tables.append(pq.read_table(path, columns=columns))
    if not tables:
        return Labelled([], np.zeros(0, np.int64), [] if text else None)
    table = pa.concat_tables(tables)
    return Labelled(
        id_lists(table.column("ids")),
        table.column("label").to_numpy().astype(np.int64),
        table.column("text").to_pylist() if text else None,
    )
