"""Length-bucketed, token-sized batches and their split over workers."""

from __future__ import annotations

import numpy as np
import torch

from rnn_models.batching import pad, token_batches, worker_batches


def lengths(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 40, n), rng.integers(1, 40, n)


def test_every_example_once_within_the_token_budget():
    src, tgt = lengths()
    batches = token_batches(src, tgt, 300, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(src)))
    for b in batches:
        width = max(int(src[b].max()), int(tgt[b].max()) + 1)
        assert width * len(b) <= 300 or len(b) == 1


def test_a_sentence_cap_limits_every_batch():
    src, tgt = lengths()
    batches = token_batches(src, tgt, 100_000, seed=1, epoch=0, max_sentences=64)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(src)))
    assert max(len(b) for b in batches) == 64 and len(batches) == -(-len(src) // 64)


def test_deterministic_per_seed_and_epoch():
    src, tgt = lengths()
    same = token_batches(src, tgt, 300, 1, 2), token_batches(src, tgt, 300, 1, 2)
    assert all(np.array_equal(a, b) for a, b in zip(*same))
    other = token_batches(src, tgt, 300, 1, 3)
    assert [b.tolist() for b in other] != [b.tolist() for b in same[0]]


def test_bucketing_keeps_padding_low():
    src, tgt = lengths(2000)
    batches = token_batches(src, tgt, 1000, 0, 0)
    padded = sum(len(b) * int(tgt[b].max()) for b in batches)
    assert padded < 1.15 * tgt.sum()


def test_workers_get_equal_counts_and_all_batches():
    batches = [np.array([i]) for i in range(7)]
    shares = [worker_batches(batches, r, 3) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert sorted(int(b[0]) for s in shares for b in s) == sorted(list(range(7)) + [0, 1])
    assert worker_batches(batches, 0, 1) == batches


def test_pad():
    ids, lens = pad([np.array([5, 6, 7]), np.array([8])])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lens.tolist() == [3, 1]
    assert ids.dtype == torch.long
