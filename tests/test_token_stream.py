"""Workers' shares of the token stream: complete, disjoint, balanced, reading only what they need."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.contract.specials import EOS_ID
from pipelines.contract.token_stream import read_token_share


@pytest.fixture()
def shards(tmp_path):
    rng = np.random.default_rng(0)
    files, sentences = [], []
    for f in range(4):
        rows = [rng.integers(6, 50, size=rng.integers(1, 30)).astype(np.int32) for _ in range(rng.integers(5, 20))]
        pq.write_table(
            pa.table(
                {
                    "ids": pa.array([r.tolist() for r in rows], pa.list_(pa.int32())),
                    "ids_len": pa.array([len(r) for r in rows], pa.int32()),
                }
            ),
            tmp_path / f"part-{f}.parquet",
        )
        files.append(f"part-{f}.parquet")
        sentences += rows
    return tmp_path, files, sentences


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_shares_partition_the_stream(shards, world):
    directory, files, sentences = shards
    stream = np.concatenate(sentences)
    owner = np.repeat(np.arange(len(sentences)), [len(s) for s in sentences])
    parts = [read_token_share(directory, files, rank, world) for rank in range(world)]
    assert np.array_equal(np.concatenate([p.tokens for p in parts]), stream)
    assert np.array_equal(np.concatenate([p.sentences for p in parts]), owner)
    sizes = [p.tokens.size for p in parts]
    assert max(sizes) - min(sizes) <= 1 and all(p.total == stream.size for p in parts)


def test_max_tokens_takes_the_beginning(shards):
    directory, files, sentences = shards
    stream = np.concatenate(sentences)
    parts = [read_token_share(directory, files, rank, 2, max_tokens=25) for rank in range(2)]
    assert np.array_equal(np.concatenate([p.tokens for p in parts]), stream[:25])


@pytest.mark.parametrize("world", [1, 3])
def test_documents_ended_by_eos(shards, world):
    directory, files, sentences = shards
    stream = np.concatenate([np.append(s, EOS_ID) for s in sentences])
    parts = [read_token_share(directory, files, rank, world, eos=True) for rank in range(world)]
    assert np.array_equal(np.concatenate([p.tokens for p in parts]), stream)
    assert all(p.total == stream.size for p in parts)
