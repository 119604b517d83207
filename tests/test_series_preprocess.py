"""Series preprocessing in Spark (data.kind=series): many series by an id column, every row
accounted for, the hold-out kept out of training and scaling, the same output whatever the
partitioning, and bad input refused with a clear error."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.common.config import load_config, to_dict
from pipelines.contract.errors import ConfigError, InputError
from pipelines.contract.manifest import load_manifest
from pipelines.contract.series_shards import read_windows
from pipelines.spark.series import preprocess_series


def config(inputs, *overrides):
    cfg = to_dict(
        load_config(
            "preprocess", ["data.kind=series", "output.shards=3", "series.window=6", "series.horizon=4", *overrides]
        )
    )
    cfg["data"]["inputs"] = inputs
    return cfg


def _many_series(path, count=5, points=40):
    """``count`` monthly series (ids s0..) of ``points`` rows each, rows shuffled, plus bad rows."""
    rng = np.random.default_rng(0)
    lines = []
    for k in range(count):
        for i in range(points):
            year, month = 2000 + i // 12, i % 12 + 1
            lines.append(f"s{k},{year}-{month:02d},{100 * k + i + rng.normal():.3f}")
    rng.shuffle(lines)
    lines += ["s0,not-a-date,5", ",2001-01,5", "short,2000-01,1", "short,2000-02,2", "s1,2000-01,999"]
    path.write_text("id,month,passengers\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_many_series_accounting_holdout_and_partition_invariance(spark, tmp_path):
    source = _many_series(tmp_path / "many.csv")
    args = ("series.time_column=month", "series.value_columns=[passengers]", "series.id_column=id")
    outputs = []
    for partitions in (1, 4):
        out = tmp_path / f"out{partitions}"
        preprocess_series(
            spark, config([{"path": str(source)}], f"spark.partitions={partitions}", *args), out, log=lambda m: None
        )
        outputs.append(out)
    m = load_manifest(outputs[0], "series")
    c = m["counts"]
    assert c["read"] == 5 * 40 + 5 == c["kept"] + sum(c["dropped"].values())
    # the duplicate of s1's first month is dropped (the first row in input order stays), the short
    # series is too short for a window of 6 and two tails of 4, the id-less row has no series
    assert c["dropped"] == {
        "missing_id": 1,
        "bad_time": 1,
        "duplicate_time": 1,
        "irregular_time": 0,
        "missing_value": 0,
        "too_short": 2,
    }
    assert m["series"]["count"] == 7 and m["series"]["kept"] == 5 and m["series"]["steps"] == {"1 months": 5}
    # one train window per start, one valid and one test forecast per series
    assert m["splits"]["train"]["examples"] == 5 * (40 - 8 - 6) and m["splits"]["valid"]["examples"] == 5
    # the same bytes whatever the partitioning
    for split in ("train", "valid", "test"):
        assert m["splits"][split]["files"] == load_manifest(outputs[1])["splits"][split]["files"]
        for name in m["splits"][split]["files"]:
            assert pq.read_table(outputs[0] / name).equals(pq.read_table(outputs[1] / name))
    # no held-out value in a training window, and each series' scaling is that of its train part
    train = read_windows(outputs[0], m["splits"]["train"]["files"], 1, 0)
    test = read_windows(outputs[0], m["splits"]["test"]["files"], 1, 0)
    table = {r["series"]: r for r in pq.read_table(outputs[0] / "series.parquet").to_pylist()}
    for n, name in enumerate(test.series):
        k = int(name[1:])
        raw_train = np.array([100 * k + i for i in range(32)], float)  # before noise: within 4 of the truth
        centre, spread = table[name]["centre"][0], table[name]["spread"][0]
        assert abs(centre - raw_train.mean()) < 1 and abs(spread - raw_train.std()) < 1
        mine = [i for i, s in enumerate(train.series) if s == name]
        largest = (train.targets[mine] * spread + centre).max()
        assert largest < 100 * k + 32 and test.future[n].min() > 100 * k + 34
    assert json.loads((outputs[0] / "manifest.json").read_text())["series"]["value_columns"] == ["passengers"]


def test_one_series_per_file_named_by_the_file_with_gaps(spark, tmp_path):
    lines = [f"{1900 + i},{i}" for i in range(30) if i not in (10, 11)] + ["1950,"]
    (tmp_path / "flow.csv").write_text("date,value\n" + "\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    m = preprocess_series(
        spark, config([{"path": str(tmp_path / "flow.csv")}], "series.calendar=true"), out, log=lambda x: None
    )
    assert m["counts"]["notes"]["gaps"] == 2 + 20 and m["counts"]["notes"]["interpolated"] == 2 + 20 + 1
    assert m["series"]["calendar_features"] == 2
    rows = read_windows(out, m["splits"]["valid"]["files"], 1, 2)
    assert rows.series == ["flow"] and rows.calendar.shape == (1, 6 + 4 - 1, 2)
    # 1930-1950 have no value after them: filled with the last one (29)
    np.testing.assert_allclose(rows.future[0, :, 0], [29.0] * 4)
    assert m["series"]["steps"] == {"1 years": 1}


def test_bad_input_is_refused_clearly(spark, tmp_path):
    (tmp_path / "a.csv").write_text("when,value\n2000,1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"a.csv: no column\(s\) \['date'\]"):
        preprocess_series(spark, config([{"path": str(tmp_path / "a.csv")}]), tmp_path / "o", log=lambda m: None)
    with pytest.raises(ConfigError, match="series.value_columns"):
        preprocess_series(
            spark,
            config([{"path": str(tmp_path / "a.csv")}], "series.value_columns=[]"),
            tmp_path / "o",
            log=lambda m: None,
        )
    with pytest.raises(InputError, match="format 'text' does not fit"):
        preprocess_series(
            spark, config([{"path": str(tmp_path / "a.csv"), "format": "text"}]), tmp_path / "o", log=lambda m: None
        )
    assert not (tmp_path / "o").exists()
