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

# Special tokens are never noise: [PAD], <go>, <eos> (ids 0, 4, 5); [UNK], [NUM], [URL] (1, 2, 3)
# are noise unless excluded.
NEVER_NOISE = (0, 4, 5)
PLACEHOLDERS = (1, 2, 3)


def noise_distribution(counts: Sequence[int] | torch.Tensor, power: float = 0.75,
                       exclude_placeholders: bool = False) -> torch.Tensor:
    """Unigram counts raised to ``power`` and normalized; excluded ids get probability 0."""
    weights = torch.as_tensor(counts, dtype=torch.float64).clamp(min=0) ** power
    excluded = list(NEVER_NOISE) + (list(PLACEHOLDERS) if exclude_placeholders else [])
    weights[[i for i in excluded if i < len(weights)]] = 0
    total = weights.sum()
    if total <= 0:
        raise ValueError("no word can be drawn as noise (all counts are zero)")
    return (weights / total).float()


class NoiseSampler:
    """Draws noise words from a distribution by inverting its cumulative sum (O(log V) per draw)."""

    def __init__(self, probs: torch.Tensor):
        self.cdf = torch.cumsum(probs.double(), 0).to(probs.device)
        self.cdf /= self.cdf[-1].clone()
        self.last = int(torch.nonzero(probs > 0).max())

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        uniform = torch.rand(shape, generator=generator, device=self.cdf.device, dtype=torch.float64)
        return torch.searchsorted(self.cdf, uniform, right=True).clamp_(max=self.last)


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
