"""The encoder: embeddings, then stacked (optionally bidirectional) recurrent layers over packed
sequences, so padding never reaches a state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnn_models.padding import reverse_padded
from rnn_models.recurrent import recurrent_layers


@dataclass
class Encoded:
    """What the decoder attends to and starts from."""

    memory: torch.Tensor  # B, S, H * directions: top-layer outputs, in source order as fed
    mask: torch.Tensor  # B, S: True at real tokens
    final: torch.Tensor  # B, H * directions: the top layer's last state (both directions)
    final_cell: torch.Tensor | None  # B, H * directions: the LSTM cell state to go with it


class Encoder(nn.Module):
    """Source ids (B, S) and lengths (B,) -> ``Encoded``; the source is read reversed if asked."""

    def __init__(
        self,
        embedding: nn.Embedding,
        cell: str,
        hidden_size: int,
        layers: int,
        dropout: float,
        bidirectional: bool,
        reverse: bool,
    ):
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        self.rnn = recurrent_layers(cell, embedding.embedding_dim, hidden_size, layers, dropout, bidirectional)
        self.reverse = reverse
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.directions

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        if self.reverse:
            src = reverse_padded(src, lengths)
        embedded = self.dropout(self.embedding(src))
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, state = self.rnn(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
        hidden, cell = state if isinstance(state, tuple) else (state, None)
        mask = torch.arange(src.size(1), device=src.device).unsqueeze(0) < lengths.to(src.device).unsqueeze(1)
        return Encoded(self.dropout(memory), mask, self._top(hidden), None if cell is None else self._top(cell))

    def _top(self, state: torch.Tensor) -> torch.Tensor:
        """The top layer's final state, directions concatenated: (layers * dirs, B, H) -> (B, H * dirs)."""
        top = state[-self.directions :]
        return torch.cat(list(top), dim=-1)
