"""The sequence classifier: a sequence of token ids in, one label out (sentiment analysis).

Embeddings, then the translator's encoder (stacked, optionally bidirectional recurrent layers over
packed sequences), then one vector per sequence pooled from its states, dropout and a linear layer
to the label scores. Padding never reaches a state, and pooling looks only at real positions, so a
sequence gets the same scores alone or in a batch with longer ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines.contract.errors import ConfigError
from pipelines.contract.specials import PAD_ID
from rnn_models.encoder import Encoder
from rnn_models.recurrent import CELLS
from rnn_models.settings import Settings

POOLINGS = ("last", "max", "mean", "attention")


@dataclass(frozen=True)
class ClassifierSettings(Settings):
    """The shape of a classifier (what a checkpoint needs to rebuild it); the fields are the
    ``model.*`` keys of the job's config."""

    prefix = "model."

    vocab: int
    classes: int
    embedding_size: int = 200
    hidden_size: int = 150
    layers: int = 1
    cell: str = "lstm"
    bidirectional: bool = True
    pooling: str = "max"
    dropout: float = 0.5
    label_shift: tuple[float, ...] = ()  # added to the label scores when predicting (eval mode); () = none

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_shift", tuple(float(x) for x in self.label_shift))  # lists from YAML/JSON
        if self.label_shift and len(self.label_shift) != self.classes:
            raise ConfigError(f"label_shift has {len(self.label_shift)} values for {self.classes} labels")
        if self.cell not in CELLS:
            raise ConfigError(f"model.cell must be one of {', '.join(CELLS)}; got {self.cell!r}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"model.pooling must be one of {', '.join(POOLINGS)}; got {self.pooling!r}")
        for name in ("vocab", "embedding_size", "hidden_size", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.classes < 2:
            raise ConfigError(f"a classifier needs at least 2 labels, got {self.classes}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


class Classifier(nn.Module):
    """Ids (B, S) and lengths (B,) -> label scores (B, classes), before the softmax. Dropout acts on
    the embeddings, between layers and on the pooled vector, in training only; the settings'
    ``label_shift`` (log-ratios of label priors) is added to the scores outside training only."""

    def __init__(self, settings: ClassifierSettings):
        super().__init__()
        s = self.settings = settings
        self.embedding = nn.Embedding(s.vocab, s.embedding_size, padding_idx=PAD_ID)
        self.encoder = Encoder(
            self.embedding, s.cell, s.hidden_size, s.layers, s.dropout, s.bidirectional, reverse=False
        )
        size = self.encoder.output_size
        # attention pooling: a score per position, v . tanh(W h_t), softmax over the real positions
        self.attention = (
            nn.Sequential(nn.Linear(size, size), nn.Tanh(), nn.Linear(size, 1, bias=False))
            if s.pooling == "attention"
            else None
        )
        self.dropout = nn.Dropout(s.dropout)
        self.output = nn.Linear(size, s.classes)
        self.register_buffer("label_shift", torch.tensor(s.label_shift or [0.0] * s.classes), persistent=False)
        with torch.no_grad():
            self.embedding.weight.uniform_(-0.1, 0.1)
            self.embedding.weight[PAD_ID].zero_()

    def pooled(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One vector per sequence (B, H * directions), and the attention weights (B, S) when pooling
        by attention."""
        encoded = self.encoder(ids, lengths)
        memory, mask = encoded.memory, encoded.mask.unsqueeze(-1)  # memory: top-layer states, dropout applied
        pooling, weights = self.settings.pooling, None
        if pooling == "last":  # the last state of each direction (the backward one read the first token last)
            vector = self.dropout(encoded.final)
        elif pooling == "max":
            vector = memory.masked_fill(~mask, float("-inf")).amax(dim=1)
        elif pooling == "mean":
            vector = (memory * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        else:
            scores = self.attention(memory).squeeze(-1).masked_fill(~encoded.mask, float("-inf"))
            weights = torch.softmax(scores, dim=1)
            vector = (weights.unsqueeze(-1) * memory).sum(dim=1)
        return vector, weights

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        scores = self.output(self.pooled(ids, lengths)[0])
        return scores if self.training else scores + self.label_shift
