"""Ensemble decoding: the mean of the members' log-probabilities at every step, through the same
greedy and beam search as one model."""

from __future__ import annotations

import pytest
import torch
from test_translate import _original
from test_translator import batch

from jobs.common.checkpoint import Bundle
from pipelines.contract.errors import CheckpointError
from pipelines.contract.specials import EOS_ID, GO_ID
from rnn_models.ensemble import Ensemble
from rnn_models.search import DecodeSettings, beam_search, greedy
from rnn_models.translator import Translator, TranslatorSettings


def _member(seed: int, **kwargs) -> Translator:
    torch.manual_seed(seed)
    settings = {"src_vocab": 30, "tgt_vocab": 25, "embedding_size": 12, "hidden_size": 12, **kwargs}
    return Translator(TranslatorSettings(**settings)).eval()


def test_the_next_word_scores_are_the_mean_of_the_members():
    a, b = _member(1), _member(2)
    ensemble = Ensemble([a, b])
    src, src_len, _ = batch()
    prev = torch.full((src.size(0),), GO_ID)
    with torch.no_grad():
        lp, _, weights = ensemble.next_log_probs(prev, ensemble.start(memory := ensemble.encode(src, src_len)), memory)
        lp_a, _, w_a = a.next_log_probs(prev, a.start(m_a := a.encode(src, src_len)), m_a)
        lp_b, _, w_b = b.next_log_probs(prev, b.start(m_b := b.encode(src, src_len)), m_b)
    assert torch.allclose(lp, (lp_a + lp_b) / 2) and torch.allclose(weights, (w_a + w_b) / 2)
    # greedy's first word is the argmax of that mean, not of either member's
    first = [h.tokens[0] if h.tokens else EOS_ID for h in greedy(ensemble, src, src_len)]
    assert first == ((lp_a + lp_b) / 2).argmax(-1).tolist()


def test_an_ensemble_of_copies_decodes_as_the_model():
    model = _member(3)
    twins = Ensemble([model, _member(3)])
    src, src_len, _ = batch()
    assert [h.tokens for h in greedy(twins, src, src_len)] == [h.tokens for h in greedy(model, src, src_len)]
    settings = DecodeSettings(beam=3, nbest=2)
    ours, theirs = beam_search(twins, src, src_len, settings), beam_search(model, src, src_len, settings)
    assert [[n.tokens for n in h.nbest] for h in ours] == [[n.tokens for n in h.nbest] for h in theirs]


def test_members_must_read_and_write_the_same_ids():
    with pytest.raises(CheckpointError, match="different sizes"):
        Ensemble([_member(1), _member(2, tgt_vocab=26)])
    with pytest.raises(CheckpointError, match="different orders"):
        Ensemble([_member(1), _member(2, reverse_source=False)])
    with pytest.raises(CheckpointError, match="at least two"):
        Ensemble([_member(1)])
    other = _original()
    other.tgt_tokens = other.tgt_tokens[:-1] + ["chien"]
    with pytest.raises(CheckpointError, match="different vocabularies"):
        Bundle.ensemble([_original(), other])
