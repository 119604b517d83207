"""Ensemble decoding: several translators of one vocabulary decode as one, their log-probabilities
averaged at every step. An Ensemble answers the calls search.py makes of a Translator (encode,
start, next_log_probs, reverse_source), so greedy and beam search run on it unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pipelines.contract.errors import CheckpointError
from rnn_models.decoder import DecoderState, Memory
from rnn_models.translator import Translator


@dataclass
class EnsembleMemory:
    """Each model's encoder output."""

    parts: list[Memory]

    def select(self, index: torch.Tensor) -> "EnsembleMemory":
        return EnsembleMemory([m.select(index) for m in self.parts])


@dataclass
class EnsembleState:
    """Each model's decoder state."""

    parts: list[DecoderState]

    def select(self, index: torch.Tensor) -> "EnsembleState":
        return EnsembleState([s.select(index) for s in self.parts])


class Ensemble(nn.Module):
    """Translators with the same vocabularies decoding together: the next word's log-probability
    is the mean of theirs; the attention (for [UNK] copying) the mean of those that attend."""

    def __init__(self, models: Sequence[Translator]):
        super().__init__()
        if len(models) < 2:
            raise CheckpointError("an ensemble needs at least two models")
        first = models[0].settings
        for model in models[1:]:
            s = model.settings
            if (s.src_vocab, s.tgt_vocab) != (first.src_vocab, first.tgt_vocab):
                raise CheckpointError("cannot ensemble models with vocabularies of different sizes")
            if s.reverse_source != first.reverse_source:
                raise CheckpointError(
                    "cannot ensemble models that read the source in different orders (model.reverse_source)"
                )
        self.models = nn.ModuleList(models)

    @property
    def reverse_source(self) -> bool:
        return self.models[0].reverse_source

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> EnsembleMemory:
        return EnsembleMemory([m.encode(src, src_len) for m in self.models])

    def start(self, memory: EnsembleMemory) -> EnsembleState:
        return EnsembleState([m.start(part) for m, part in zip(self.models, memory.parts)])

    def next_log_probs(
        self, prev: torch.Tensor, state: EnsembleState, memory: EnsembleMemory
    ) -> tuple[torch.Tensor, EnsembleState, torch.Tensor | None]:
        steps = [m.next_log_probs(prev, s, part) for m, s, part in zip(self.models, state.parts, memory.parts)]
        log_probs = torch.stack([lp for lp, _, _ in steps]).mean(0)
        attending = [w for _, _, w in steps if w is not None]
        weights = torch.stack(attending).mean(0) if attending else None
        return log_probs, EnsembleState([s for _, s, _ in steps]), weights
