"""The noise distribution, its sampler, and the NCE loss against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.contract.specials import PLACEHOLDER_IDS, STRUCTURAL_IDS
from rnn_models.nce import NoiseSampler, corrected_logits, nce_logit_grads, nce_loss, noise_distribution


def test_noise_distribution_is_unigram_to_the_075():
    counts = [0, 10, 20, 30, 0, 0, 100, 50, 1]
    probs = noise_distribution(counts)
    assert probs[list(STRUCTURAL_IDS)].tolist() == [0, 0, 0]  # [PAD], <go>, <eos> are never noise
    weights = [c**0.75 if i not in STRUCTURAL_IDS else 0 for i, c in enumerate(counts)]
    assert probs.tolist() == pytest.approx([w / sum(weights) for w in weights], rel=1e-6)
    no_placeholders = noise_distribution(counts, exclude_placeholders=True)
    assert no_placeholders[list(PLACEHOLDER_IDS)].sum() == 0 and no_placeholders.sum() == pytest.approx(1.0)
    assert no_placeholders[6:].tolist() == pytest.approx([w / sum(weights[6:]) for w in weights[6:]], rel=1e-6)
    with pytest.raises(ValueError):
        noise_distribution([5, 0, 0, 0, 7, 9])


def test_draws_follow_the_distribution_and_skip_impossible_words():
    probs = noise_distribution([0, 0, 0, 0, 0, 0, 1000, 300, 10, 0, 40, 0])
    sampler = NoiseSampler(probs)
    draws = sampler((4000, 5), generator=torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 5) and set(draws.unique().tolist()) <= {6, 7, 8, 10}
    assert sampler.to(torch.device("cpu"))((4000, 5), generator=torch.Generator().manual_seed(0)).equal(draws)
    share = torch.bincount(draws.flatten(), minlength=12).float() / draws.numel()
    assert share.tolist() == pytest.approx(probs.tolist(), abs=0.01)


def _direct(true, noise, kq_true, kq_noise):
    def log_sigmoid(x):
        return -math.log1p(math.exp(-x))

    loss = -log_sigmoid(true - kq_true)
    for n, kq in zip(noise, kq_noise):
        loss -= log_sigmoid(-(n - kq))
    return loss


def test_nce_loss_and_its_gradient_match_a_direct_computation():
    g = torch.Generator().manual_seed(1)
    true, noise = torch.randn(7, dtype=torch.float64, generator=g), torch.randn(7, 4, dtype=torch.float64, generator=g)
    kq_true, kq_noise = (
        torch.randn(7, dtype=torch.float64, generator=g),
        torch.randn(7, 4, dtype=torch.float64, generator=g),
    )
    got = nce_loss(corrected_logits(true, kq_true), corrected_logits(noise, kq_noise))
    expected = [_direct(float(true[i]), noise[i].tolist(), float(kq_true[i]), kq_noise[i].tolist()) for i in range(7)]
    assert got.tolist() == pytest.approx(expected, rel=1e-9)
    plain = nce_loss(corrected_logits(true, None), corrected_logits(noise, None))
    assert plain.tolist() == pytest.approx([_direct(float(true[i]), noise[i].tolist(), 0, [0] * 4) for i in range(7)])
    assert not torch.allclose(plain, got)
    t, n = true.clone().requires_grad_(), noise.clone().requires_grad_()
    nce_loss(t, n).sum().backward()
    d_true, d_noise = nce_logit_grads(true, noise)
    assert torch.allclose(t.grad, d_true) and torch.allclose(n.grad, d_noise)
