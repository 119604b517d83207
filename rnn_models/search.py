"""Decoding: the settings that steer it, and greedy and beam search, batched, feeding each
produced word back in.

Both searches return, per sentence, the target ids (without ``<go>``/``<eos>``) and for every
produced word the source position it attended to most (in the source's own order; -1 without
attention), which the post-processing uses to copy unknown words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from pipelines.contract.errors import ConfigError, check_integer
from pipelines.contract.specials import EOS_ID, GO_ID
from rnn_models.decoder import DecoderState, Memory
from rnn_models.ensemble import Ensemble
from rnn_models.settings import Settings
from rnn_models.translator import Translator

Decodable = Translator | Ensemble  # what the searches decode with

UNK_POLICIES = ("keep", "copy")


@dataclass(frozen=True)
class DecodeSettings(Settings):
    """How translations are decoded and post-processed: the one home of these defaults. Training
    (validation, test scores), ``jobs.translate`` and ``jobs.evaluate`` all start from them; the
    ``decode.*`` keys of a config and the command-line flags override them, and a translator's
    checkpoint carries the settings it was trained with."""

    prefix = "decode."

    beam: int = 5  # beam size (1 = greedy)
    alpha: float = 1.5  # length penalty ((5 + len) / 6) ** alpha of beam search (bench/README.md: beam study)
    max_ratio: float = 1.5  # output length limit: max_ratio x source length + max_extra
    max_extra: int = 5
    min_length: int = 1  # tokens before <eos> may end an output (1: never the empty translation)
    batch_size: int = 100  # sentences per decoding batch
    unk: str = "copy"  # [UNK] in the output: keep it, or copy the source word attended to most
    max_tokens: int = 200  # longer sources are cut to this many tokens (and counted)
    nbest: int = 1  # translations kept per sentence, best first (beam search: needs beam >= nbest)

    def __post_init__(self) -> None:
        for name, low in (
            ("beam", 1),
            ("max_extra", 0),
            ("min_length", 0),
            ("batch_size", 1),
            ("max_tokens", 1),
            ("nbest", 1),
        ):
            check_integer(f"decode.{name}", getattr(self, name), low)
        if not 0 <= self.alpha < math.inf:
            raise ConfigError(f"decode.alpha must be a finite number >= 0, got {self.alpha!r}")
        if not 0 < self.max_ratio < math.inf:
            raise ConfigError(f"decode.max_ratio must be a finite number > 0, got {self.max_ratio!r}")
        if self.nbest > self.beam:
            raise ConfigError(f"decode.nbest={self.nbest} needs a beam at least as wide; got beam {self.beam}")
        if self.unk not in UNK_POLICIES:
            raise ConfigError(f"decode.unk must be one of {', '.join(UNK_POLICIES)}; got {self.unk!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, base: "DecodeSettings | None" = None) -> "DecodeSettings":
        """``base`` (default: the defaults above) with the non-null ``values`` on top."""
        values = {k: v for k, v in (values or {}).items() if v is not None}
        cls.check_values(values)
        return replace(base or cls(), **values)

    @property
    def copy_unk(self) -> bool:
        return self.unk == "copy"


def decode(model: Decodable, src: torch.Tensor, src_len: torch.Tensor, settings: DecodeSettings) -> list[Hypothesis]:
    """Greedy search at beam 1, else beam search."""
    if settings.beam > 1:
        return beam_search(model, src, src_len, settings)
    return greedy(model, src, src_len, settings)


@dataclass
class Hypothesis:
    tokens: list[int]
    alignment: list[int]
    score: float
    nbest: list[Hypothesis] = field(default_factory=list)  # beam search with nbest > 1: the best, best first


def output_limits(src_len: torch.Tensor, settings: DecodeSettings) -> torch.Tensor:
    """Each sentence's output length limit, ``<eos>`` included: max_ratio x its own source length +
    max_extra (never its batch's longest, so a translation does not depend on its neighbours)."""
    return (src_len.double() * settings.max_ratio).floor().long() + settings.max_extra


def _source_positions(weights: torch.Tensor | None, src_len: torch.Tensor, reversed_source: bool) -> torch.Tensor:
    """The most attended source position per row, mapped back to the source's own order."""
    if weights is None:
        return torch.full_like(src_len, -1)
    best = weights.argmax(-1)
    return torch.where(torch.as_tensor(reversed_source), src_len - 1 - best, best)


@torch.no_grad()
def greedy(
    model: Decodable, src: torch.Tensor, src_len: torch.Tensor, settings: DecodeSettings = DecodeSettings()
) -> list[Hypothesis]:
    """The most likely word at every step, until ``<eos>`` or the length limit (``settings``'
    beam and alpha play no part)."""
    memory = model.encode(src, src_len)
    state = model.start(memory)
    batch = src.size(0)
    prev = src.new_full((batch,), GO_ID)
    done = torch.zeros(batch, dtype=torch.bool, device=src.device)
    tokens, positions, scores = [], [], src.new_zeros(batch, dtype=torch.float)
    limits = output_limits(src_len, settings).to(src.device)
    for step in range(int(limits.max())):
        log_probs, state, weights = _next(model, prev, state, memory, step, limits, settings.min_length)
        best_score, prev = log_probs.max(-1)
        scores += torch.where(done, 0.0, best_score)
        tokens.append(prev)
        positions.append(_source_positions(weights, src_len, model.reverse_source))
        done |= prev == EOS_ID
        if done.all():
            break
    tokens_t, positions_t = torch.stack(tokens, 1).tolist(), torch.stack(positions, 1).tolist()
    return [_hypothesis(t, p, s) for t, p, s in zip(tokens_t, positions_t, scores.tolist())]


def _next(
    model: Decodable,
    prev: torch.Tensor,
    state: DecoderState,
    memory: Memory,
    step: int,
    limits: torch.Tensor,
    min_length: int,
) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
    """Log-probabilities of the word at ``step``: a row at its length limit (``limits``, per row)
    may only end (``<eos>``), before ``min_length`` a row may not end."""
    log_probs, state, weights = model.next_log_probs(prev, state, memory)
    is_eos = torch.zeros(log_probs.size(-1), dtype=torch.bool, device=log_probs.device)
    is_eos[EOS_ID] = True
    at_limit = (limits == step + 1).unsqueeze(1)
    if step < min_length:
        log_probs = log_probs.masked_fill(is_eos & ~at_limit, float("-inf"))
    return log_probs.masked_fill(at_limit & ~is_eos, float("-inf")), state, weights


def _hypothesis(tokens: list[int], positions: list[int], score: float) -> Hypothesis:
    end = tokens.index(EOS_ID) if EOS_ID in tokens else len(tokens)
    return Hypothesis(tokens[:end], positions[:end], score)


def length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ((5 + length) / 6) ** alpha; 1 at alpha 0."""
    return ((5.0 + length.float()) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: Decodable, src: torch.Tensor, src_len: torch.Tensor, settings: DecodeSettings = DecodeSettings()
) -> list[Hypothesis]:
    """Keep the ``settings.beam`` best partial translations per sentence. Ended translations are
    ranked by log-probability / length_penalty (``<eos>`` counted in the length), the best ``beam``
    of them kept; a sentence is done when ``beam`` have ended and no live translation can still
    beat the worst of them. Beam 1 gives what ``greedy`` gives."""
    beam, alpha = settings.beam, settings.alpha
    batch, device = src.size(0), src.device
    rows = torch.arange(batch, device=device).repeat_interleave(beam)  # B*K rows, sentence-major
    memory = model.encode(src, src_len).select(rows)
    state = model.start(memory)
    row_len = src_len.to(device).index_select(0, rows)
    prev = src.new_full((batch * beam,), GO_ID)
    # Only the first copy of each sentence is live at the start, so the first step does not pick
    # the same word K times.
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    history = torch.empty(batch * beam, 0, dtype=torch.long, device=device)
    aligned = torch.empty(batch * beam, 0, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]  # the best `beam` ended ones per sentence
    done = [False] * batch
    limits = output_limits(src_len, settings).to(device)
    # the most a live score can still be divided by: the length penalty at each sentence's length limit
    longest_penalty = length_penalty(limits, alpha).tolist()
    for step in range(int(limits.max())):
        log_probs, state, weights = _next(
            model, prev, state, memory, step, limits.index_select(0, rows), settings.min_length
        )
        vocab = log_probs.size(-1)
        candidates = (scores.view(-1, 1) + log_probs).view(batch, beam * vocab)
        top_scores, top_index = candidates.topk(2 * beam, dim=-1)  # enough to refill after <eos>
        origin = top_index // vocab + torch.arange(batch, device=device).unsqueeze(1) * beam
        word = top_index % vocab
        positions = _source_positions(weights, row_len, model.reverse_source)
        keep_origin, keep_word = origin[:, :beam].clone(), word[:, :beam].clone()
        new_scores = torch.full_like(scores, float("-inf"))
        ended_penalty = float(length_penalty(torch.tensor(step + 1), alpha))
        for b, (b_scores, b_origin, b_word) in enumerate(zip(top_scores.tolist(), origin.tolist(), word.tolist())):
            if done[b]:
                continue
            slot = 0
            for rank, (score, o, w) in enumerate(zip(b_scores, b_origin, b_word)):
                if score == float("-inf") or slot == beam:
                    break
                if w == EOS_ID:
                    # only an ending among the best `beam` candidates ends a hypothesis (as in
                    # fairseq and Hugging Face's beam search)
                    if rank < beam:
                        _keep_best(
                            finished[b],
                            Hypothesis(history[o].tolist(), aligned[o].tolist(), score / ended_penalty),
                            beam,
                        )
                else:
                    keep_origin[b, slot], keep_word[b, slot], new_scores[b, slot] = o, w, score
                    slot += 1
            # done when `beam` translations have ended and no live one can still beat the worst of
            # them: a live score only falls, and the length penalty divides it at most by lp(limit)
            best_live = float(new_scores[b, 0])
            reachable = best_live / longest_penalty[b]  # lp is 1 at alpha 0
            if len(finished[b]) >= beam and min(h.score for h in finished[b]) >= reachable:
                done[b] = True
                new_scores[b] = float("-inf")
        if torch.isinf(new_scores).all():
            break
        flat_origin = keep_origin.view(-1)
        history = torch.cat([history.index_select(0, flat_origin), keep_word.view(-1, 1)], 1)
        aligned = torch.cat(
            [aligned.index_select(0, flat_origin), positions.index_select(0, flat_origin).view(-1, 1)], 1
        )
        state = state.select(flat_origin)
        prev = keep_word.view(-1)
        scores = new_scores
    return [_best(hyps, settings.nbest) for hyps in finished]


def _best(hypotheses: list[Hypothesis], nbest: int) -> Hypothesis:
    """The best of a sentence's ended hypotheses, holding the ``nbest`` best when ``nbest`` > 1."""
    if not hypotheses:
        return Hypothesis([], [], float("-inf"))
    ranked = sorted(hypotheses, key=lambda h: -h.score)
    return replace(ranked[0], nbest=ranked[:nbest] if nbest > 1 else [])


def _keep_best(hypotheses: list[Hypothesis], new: Hypothesis, size: int) -> None:
    """Add ``new`` to at most ``size`` hypotheses, dropping the worst when full."""
    hypotheses.append(new)
    if len(hypotheses) > size:
        hypotheses.remove(min(hypotheses, key=lambda h: h.score))
