"""Noise-contrastive estimation for word2vec, as in the TensorFlow word2vec tutorial.

For a (centre, context) pair the model scores ``s(w) = <v_centre, u_w> + b_w``. NCE trains a
binary classifier that tells the true context from ``k`` noise words drawn from the noise
distribution ``q``, on logits corrected by ``log(k q(w))``:

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


def draw_noise(probs: torch.Tensor, batch: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(batch, k)`` noise word ids drawn from ``probs`` with replacement."""
    return torch.multinomial(probs, batch * k, replacement=True, generator=generator).view(batch, k)


def nce_loss(centre: torch.Tensor, context_weights: torch.Tensor, context_bias: torch.Tensor,
             noise_weights: torch.Tensor, noise_bias: torch.Tensor, log_kq_context: torch.Tensor | None,
             log_kq_noise: torch.Tensor | None) -> torch.Tensor:
    """Mean NCE loss over a batch.

    ``centre`` (B, D): centre-word vectors; ``context_weights`` (B, D) and ``context_bias`` (B,):
    output vectors and biases of the true context words; ``noise_weights`` (B, k, D) and
    ``noise_bias`` (B, k): those of the noise words; ``log_kq_*``: ``log(k q(w))`` of the context
    (B,) and noise words (B, k), or None for negative sampling (no correction).
    """
    true_logit = (centre * context_weights).sum(-1) + context_bias
    noise_logit = torch.bmm(noise_weights, centre.unsqueeze(-1)).squeeze(-1) + noise_bias
    if log_kq_context is not None:
        true_logit = true_logit - log_kq_context
        noise_logit = noise_logit - log_kq_noise
    # -log sigmoid(x) = softplus(-x); -log sigmoid(-x) = softplus(x)
    return (F.softplus(-true_logit) + F.softplus(noise_logit).sum(-1)).mean()
