"""Decoding: greedy and beam search, batched, feeding each produced word back in.

Both return, per sentence, the target ids (without ``<go>``/``<eos>``) and for every produced word
the source position it attended to most (in the source's own order; -1 without attention), which
the post-processing uses to copy unknown words.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnn_models.decoder import DecoderState, Memory
from rnn_models.translator import EOS_ID, GO_ID, Translator


@dataclass
class Hypothesis:
    tokens: list[int]
    alignment: list[int]
    score: float


def max_output_length(src_len: torch.Tensor, ratio: float, extra: int) -> int:
    return int(src_len.max().item() * ratio) + extra


def _source_positions(weights: torch.Tensor | None, src_len: torch.Tensor, reversed_source: bool) -> torch.Tensor:
    """The most attended source position per row, mapped back to the source's own order."""
    if weights is None:
        return torch.full_like(src_len, -1)
    best = weights.argmax(-1)
    return torch.where(torch.as_tensor(reversed_source), src_len - 1 - best, best)


@torch.no_grad()
def greedy(model: Translator, src: torch.Tensor, src_len: torch.Tensor, max_ratio: float = 1.5,
           max_extra: int = 5) -> list[Hypothesis]:
    """The most likely word at every step, until ``<eos>`` or the length limit."""
    memory = model.encode(src, src_len)
    state = model.decoder.initial_state(memory.encoded)
    batch = src.size(0)
    prev = src.new_full((batch,), GO_ID)
    done = torch.zeros(batch, dtype=torch.bool, device=src.device)
    tokens, positions, scores = [], [], src.new_zeros(batch, dtype=torch.float)
    limit = max_output_length(src_len, max_ratio, max_extra)
    for step in range(limit):
        log_probs, state, weights = _next(model, prev, state, memory, last=step == limit - 1)
        best_score, prev = log_probs.max(-1)
        scores += torch.where(done, 0.0, best_score)
        tokens.append(prev)
        positions.append(_source_positions(weights, src_len, model.settings.reverse_source))
        done |= prev == EOS_ID
        if done.all():
            break
    tokens_t, positions_t = torch.stack(tokens, 1).tolist(), torch.stack(positions, 1).tolist()
    return [_hypothesis(t, p, s) for t, p, s in zip(tokens_t, positions_t, scores.tolist())]


def _next(model: Translator, prev: torch.Tensor, state: DecoderState, memory: Memory, last: bool
          ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
    """Log-probabilities of the next word; at the length limit only ``<eos>`` may follow."""
    vector, state, weights = model.decoder.step(prev, state, memory)
    log_probs = torch.log_softmax(model.decoder.logits(vector).float(), -1)
    if last:
        only_eos = torch.full_like(log_probs, float("-inf"))
        only_eos[:, EOS_ID] = 0.0
        log_probs = log_probs + only_eos
    return log_probs, state, weights


def _hypothesis(tokens: list[int], positions: list[int], score: float) -> Hypothesis:
    end = tokens.index(EOS_ID) if EOS_ID in tokens else len(tokens)
    return Hypothesis(tokens[:end], positions[:end], score)


def length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ((5 + length) / 6) ** alpha; 1 at alpha 0."""
    return ((5.0 + length.float()) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model: Translator, src: torch.Tensor, src_len: torch.Tensor, beam: int = 5, alpha: float = 0.6,
                max_ratio: float = 1.5, max_extra: int = 5) -> list[Hypothesis]:
    """Keep the ``beam`` best partial translations per sentence; a sentence is done when ``beam``
    of them have ended, and its ended ones are ranked by log-probability / length_penalty
    (``<eos>`` counted in the length). Beam 1 gives what ``greedy`` gives."""
    batch, device = src.size(0), src.device
    rows = torch.arange(batch, device=device).repeat_interleave(beam)  # B*K rows, sentence-major
    memory = model.encode(src, src_len).select(rows)
    state = model.decoder.initial_state(memory.encoded)
    row_len = src_len.to(device).index_select(0, rows)
    prev = src.new_full((batch * beam,), GO_ID)
    # Only the first copy of each sentence is live at the start, so the first step does not pick
    # the same word K times.
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    history = torch.empty(batch * beam, 0, dtype=torch.long, device=device)
    aligned = torch.empty(batch * beam, 0, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    limit = max_output_length(src_len, max_ratio, max_extra)
    for step in range(limit):
        log_probs, state, weights = _next(model, prev, state, memory, last=step == limit - 1)
        vocab = log_probs.size(-1)
        candidates = (scores.view(-1, 1) + log_probs).view(batch, beam * vocab)
        top_scores, top_index = candidates.topk(2 * beam, dim=-1)  # enough to refill after <eos>
        origin = top_index // vocab + torch.arange(batch, device=device).unsqueeze(1) * beam
        word = top_index % vocab
        positions = _source_positions(weights, row_len, model.settings.reverse_source)
        keep_origin, keep_word = origin[:, :beam].clone(), word[:, :beam].clone()
        new_scores = torch.full_like(scores, float("-inf"))
        ended_length = torch.tensor(step + 1)
        for b, (b_scores, b_origin, b_word) in enumerate(zip(top_scores.tolist(), origin.tolist(), word.tolist())):
            slot = 0
            for score, o, w in zip(b_scores, b_origin, b_word):
                if score == float("-inf") or slot == beam or len(finished[b]) >= beam:
                    break
                if w == EOS_ID:
                    finished[b].append(Hypothesis(history[o].tolist(), aligned[o].tolist(),
                                                  score / float(length_penalty(ended_length, alpha))))
                else:
                    keep_origin[b, slot], keep_word[b, slot], new_scores[b, slot] = o, w, score
                    slot += 1
            if len(finished[b]) >= beam:
                new_scores[b] = float("-inf")
        if torch.isinf(new_scores).all():
            break
        flat_origin = keep_origin.view(-1)
        history = torch.cat([history.index_select(0, flat_origin), keep_word.view(-1, 1)], 1)
        aligned = torch.cat([aligned.index_select(0, flat_origin),
                             positions.index_select(0, flat_origin).view(-1, 1)], 1)
        state = state.select(flat_origin)
        prev = keep_word.view(-1)
        scores = new_scores
    return [max(hyps, key=lambda h: h.score) if hyps else Hypothesis([], [], float("-inf")) for hyps in finished]
