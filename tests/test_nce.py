"""NCE loss against a direct computation; the noise distribution and its sampling."""

from __future__ import annotations

import math

import pytest
import torch

from rnn_models.nce import draw_noise, nce_loss, noise_distribution


def test_noise_distribution_is_unigram_to_the_075():
    counts = [0, 10, 20, 30, 0, 0, 100, 50, 1]
    probs = noise_distribution(counts)
    assert probs[[0, 4, 5]].tolist() == [0, 0, 0]  # [PAD], <go>, <eos> are never noise
    weights = [c ** 0.75 if i not in (0, 4, 5) else 0 for i, c in enumerate(counts)]
    assert probs.tolist() == pytest.approx([w / sum(weights) for w in weights], rel=1e-6)
    no_placeholders = noise_distribution(counts, exclude_placeholders=True)
    assert no_placeholders[:6].sum() == 0 and no_placeholders.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        noise_distribution([5, 0, 0, 0, 7, 9])


def test_draws_follow_the_distribution():
    probs = noise_distribution([0, 0, 0, 0, 0, 0, 1000, 300, 10])
    draws = draw_noise(probs, batch=4000, k=5, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 5) and set(draws.unique().tolist()) <= {6, 7, 8}
    share = torch.bincount(draws.flatten(), minlength=9).float() / draws.numel()
    assert share[6:].tolist() == pytest.approx(probs[6:].tolist(), abs=0.01)


def _direct(centre, cw, cb, nw, nb, kq_c, kq_n):
    def log_sigmoid(x):
        return -math.log1p(math.exp(-x))

    total = 0.0
    for i in range(centre.shape[0]):
        s = float(centre[i] @ cw[i] + cb[i]) - (float(kq_c[i]) if kq_c is not None else 0)
        loss = -log_sigmoid(s)
        for j in range(nw.shape[1]):
            n = float(nw[i, j] @ centre[i] + nb[i, j]) - (float(kq_n[i, j]) if kq_n is not None else 0)
            loss -= log_sigmoid(-n)
        total += loss
    return total / centre.shape[0]


@pytest.mark.parametrize("corrected", [True, False])
def test_nce_loss_matches_a_direct_computation(corrected):
    g = torch.Generator().manual_seed(1)
    b, k, d = 7, 4, 5
    centre, cw, nw = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g), torch.randn(b, k, d, generator=g)
    cb, nb = torch.randn(b, generator=g), torch.randn(b, k, generator=g)
    kq_c, kq_n = (torch.randn(b, generator=g), torch.randn(b, k, generator=g)) if corrected else (None, None)
    got = nce_loss(centre, cw, cb, nw, nb, kq_c, kq_n)
    assert got.item() == pytest.approx(_direct(centre, cw, cb, nw, nb, kq_c, kq_n), rel=1e-5)


def test_correction_changes_the_loss():
    centre, w = torch.ones(1, 2), torch.ones(1, 2)
    plain = nce_loss(centre, w, torch.zeros(1), w.unsqueeze(1), torch.zeros(1, 1), None, None)
    corrected = nce_loss(centre, w, torch.zeros(1), w.unsqueeze(1), torch.zeros(1, 1),
                         torch.full((1,), math.log(5 * 0.01)), torch.full((1, 1), math.log(5 * 0.5)))
    assert corrected.item() != pytest.approx(plain.item())
