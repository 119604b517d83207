"""Split assignment by a stable hash: independent of order and partitioning, fractions respected."""

from __future__ import annotations

from pyspark.sql import functions as F

from pipelines.spark.split import assign_split, example_hash, shard_of


def _assign(df, valid=0.1, test=0.1, seed=0, fixed=None):
    return (
        df.withColumn("h", example_hash(["tokens"], seed))
        .withColumn("split", assign_split(F.col("h"), valid, test, fixed))
        .withColumn("shard", shard_of(F.col("h"), 4))
    )


def test_split_is_stable_across_partitionings_and_order(spark):
    rows = [(i, [f"w{i}", f"x{i % 7}"]) for i in range(2000)]
    df = spark.createDataFrame(rows, "i int, tokens array<string>")
    one = {r["i"]: (r["split"], r["shard"]) for r in _assign(df.repartition(1)).collect()}
    many = {r["i"]: (r["split"], r["shard"]) for r in _assign(df.repartition(7).orderBy(F.rand(3))).collect()}
    assert one == many
    shares = {s: sum(1 for v in one.values() if v[0] == s) / len(one) for s in ("train", "valid", "test")}
    assert 0.07 < shares["valid"] < 0.13 and 0.07 < shares["test"] < 0.13
    assert {v[1] for v in one.values()} == {0, 1, 2, 3}


def test_seed_changes_the_draw(spark):
    df = spark.createDataFrame([(i, [f"w{i}"]) for i in range(500)], "i int, tokens array<string>")
    a = [r["split"] for r in _assign(df, seed=0).orderBy("i").collect()]
    b = [r["split"] for r in _assign(df, seed=1).orderBy("i").collect()]
    assert a != b


def test_fixed_split_wins(spark):
    df = spark.createDataFrame([(i, [f"w{i}"], "test") for i in range(50)], "i int, tokens array<string>, f string")
    assert {r["split"] for r in _assign(df, fixed=F.col("f")).collect()} == {"test"}
