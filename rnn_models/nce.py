"""Noise-contrastive estimation for word2vec, as in the TensorFlow word2vec tutorial.

A pair (input word, target word) is scored ``s(w) = <v_input, u_w> + b_w``. NCE trains a binary
classifier that tells the true target from ``k`` noise words drawn from the noise distribution
``q``, on logits corrected by ``log(k q(w))``:

    loss = -log sigmoid(s(w) - log k q(w)) - sum_j log sigmoid(-(s(n_j) - log k q(n_j)))

Negative sampling (Mikolov et al. 2013) is the same objective without the correction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pipelines.contract.specials import PLACEHOLDER_IDS, STRUCTURAL_IDS


def noise_distribution(
    counts: Sequence[int] | torch.Tensor, power: float = 0.75, exclude_placeholders: bool = False
) -> torch.Tensor:
    """Unigram counts raised to ``power`` and normalized. The structural specials ([PAD], <go>,
    <eos>) are never noise; the placeholders ([UNK], [NUM], [URL]) are unless excluded."""
    weights = torch.as_tensor(counts, dtype=torch.float64).clamp(min=0) ** power
    excluded = list(STRUCTURAL_IDS) + (list(PLACEHOLDER_IDS) if exclude_placeholders else [])
    weights[[i for i in excluded if i < len(weights)]] = 0
    total = weights.sum()
    if total <= 0:
        raise ValueError("no word can be drawn as noise (all counts are zero)")
    return (weights / total).float()


class NoiseSampler:
    """Draws noise words from a distribution in O(1) per draw with Walker's alias method (Vose's
    construction): pick a column uniformly, keep it with its acceptance probability, else take its
    alias. Words of probability 0 are never drawn."""

    def __init__(self, probs: torch.Tensor):
        p = probs.double().cpu()
        p = (p / p.sum()).tolist()
        n = len(p)
        scaled = [x * n for x in p]
        accept, alias = [0.0] * n, list(range(n))
        small = [i for i, x in enumerate(scaled) if x < 1]
        large = [i for i, x in enumerate(scaled) if x >= 1]
        while small and large:
            low, high = small.pop(), large.pop()
            accept[low], alias[low] = scaled[low], high
            scaled[high] += scaled[low] - 1
            (small if scaled[high] < 1 else large).append(high)
        likeliest = max(range(n), key=p.__getitem__)
        for i in small + large:  # left over by rounding: full columns, unless impossible words
            accept[i], alias[i] = (1.0, i) if p[i] > 0 else (0.0, likeliest)
        self.accept = torch.tensor(accept, dtype=torch.float32, device=probs.device)
        self.alias = torch.tensor(alias, dtype=torch.int64, device=probs.device)

    def to(self, device: torch.device) -> "NoiseSampler":
        """The same sampler with its tables on ``device``."""
        moved = object.__new__(NoiseSampler)
        moved.accept, moved.alias = self.accept.to(device), self.alias.to(device)
        return moved

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        device = self.alias.device
        column = torch.randint(len(self.alias), shape, generator=generator, device=device)
        keep = torch.rand(shape, generator=generator, device=device) < self.accept[column]
        return torch.where(keep, column, self.alias[column])


def corrected_logits(logits: torch.Tensor, log_kq: torch.Tensor | None) -> torch.Tensor:
    """Logits minus ``log(k q(w))`` for NCE; unchanged for negative sampling (``log_kq`` None)."""
    return logits if log_kq is None else logits - log_kq


def nce_loss(true_logit: torch.Tensor, noise_logit: torch.Tensor) -> torch.Tensor:
    """Per-pair loss from corrected logits: ``true_logit`` (...) and ``noise_logit`` (..., k)."""
    # -log sigmoid(x) = softplus(-x); -log sigmoid(-x) = softplus(x)
    return F.softplus(-true_logit) + F.softplus(noise_logit).sum(-1)


def nce_logit_grads(true_logit: torch.Tensor, noise_logit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Derivatives of :func:`nce_loss` with respect to its two arguments."""
    return torch.sigmoid(true_logit) - 1, torch.sigmoid(noise_logit)
