"""Attention over encoder states: Luong dot and general, Bahdanau additive.

Every scorer turns a decoder state ``query`` (B, T, Q) and the encoder states ``memory`` (B, S, M)
into a context (B, T, M) and weights (B, T, S). Padded source positions get zero weight.
``prepare`` projects the memory once per batch, so a decoder stepping one word at a time does not
redo it.
"""

from __future__ import annotations

import torch
from torch import nn

from pipelines.contract.errors import ConfigError

KINDS = ("dot", "general", "bahdanau")


class Attention(nn.Module):
    """Scores ``query`` against prepared ``keys`` and averages ``memory`` with the softmax weights."""

    def __init__(self, kind: str, query_size: int, memory_size: int, hidden_size: int | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"attention must be one of {KINDS} (or none), got {kind!r}")
        if kind == "dot" and query_size != memory_size:
            raise ConfigError(
                f"model.attention=dot needs equal query and memory sizes, got {query_size} and "
                f"{memory_size} (a bidirectional encoder doubles the memory); use general or bahdanau"
            )
        self.kind = kind
        if kind == "general":
            self.key_layer = nn.Linear(memory_size, query_size, bias=False)
        elif kind == "bahdanau":
            hidden_size = hidden_size or query_size
            self.key_layer = nn.Linear(memory_size, hidden_size, bias=False)
            self.query_layer = nn.Linear(query_size, hidden_size, bias=False)
            self.energy_layer = nn.Linear(hidden_size, 1, bias=False)

    def prepare(self, memory: torch.Tensor) -> torch.Tensor:
        """The keys for ``memory`` (B, S, M): what every later call scores against."""
        return memory if self.kind == "dot" else self.key_layer(memory)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (B, T, M) and weights (B, T, S) for ``query`` (B, T, Q); ``mask`` (B, S) is True
        at real source positions."""
        if self.kind == "bahdanau":
            energies = torch.tanh(self.query_layer(query).unsqueeze(2) + keys.unsqueeze(1))  # B, T, S, H
            scores = self.energy_layer(energies).squeeze(-1)
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights, memory), weights
