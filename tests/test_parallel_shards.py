"""Parallel shards read back: ids per example in file order, raw text when kept."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.contract.errors import ManifestError
from pipelines.contract.parallel_shards import read_pairs


def write(path, rows, text=True):
    columns = {
        "src": pa.array([r[0] for r in rows], pa.list_(pa.int32())),
        "tgt": pa.array([r[1] for r in rows], pa.list_(pa.int32())),
    }
    if text:
        columns |= {"src_text": [r[2] for r in rows], "tgt_text": [r[3] for r in rows]}
    pq.write_table(pa.table(columns), path, row_group_size=1)


def test_pairs_in_file_order_with_text(tmp_path):
    write(tmp_path / "a.parquet", [([6, 7], [8], "a b", "c"), ([9], [10, 11, 12], "d", "e f g")])
    write(tmp_path / "b.parquet", [([13, 14, 15], [16], "h i j", "k")])
    pairs = read_pairs(tmp_path, ["a.parquet", "b.parquet"], text=True)
    assert [p.tolist() for p in pairs.src] == [[6, 7], [9], [13, 14, 15]]
    assert [p.tolist() for p in pairs.tgt] == [[8], [10, 11, 12], [16]]
    assert pairs.src_text == ["a b", "d", "h i j"] and pairs.tgt_text == ["c", "e f g", "k"]
    assert [x.tolist() for x in pairs.lengths()] == [[2, 1, 3], [1, 3, 1]]
    assert read_pairs(tmp_path, ["b.parquet"]).src_text is None


def test_missing_text_is_a_clear_error(tmp_path):
    write(tmp_path / "a.parquet", [([6], [7], "", "")], text=False)
    assert len(read_pairs(tmp_path, ["a.parquet"])) == 1
    with pytest.raises(ManifestError, match="keep_text=true"):
        read_pairs(tmp_path, ["a.parquet"], text=True)
