"""The encoder-decoder: shapes, masking, reversed source, teacher forcing vs stepping, decoding."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.contract.errors import ConfigError
from pipelines.contract.specials import EOS_ID, GO_ID, PAD_ID, SPECIALS
from rnn_models.padding import reverse_padded
from rnn_models.search import DecodeSettings, beam_search, greedy, length_penalty
from rnn_models.translator import Translator, TranslatorSettings, frame_target, sequence_loss
from rnn_models.word_vectors import init_embedding

VARIANTS = [
    {"attention": "bahdanau", "input_feeding": True},
    {"attention": "general", "input_feeding": False},
    {"attention": "dot", "input_feeding": True, "bidirectional": False},
    {"attention": None, "input_feeding": False, "cell": "gru"},
    {"attention": "general", "input_feeding": True, "cell": "rnn", "layers": 1},
]


def model(**kwargs) -> Translator:
    torch.manual_seed(0)
    settings = {
        "src_vocab": 30,
        "tgt_vocab": 25,
        "embedding_size": 12,
        "hidden_size": 12,
        "layers": 2,
        "dropout": 0.3,
        **kwargs,
    }
    return Translator(TranslatorSettings(**settings)).eval()


def batch(lengths=(6, 4, 2), tgt_lengths=(5, 3, 4), seed=1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(6, 30, (len(lengths), max(lengths)), generator=g)
    tgt = torch.randint(6, 25, (len(tgt_lengths), max(tgt_lengths)), generator=g)
    for row, n in enumerate(lengths):
        src[row, n:] = PAD_ID
    for row, n in enumerate(tgt_lengths):
        tgt[row, n:] = PAD_ID
    return src, torch.tensor(lengths), tgt


def test_frame_target_adds_go_and_eos():
    tgt = torch.tensor([[7, 8, 9], [7, 0, 0]])
    tgt_in, tgt_out = frame_target(tgt)
    assert tgt_in.tolist() == [[GO_ID, 7, 8, 9], [GO_ID, 7, 0, 0]]
    assert tgt_out.tolist() == [[7, 8, 9, EOS_ID], [7, EOS_ID, 0, 0]]


def test_reverse_padded_keeps_padding_at_the_end():
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    assert reverse_padded(ids, torch.tensor([3, 2])).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_shapes_and_loss(kwargs):
    m = model(**kwargs)
    src, src_len, tgt = batch()
    tgt_in, tgt_out = frame_target(tgt)
    logits, weights = m(src, src_len, tgt_in)
    assert logits.shape == (3, tgt_in.size(1), 25)
    if kwargs["attention"]:
        assert weights.shape == (3, tgt_in.size(1), src.size(1))
        assert torch.allclose(weights.sum(-1), torch.ones(3, tgt_in.size(1)))
        assert (weights[1, :, 4:] == 0).all() and (weights[2, :, 2:] == 0).all()  # no weight on padding
    loss, tokens = sequence_loss(logits, tgt_out)
    assert tokens == 5 + 3 + 4 + 3  # the targets plus one <eos> each
    direct = -sum(
        torch.log_softmax(logits[b, t], -1)[tgt_out[b, t]]
        for b in range(3)
        for t in range(tgt_out.size(1))
        if tgt_out[b, t] != PAD_ID
    )
    assert torch.isclose(loss, direct, rtol=1e-5)


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_padding_never_changes_results(kwargs):
    """A sentence scores the same alone and in a batch padded to a longer neighbour."""
    m = model(**kwargs)
    src, src_len, tgt = batch()
    tgt_in, _ = frame_target(tgt)
    logits, weights = m(src, src_len, tgt_in)
    alone, alone_weights = m(src[2:, :2], src_len[2:], tgt_in[2:, :5])
    assert torch.allclose(logits[2, :5], alone[0], atol=1e-5)
    if weights is not None:
        assert torch.allclose(weights[2, :5, :2], alone_weights[0], atol=1e-6)
    extra = torch.cat([src, torch.zeros(3, 3, dtype=torch.long)], 1)  # more padding on the source
    more, _ = m(extra, src_len, tgt_in)
    assert torch.allclose(more, logits, atol=1e-5)


def test_source_is_fed_reversed():
    src, src_len, tgt = batch()
    tgt_in, _ = frame_target(tgt)
    forward = model(reverse_source=False, bidirectional=False)
    backward = model(reverse_source=True, bidirectional=False)
    flipped, _ = forward(reverse_padded(src, src_len), src_len, tgt_in)
    assert torch.allclose(backward(src, src_len, tgt_in)[0], flipped, atol=1e-6)


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_teacher_forcing_equals_stepping_with_the_gold_words(kwargs):
    m = model(**kwargs)
    src, src_len, tgt = batch()
    tgt_in, _ = frame_target(tgt)
    logits, _ = m(src, src_len, tgt_in)
    memory = m.encode(src, src_len)
    state = m.decoder.initial_state(memory.encoded)
    for t in range(tgt_in.size(1)):
        vector, state, _ = m.decoder.step(tgt_in[:, t], state, memory)
        assert torch.allclose(m.decoder.logits(vector), logits[:, t], atol=1e-5)


def test_free_running_decoding_feeds_back_its_own_words():
    """Greedy output, scored by teacher forcing on itself, picks the argmax at every step."""
    m = model(attention="bahdanau")
    src, src_len, _ = batch()
    hyps = greedy(m, src, src_len, DecodeSettings(max_ratio=2.0, max_extra=3))
    for row, hyp in enumerate(hyps):
        tgt_in = torch.tensor([[GO_ID] + hyp.tokens])
        logits, _ = m(src[row : row + 1, : src_len[row]], src_len[row : row + 1], tgt_in)
        steps = logits[0].argmax(-1).tolist()
        assert steps[: len(hyp.tokens)] == hyp.tokens
        assert len(hyp.alignment) == len(hyp.tokens)
        assert all(0 <= p < src_len[row] for p in hyp.alignment)


def test_dropout_only_in_training():
    m = model(attention="general")
    src, src_len, tgt = batch()
    tgt_in, _ = frame_target(tgt)
    assert torch.equal(m(src, src_len, tgt_in)[0], m(src, src_len, tgt_in)[0])
    m.train()
    assert not torch.equal(m(src, src_len, tgt_in)[0], m(src, src_len, tgt_in)[0])


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_beam_one_is_greedy(kwargs):
    m = model(**kwargs)
    src, src_len, _ = batch(lengths=(6, 4, 2, 5), tgt_lengths=(1, 1, 1, 1))
    g = greedy(m, src, src_len)
    b = beam_search(m, src, src_len, DecodeSettings(beam=1, alpha=0.0))
    assert [h.tokens for h in g] == [h.tokens for h in b]
    assert [h.alignment for h in g] == [h.alignment for h in b]
    assert [round(h.score, 4) for h in g] == [round(h.score, 4) for h in b]


def test_beam_search_finds_at_least_greedys_score():
    """Without a length penalty, the best of 5 beams scores at least what greedy found."""
    m = model(attention="bahdanau")
    src, src_len, _ = batch(lengths=(6, 4, 2, 5), tgt_lengths=(1, 1, 1, 1))
    g = greedy(m, src, src_len)
    b = beam_search(m, src, src_len, DecodeSettings(beam=5, alpha=0.0))
    assert all(hb.score >= hg.score - 1e-5 for hb, hg in zip(b, g))
    assert all(EOS_ID not in h.tokens and GO_ID not in h.tokens for h in b)


@pytest.mark.parametrize("kwargs", VARIANTS[:2])
def test_beam_scores_are_the_model_log_probabilities_of_its_outputs(kwargs):
    """What the beam returns is scored as teacher forcing scores it (the states follow their
    hypotheses when the beam reorders), divided by the length penalty of its length with <eos>."""
    m = model(**kwargs)
    src, src_len, _ = batch(lengths=(6, 4, 2, 5), tgt_lengths=(1, 1, 1, 1))
    settings = DecodeSettings(beam=4, alpha=0.7, max_ratio=2.0, max_extra=3)
    for row, hyp in enumerate(beam_search(m, src, src_len, settings)):
        tgt_in, tgt_out = torch.tensor([[GO_ID] + hyp.tokens]), torch.tensor([hyp.tokens + [EOS_ID]])
        logits, _ = m(src[row : row + 1, : src_len[row]], src_len[row : row + 1], tgt_in)
        forced = logits.log_softmax(-1).gather(-1, tgt_out.unsqueeze(-1)).sum()
        assert hyp.score * float(length_penalty(torch.tensor(len(hyp.tokens) + 1), 0.7)) == pytest.approx(
            float(forced), abs=1e-4
        )


def test_min_length_rules_out_the_empty_translation():
    """A model that prefers to end at once: min_length 0 lets it (empty outputs), 1 does not."""
    m = model(attention="bahdanau")
    with torch.no_grad():
        m.decoder.output.bias[EOS_ID] += 50.0  # <eos> outweighs every other word at every step
    src, src_len, _ = batch(lengths=(6, 4, 2, 5), tgt_lengths=(1, 1, 1, 1))
    for search, beam in ((greedy, 1), (beam_search, 4)):
        assert all(h.tokens == [] for h in search(m, src, src_len, DecodeSettings(beam=beam, min_length=0)))
        assert all(len(h.tokens) == 1 for h in search(m, src, src_len, DecodeSettings(beam=beam, min_length=1)))
        assert all(len(h.tokens) == 3 for h in search(m, src, src_len, DecodeSettings(beam=beam, min_length=3)))


def test_each_sentence_has_its_own_length_limit():
    """A model that never ends runs every sentence to its own limit (1.5 x its length + 5, <eos>
    included), not its batch's longest; so a translation is the same alone or among others."""
    m = model(attention="bahdanau")
    with torch.no_grad():
        m.decoder.output.bias[EOS_ID] -= 50.0  # <eos> never wins unless forced
    lengths = (6, 4, 2, 5)
    src, src_len, _ = batch(lengths=lengths, tgt_lengths=(1, 1, 1, 1))
    for search, beam in ((greedy, 1), (beam_search, 3)):
        settings = DecodeSettings(beam=beam)
        together = search(m, src, src_len, settings)
        assert [len(h.tokens) for h in together] == [n * 3 // 2 + 5 - 1 for n in lengths]
        alone = [search(m, src[i : i + 1, :n], src_len[i : i + 1], settings)[0] for i, n in enumerate(lengths)]
        assert [h.tokens for h in alone] == [h.tokens for h in together]


def test_lstm_forget_gate_bias_starts_at_one():
    m = model()
    hidden = 12
    total = m.encoder.rnn.bias_ih_l0 + m.encoder.rnn.bias_hh_l0
    assert torch.equal(total[hidden : 2 * hidden], torch.ones(hidden))
    assert torch.equal(total[:hidden], torch.zeros(hidden))


def test_tied_embeddings_share_one_table():
    m = model(tie_embeddings=True)
    assert m.decoder.output.weight is m.decoder.embedding.weight
    with pytest.raises(ConfigError, match="model.tie_embeddings needs"):
        model(tie_embeddings=True, embedding_size=8)


@pytest.mark.parametrize("freeze", [True, False])
def test_pretrained_embeddings_frozen_or_fine_tuned(freeze):
    m = model(attention="general")
    tokens = list(SPECIALS) + [f"w{i}" for i in range(24)]
    words = ["w0", "W1", "w1", "x", "w3"]
    vectors = torch.arange(5 * 12, dtype=torch.float).view(5, 12)
    m.decoder.embedding.weight.data[:] = 0.5  # marks the rows nothing is copied into
    coverage = init_embedding(m.decoder.embedding, tokens[:25], words, vectors, freeze)
    weight = m.decoder.embedding.weight
    for row, source in ((6, 0), (7, 2), (9, 4)):
        assert torch.equal(weight[row], vectors[source])
    assert (weight[8] == 0.5).all() and (weight[0] == 0.5).all()  # missing word, and padding left alone
    assert (coverage.exact, coverage.missing) == (3, 21)
    before = weight.detach().clone()
    src, src_len, tgt = batch()
    tgt_in, tgt_out = frame_target(tgt)
    m.train()
    optimizer = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    sequence_loss(m(src, src_len, tgt_in)[0], tgt_out)[0].backward()
    optimizer.step()
    assert torch.equal(weight.detach(), before) == freeze
    with pytest.raises(ValueError, match="dimensions"):
        init_embedding(m.decoder.embedding, tokens, words, torch.zeros(5, 3), freeze)


def test_pretrained_embeddings_rescaled_to_the_initial_scale():
    embedding = torch.nn.Embedding(30, 12)
    initial_rms = embedding.weight[1:].pow(2).mean().sqrt()
    tokens = [f"w{i}" for i in range(30)]
    vectors = torch.randn(10, 12) * 0.01
    coverage = init_embedding(embedding, tokens, tokens[:10], vectors, freeze=False, rescale=True)
    copied = embedding.weight.detach()[1:10]
    assert coverage.scale > 10
    assert torch.allclose(copied, vectors[1:] * coverage.scale)  # one factor for all rows
    assert torch.isclose(copied.pow(2).mean().sqrt(), initial_rms, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [{"attention": "bahdanau", "input_feeding": True}, {"attention": None, "input_feeding": False, "cell": "gru"}],
)
def test_overfits_a_handful_of_pairs(kwargs):
    """Trained on six pairs, the loss goes to near zero and greedy decoding gives back every target:
    the gradients reach every part that matters (a model that learns nothing cannot pass)."""
    torch.manual_seed(0)
    settings = {
        "src_vocab": 30,
        "tgt_vocab": 25,
        "embedding_size": 32,
        "hidden_size": 32,
        "layers": 1,
        "dropout": 0.0,
        **kwargs,
    }
    m = Translator(TranslatorSettings(**settings))
    src, src_len, tgt = batch(lengths=(6, 4, 2, 5, 3, 6), tgt_lengths=(5, 3, 4, 6, 2, 4), seed=5)
    tgt_in, tgt_out = frame_target(tgt)
    optimizer = torch.optim.Adam(m.parameters(), lr=0.01)
    m.train()
    first = None
    for _ in range(300):
        loss, tokens = sequence_loss(m(src, src_len, tgt_in)[0], tgt_out)
        optimizer.zero_grad()
        (loss / tokens).backward()
        optimizer.step()
        first = (loss / tokens).item() if first is None else first
    m.eval()
    final = float(sequence_loss(m(src, src_len, tgt_in)[0], tgt_out)[0] / tokens)
    assert first > 2.5 and final < 0.05, (first, final)
    targets = [row[row != PAD_ID].tolist() for row in tgt]
    assert [h.tokens for h in greedy(m, src, src_len)] == targets
    assert [h.tokens for h in beam_search(m, src, src_len, DecodeSettings(beam=3, alpha=0.0))] == targets


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hidden_size", "nan", "model.hidden_size must be an integer, got 'nan'"),  # nan and inf on the
        ("hidden_size", 1e18, "model.hidden_size must be an integer, got 1e\\+18"),  # command line: text
        ("layers", True, "model.layers must be an integer, got True"),
        ("dropout", "inf", "model.dropout must be a finite number, got 'inf'"),
        ("dropout", math.nan, "model.dropout must be a finite number, got nan"),
        ("bidirectional", "yes", "model.bidirectional must be true or false, got 'yes'"),
        ("cell", 3, "model.cell must be text, got 3"),
    ],
)
def test_a_setting_of_the_wrong_type_is_named(key, value, message):
    """Such values were TypeError tracebacks (or, for 1e18, a model too large to allocate)."""
    with pytest.raises(ConfigError, match=message):
        TranslatorSettings.from_dict({"src_vocab": 10, "tgt_vocab": 10, key: value})
    assert (
        TranslatorSettings.from_dict({"src_vocab": 10, "tgt_vocab": 10, "attention": "none", "dropout": 0}).attention
        is None
    )


def test_decode_settings_defaults_overrides_and_refusals():
    base = DecodeSettings.from_dict({"beam": 3, "unk": "keep"})
    assert (base.beam, base.unk, base.alpha) == (3, "keep", DecodeSettings().alpha)
    on_top = DecodeSettings.from_dict({"beam": None, "max_tokens": 7}, base=base)  # null keeps the base's
    assert (on_top.beam, on_top.unk, on_top.max_tokens) == (3, "keep", 7)
    assert DecodeSettings.from_dict(on_top.to_dict()) == on_top
    for values, message in (
        ({"beam": 0}, "decode.beam"),
        ({"unk": "guess"}, "decode.unk must be one of keep, copy"),
        ({"max_ratio": 0}, "decode.max_ratio"),
        ({"max_ratio": math.inf}, "decode.max_ratio must be a finite number"),
        ({"alpha": math.inf}, "decode.alpha must be a finite number"),
        ({"alpha": math.nan}, "decode.alpha must be a finite number"),
        ({"width": 3}, "unknown DecodeSettings keys"),
    ):
        with pytest.raises(ConfigError, match=message):
            DecodeSettings.from_dict(values)
