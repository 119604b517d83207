"""Subsampling, pair generation and the word2vec module."""

from __future__ import annotations

import pytest
import torch

from rnn_models.nce import noise_distribution
from rnn_models.skipgram import Word2Vec, keep_probabilities, linear_lr, sentence_ids, skipgram_pairs, subsample


def test_keep_probabilities_follow_word2vec():
    counts = torch.tensor([0, 1, 10, 1000, 98989])
    keep = keep_probabilities(counts, sample=1e-3)
    f = 98989 / counts.sum().item()
    assert keep[4].item() == pytest.approx(((f / 1e-3) ** 0.5 + 1) * 1e-3 / f, rel=1e-5)
    assert keep[0].item() == 1 and keep[1].item() == 1 and keep[4] < keep[3] <= 1
    assert keep_probabilities(counts, sample=0).tolist() == [1.0] * 5


def test_subsampling_rate():
    keep = torch.tensor([1.0, 0.25])
    tokens = torch.tensor([0, 1]).repeat(20000)
    mask = subsample(tokens, keep, torch.Generator().manual_seed(0))
    assert mask[tokens == 0].all()
    assert mask[tokens == 1].float().mean().item() == pytest.approx(0.25, abs=0.01)


def test_pairs_match_brute_force_and_stay_in_sentences():
    lengths = torch.tensor([5, 1, 7, 3])
    tokens = torch.arange(int(lengths.sum()))
    sentence = sentence_ids(lengths)
    window = 3
    centres, contexts = skipgram_pairs(tokens, sentence, window, torch.Generator().manual_seed(3))
    span = torch.randint(1, window + 1, (tokens.numel(),), generator=torch.Generator().manual_seed(3))
    expected = {(i, j) for i in range(tokens.numel()) for j in range(tokens.numel())
                if i != j and sentence[i] == sentence[j] and abs(i - j) <= span[i]}
    got = list(zip(centres.tolist(), contexts.tolist()))
    assert len(got) == len(set(got)) and set(got) == expected


def _model(loss="nce", cbow=False, vocab=16):
    counts = torch.tensor([0, 0, 0, 0, 0, 0] + [10] * (vocab - 6))
    return Word2Vec(vocab, 8, noise_distribution(counts), negatives=3, loss=loss, cbow=cbow)


@pytest.mark.parametrize("loss", ["nce", "negative"])
def test_training_learns_co_occurrence(loss):
    """Words 6-10 occur together, 11-15 together: after training, neighbours share a group."""
    torch.manual_seed(0)
    model = _model(loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    groups = [torch.arange(6, 11), torch.arange(11, 16)]
    for _ in range(300):
        group = groups[torch.randint(2, (1,)).item()]
        sentences = group[torch.randint(5, (8, 6))]
        tokens = sentences.flatten()
        c, o = skipgram_pairs(tokens, sentence_ids(torch.full((8,), 6)), 2)
        loss_value = model(tokens[c], tokens[o])
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
    vectors = torch.nn.functional.normalize(model.input.weight[6:], dim=1)
    similarity = vectors @ vectors.T
    same = similarity[:5, :5].mean() + similarity[5:, 5:].mean()
    across = similarity[:5, 5:].mean() * 2
    assert same > across + 0.5


def test_cbow_and_bad_loss():
    model = _model(cbow=True)
    inputs = torch.tensor([[6, 7, 0], [8, 9, 10]])
    loss = model(inputs, torch.tensor([11, 12]), input_mask=inputs != 0)
    loss.backward()
    assert torch.isfinite(loss) and model.input.weight.grad[0].abs().sum() == 0  # padding ignored
    with pytest.raises(ValueError):
        _model(loss="hinge")


def test_linear_learning_rate():
    assert linear_lr(0.025, 0.0) == 0.025
    assert linear_lr(0.025, 0.5) == pytest.approx(0.0125)
    assert linear_lr(0.025, 1.0) == pytest.approx(0.025 * 1e-4)
