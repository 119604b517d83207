import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pipelines.contract.errors import ConfigError
from pipelines.contract.specials import GO_ID, PAD_ID
from rnn_models.language_model import (
    LanguageModel,
    LanguageModelSettings,
    segment_count,
    segments,
    stream_loss,
    stream_rows,
)
from rnn_models.recurrent import detach_state
from rnn_models.sampling import SampleSettings, generate, next_token


def _model(cell: str = "lstm", vocab: int = 16, seed: int = 0, size: int = 8, **kw) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(LanguageModelSettings(vocab=vocab, embedding_size=size, hidden_size=size, cell=cell, **kw))


def test_rows_are_contiguous_and_only_the_end_is_padding():
    rows = stream_rows(np.arange(6, 16), 4)  # 10 tokens in 4 rows of 3
    assert rows.tolist() == [[6, 7, 8], [9, 10, 11], [12, 13, 14], [15, PAD_ID, PAD_ID]]
    pieces = list(segments(rows, 2))
    assert [(x.tolist(), y.tolist()) for x, y in pieces][0] == (
        [[6, 7], [9, 10], [12, 13], [15, 0]],
        [[7, 8], [10, 11], [13, 14], [0, 0]],
    )
    assert [x.size(1) for x, _ in pieces] == [2] and segment_count(10, 4, 2) == 1
    assert segment_count(100, 4, 7) == len(list(segments(stream_rows(np.arange(100), 4), 7))) == 4


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "peephole"])
def test_carried_state_gives_the_unrolled_loss_and_gradients_stop_at_the_segment(cell):
    model = _model(cell)
    tokens = np.random.default_rng(0).integers(6, 16, 41)
    rows = stream_rows(tokens, 3)
    # the whole rows at once, by hand: every real target's cross-entropy
    logits, _ = model(rows[:, :-1])
    targets = rows[:, 1:]
    unrolled = F.cross_entropy(logits.reshape(-1, 16), targets.reshape(-1), ignore_index=PAD_ID, reduction="sum")
    for bptt in (1, 4, 100):
        total, count = stream_loss(model, tokens, 3, bptt)
        assert count == int((targets != PAD_ID).sum()) == 41 - 3
        assert total == pytest.approx(unrolled.item(), rel=1e-5)

    # truncated BPTT: the second segment's loss reaches no input of the first through the carried state
    model.train()
    (x1, _), (x2, y2) = list(segments(rows, 5))[:2]
    _, state = model(x1)
    for carried, reaches_back in ((detach_state(state), False), (state, True)):
        model.zero_grad()
        logits, _ = model(x2, carried)
        F.cross_entropy(logits.reshape(-1, 16), y2.reshape(-1), ignore_index=PAD_ID).backward(retain_graph=True)
        only_first = sorted(set(x1.flatten().tolist()) - set(x2.flatten().tolist()))
        assert only_first
        grad = model.embedding.weight.grad[only_first].abs().sum()
        assert (grad > 0) == reaches_back, (carried is state, only_first)


def test_padding_changes_no_prediction():
    model = _model()
    tokens = np.random.default_rng(1).integers(6, 16, 23)  # 4 rows of 6: the last has 5 tokens and padding
    total, count = stream_loss(model, tokens, 4, 4)
    by_row, n = 0.0, 0
    for row in np.array_split(np.append(tokens, [-1]), 4):
        row = torch.tensor(row[row >= 0]).unsqueeze(0)
        logits, _ = model(row[:, :-1])
        by_row += F.cross_entropy(logits[0], row[0, 1:], reduction="sum").item()
        n += row.size(1) - 1
    assert count == n == 23 - 4 and total == pytest.approx(by_row, rel=1e-5)


def test_perplexity_of_a_known_distribution():
    model = _model(vocab=8)
    probs = torch.tensor([0, 0.1, 0, 0, 0, 0.2, 0.3, 0.4])  # whatever the context
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.copy_(torch.log(probs.clamp_min(1e-30)))
    tokens = np.array([6, 7, 7, 5, 1, 7, 6, 5, 7])
    total, count = stream_loss(model, tokens, 1, 3)
    by_hand = -(4 * math.log(0.4) + 2 * math.log(0.2) + math.log(0.1) + math.log(0.3))  # targets 7 7 5 1 7 6 5 7
    assert count == 8
    assert math.exp(total / count) == pytest.approx(math.exp(by_hand / 8), rel=1e-5)


def test_a_language_model_learns_a_sequence_with_truncated_bptt():
    model = _model(vocab=12, size=16, dropout=0.1)
    pattern = [6, 7, 8, 9, 10, 11, 7, 9, 11]  # each token given its predecessor is nearly always certain
    tokens = np.array(pattern * 60)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    before = math.exp(np.divide(*stream_loss(model, tokens, 4, 10)))
    for _ in range(20):
        state = None
        for inputs, targets in segments(stream_rows(tokens, 4), 10):
            logits, state = model(inputs, state)
            loss = F.cross_entropy(logits.reshape(-1, 12), targets.reshape(-1), ignore_index=PAD_ID)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state = detach_state(state)
    after = math.exp(np.divide(*stream_loss(model, tokens, 4, 10)))
    assert before > 8 and after < 1.3, (before, after)


def test_tied_embeddings_share_one_matrix_and_need_equal_sizes():
    model = LanguageModel(LanguageModelSettings(vocab=10, embedding_size=8, hidden_size=8, tie_embeddings=True))
    assert model.output.weight is model.embedding.weight
    with pytest.raises(ConfigError, match="embedding_size == model.hidden_size"):
        LanguageModelSettings(vocab=10, embedding_size=8, hidden_size=6, tie_embeddings=True)
    with pytest.raises(ConfigError, match="model.cell must be one of lstm, gru, rnn, peephole"):
        LanguageModelSettings(vocab=10, cell="transformer")


def test_sampling_is_reproducible_and_temperature_zero_is_greedy():
    model = _model()
    settings = SampleSettings(temperature=1.0)
    a = generate(model, [5, 6], 20, settings, samples=3, generator=torch.Generator().manual_seed(7))
    b = generate(model, [5, 6], 20, settings, samples=3, generator=torch.Generator().manual_seed(7))
    c = generate(model, [5, 6], 20, settings, samples=3, generator=torch.Generator().manual_seed(8))
    assert a == b and a != c and len(a) == 3 and all(len(s) == 20 for s in a)
    # greedy by hand: the arg-max fed back in, PAD and <go> never chosen
    ids, greedy = [5, 6], []
    for _ in range(20):
        logits, _ = model(torch.tensor([ids]))
        scores = logits[0, -1].clone()
        scores[[PAD_ID, GO_ID]] = float("-inf")
        greedy.append(int(scores.argmax()))
        ids.append(greedy[-1])
    assert generate(model, [5, 6], 20, SampleSettings(temperature=0)) == [greedy]
    assert generate(model, [5, 6], 20, SampleSettings(top_k=1), generator=torch.Generator().manual_seed(1)) == [greedy]
    assert generate(model, [5, 6], 20, SampleSettings(top_p=1e-6), generator=torch.Generator().manual_seed(1)) == [
        greedy
    ]


def test_draws_follow_the_tempered_and_truncated_distribution():
    logits = torch.log(torch.tensor([[0.3, 0.05, 0.1, 0.05, 0.2, 0.05, 0.25]]))  # ids 0 (PAD) and 4 (<go>) never
    generator = torch.Generator().manual_seed(0)

    def frequencies(settings):
        draws = torch.cat([next_token(logits.expand(1000, -1), settings, generator) for _ in range(20)])
        return torch.bincount(draws, minlength=7).float() / len(draws)

    allowed = torch.tensor([0, 0.05, 0.1, 0.05, 0, 0.05, 0.25]) / 0.5
    torch.testing.assert_close(frequencies(SampleSettings()), allowed, atol=0.015, rtol=0)
    hot = allowed**0.5 / (allowed**0.5).sum()  # temperature 2 flattens
    torch.testing.assert_close(frequencies(SampleSettings(temperature=2.0)), hot, atol=0.015, rtol=0)
    top2 = torch.tensor([0, 0, 0.1, 0, 0, 0, 0.25]) / 0.35
    torch.testing.assert_close(frequencies(SampleSettings(top_k=2)), top2, atol=0.015, rtol=0)
    # top_p 0.6 keeps 0.5 (id 6) then 0.2 (id 2) reaches 0.7
    torch.testing.assert_close(frequencies(SampleSettings(top_p=0.6)), top2, atol=0.015, rtol=0)
    with pytest.raises(ConfigError, match="top_p must be in"):
        SampleSettings(top_p=0)
    for temperature in (math.inf, math.nan, -1.0):  # inf once reached the sampler: a 500 over REST
        with pytest.raises(
            ConfigError, match=f"temperature must be a finite number >= 0 \\(0 = greedy\\), got {temperature}"
        ):
            SampleSettings(temperature=temperature)
