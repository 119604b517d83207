"""Parallel shards read back for training and evaluation: id arrays per example, raw text if kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.contract.errors import ManifestError


@dataclass
class Pairs:
    """Examples in file order: source and target ids (without ``<go>``/``<eos>``) and, when the
    shards kept them, the raw lines."""

    src: list[np.ndarray]
    tgt: list[np.ndarray]
    src_text: list[str] | None
    tgt_text: list[str] | None

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.fromiter((len(s) for s in self.src), np.int64, len(self.src)),
            np.fromiter((len(t) for t in self.tgt), np.int64, len(self.tgt)),
        )


def id_lists(column: pa.ChunkedArray) -> list[np.ndarray]:
    """A ``list<int32>`` column as one int64 array per row."""
    column = column.combine_chunks()
    values = column.values.to_numpy().astype(np.int64)
    offsets = column.offsets.to_numpy()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(column))]


def read_pairs(data_dir: Path, files: Sequence[str], text: bool = False) -> Pairs:
    """The examples of ``files`` (relative to ``data_dir``); with ``text`` the raw lines too, or a
    ManifestError when the shards were written without them."""
    columns = ["src", "tgt"] + (["src_text", "tgt_text"] if text else [])
    tables = []
    for name in files:
        path = Path(data_dir) / name
        schema = pq.read_schema(path)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ManifestError(
                f"{path} has no column(s) {missing}"
                + ("; preprocess with output.keep_text=true to keep the raw text" if text else "")
            )
        tables.append(pq.read_table(path, columns=columns))
    if not tables:
        return Pairs([], [], [] if text else None, [] if text else None)
    table = pa.concat_tables(tables)
    return Pairs(
        id_lists(table.column("src")),
        id_lists(table.column("tgt")),
        table.column("src_text").to_pylist() if text else None,
        table.column("tgt_text").to_pylist() if text else None,
    )
