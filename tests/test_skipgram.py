"""Subsampling, windows, the word2vec loss against a direct computation, and its SGD step."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.contract.errors import ConfigError
from rnn_models.skipgram import (
    Stream,
    Word2Vec,
    Word2VecSettings,
    keep_probabilities,
    linear_lr,
    sentence_ids,
    subsample,
    training_stream,
)


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


def test_windows_match_brute_force_and_stay_in_sentences():
    lengths = torch.tensor([5, 1, 7, 3])
    tokens = torch.arange(100, 100 + int(lengths.sum()))
    sentence = sentence_ids(lengths)
    window = 3
    batch = Stream.draw(tokens, sentence, window, torch.Generator().manual_seed(3)).windows()
    reach = torch.randint(1, window + 1, (tokens.numel(), 1), generator=torch.Generator().manual_seed(3)).flatten()
    expected = {
        (int(tokens[i]), int(tokens[j]))
        for i in range(tokens.numel())
        for j in range(tokens.numel())
        if i != j and sentence[i] == sentence[j] and abs(i - j) <= reach[i]
    }
    got = [(int(c), int(x)) for c, row, m in zip(batch.centres, batch.contexts, batch.mask) for x in row[m]]
    assert len(got) == len(set(got)) == batch.pairs and set(got) == expected
    assert batch.contexts[~batch.mask].eq(0).all() and batch.contexts.shape == (tokens.numel(), 2 * window)


def test_subsampled_words_leave_no_gap():
    tokens, keep = torch.tensor([6, 7, 8, 7, 9]), torch.tensor([1.0] * 7 + [0.0, 1.0, 1.0])
    batch = training_stream(tokens, torch.zeros(5, dtype=torch.long), keep, window=1).windows()
    assert batch.centres.tolist() == [6, 8, 9]
    assert batch.contexts[batch.mask].tolist() == [8, 6, 9, 8]


def _model(loss="nce", cbow=False, block=1, vocab=16, negatives=3):
    counts = torch.tensor([0, 0, 0, 0, 0, 0] + [10 + i for i in range(vocab - 6)])
    model = Word2Vec(Word2VecSettings(vocab, 8, cbow, loss, negatives=negatives, noise_block=block), counts)
    torch.nn.init.normal_(model.output.weight, std=0.3, generator=torch.Generator().manual_seed(2))
    return model.double()


def _batch(seed=0, sentences=3, length=6, window=2, vocab=16):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(6, vocab, (sentences * length,), generator=g)
    return Stream.draw(tokens, sentence_ids(torch.full((sentences,), length)), window, g).windows()


def _direct_loss(model, batch, noise):
    def log_sigmoid(x):
        return -math.log1p(math.exp(-x))

    w_in, w_out, bias, kq = (
        t.detach() for t in (model.input.weight, model.output.weight, model.bias.weight[:, 0], model.log_kq)
    )
    correction = (lambda w: float(kq[w])) if model.nce else (lambda w: 0.0)
    total, terms = 0.0, 0
    for i, centre in enumerate(batch.centres.tolist()):
        words = batch.contexts[i][batch.mask[i]].tolist()
        inputs = [w_in[words].mean(0)] if model.cbow else [w_in[w] for w in words]
        for vector in inputs if words else []:
            total -= log_sigmoid(float(vector @ w_out[centre] + bias[centre]) - correction(centre))
            for n in noise[i // model.noise_block].tolist():
                total -= log_sigmoid(-(float(vector @ w_out[n] + bias[n]) - correction(n)))
            terms += 1
    return total / terms


@pytest.mark.parametrize(
    "loss,cbow,block",
    [("nce", False, 1), ("nce", False, 4), ("negative", False, 2), ("nce", True, 1), ("negative", True, 3)],
)
def test_loss_matches_direct_computation_and_step_matches_autograd(loss, cbow, block):
    model, batch = _model(loss, cbow, block), _batch()
    noise = model.draw_noise(batch, torch.Generator().manual_seed(1))
    assert noise.shape == (-(-len(batch) // block), 3)
    assert model(batch, noise).item() == pytest.approx(_direct_loss(model, batch, noise), rel=1e-9)

    reference = _model(loss, cbow, block)
    reference.load_state_dict(model.state_dict())
    terms = len(batch) if cbow else batch.pairs
    (reference(batch, noise) * terms).backward()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    summed = model.sgd_step(batch, noise, lr=0.1)
    assert summed == pytest.approx(reference(batch, noise).item() * terms, rel=1e-9)
    for name, p in reference.named_parameters():
        step = 0 if p.grad is None else 0.1 * p.grad
        assert torch.allclose(model.state_dict()[name], before[name] - step, atol=1e-12), name
    assert model.bias.weight.requires_grad == (loss == "nce")
    assert model.input.weight[0].eq(before["input.weight"][0]).all()  # padding slots change nothing


def test_nce_starts_from_the_noise_distribution():
    model = _model().float()
    batch = _batch()
    torch.nn.init.zeros_(model.output.weight)
    noise = model.draw_noise(batch)
    assert model(batch, noise).item() == pytest.approx(4 * math.log(2), rel=1e-5)  # every logit 0
    with pytest.raises(ConfigError, match="model.loss must be one of nce, negative"):
        _model(loss="hinge")


@pytest.mark.parametrize("cbow", [False, True])
def test_training_learns_co_occurrence(cbow):
    """Words 6-10 occur together, 11-15 together: after training, neighbours share a group."""
    g = torch.Generator().manual_seed(0)
    model = _model(cbow=cbow, block=2).float()
    torch.nn.init.zeros_(model.output.weight)
    groups = [torch.arange(6, 11), torch.arange(11, 16)]
    for _ in range(300):
        group = groups[int(torch.randint(2, (1,), generator=g))]
        tokens = group[torch.randint(5, (48,), generator=g)]
        batch = Stream.draw(tokens, sentence_ids(torch.full((8,), 6)), 2, g).windows()
        model.sgd_step(batch, model.draw_noise(batch, g), lr=0.05)
    vectors = torch.nn.functional.normalize(model.input.weight[6:], dim=1)
    similarity = vectors @ vectors.T
    same = similarity[:5, :5].mean() + similarity[5:, 5:].mean()
    across = similarity[:5, 5:].mean() * 2
    assert same > across + 0.5


def test_linear_learning_rate():
    assert linear_lr(0.025, 0.0) == 0.025
    assert linear_lr(0.025, 0.5) == pytest.approx(0.0125)
    assert linear_lr(0.025, 1.0) == pytest.approx(0.025 * 1e-4)
