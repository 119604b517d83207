"""Batches of similar lengths, sized by tokens, the same for every number of workers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipelines.contract.specials import PAD_ID


def token_batches(
    src_len: np.ndarray,
    tgt_len: np.ndarray,
    batch_tokens: int,
    seed: int,
    epoch: int,
    pool: int = 100,
    max_sentences: int = 0,
) -> list[np.ndarray]:
    """Example indices grouped into batches of at most ``batch_tokens`` padded tokens on either side
    (the target counted with its ``<eos>``) and, if ``max_sentences`` > 0, at most that many
    examples; a longer example gets a batch of its own.

    Examples are shuffled, then sorted by length within pools of ``pool`` batches' worth, and the
    batches shuffled again: little padding, yet a different order every epoch. Depends only on the
    lengths, ``seed`` and ``epoch``."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(src_len))
    widths = np.maximum(src_len, tgt_len + 1)
    average = max(1.0, float(widths.mean())) if len(widths) else 1.0
    pool_size = max(1, int(pool * batch_tokens / average))
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool_size):
        chunk = order[start : start + pool_size]
        chunk = chunk[np.lexsort((src_len[chunk], tgt_len[chunk]))]
        current: list[int] = []
        widest = 0
        for index in chunk.tolist():
            wider = max(widest, int(widths[index]))
            if current and (wider * (len(current) + 1) > batch_tokens or len(current) == max_sentences):
                batches.append(np.array(current))
                current, wider = [], int(widths[index])
            current.append(index)
            widest = wider
        if current:
            batches.append(np.array(current))
    return [batches[i] for i in rng.permutation(len(batches))]


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The example indices of an epoch's batches: a new shuffle every epoch, the same for every number of workers."""
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return [order[start : start + batch_size] for start in range(0, count, batch_size)]


def worker_batches(batches: Sequence[np.ndarray], rank: int, world: int) -> list[np.ndarray]:
    """Worker ``rank``'s batches: every ``world``-th one. All workers get the same count (data-parallel
    steps must pair up), so the list is first topped up with batches from its start."""
    batches = list(batches)
    if not batches:
        return []
    missing = -len(batches) % world
    batches += [batches[i % len(batches)] for i in range(missing)]
    return batches[rank::world]


def pad(sequences: Sequence[np.ndarray], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids (B, max length) and lengths (B,)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    out = torch.full((len(sequences), int(lengths.max()) if len(sequences) else 0), PAD_ID, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
    return out.to(device), lengths.to(device)
