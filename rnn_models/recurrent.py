"""Recurrent layers shared by encoder and decoder: the cell types and their initialisation."""

from __future__ import annotations

import torch
from torch import nn

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def recurrent_layers(cell: str, input_size: int, hidden_size: int, layers: int, dropout: float,
                     bidirectional: bool = False) -> nn.RNNBase:
    """A stack of ``layers`` recurrent layers (batch first) with dropout between them, applied in
    training only; LSTM forget-gate biases start at 1."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
    rnn = CELLS[cell](input_size, hidden_size, num_layers=layers, batch_first=True,
                      dropout=dropout if layers > 1 else 0.0, bidirectional=bidirectional)
    if cell == "lstm":
        with torch.no_grad():
            for name, bias in rnn.named_parameters():
                if name.startswith("bias_"):
                    bias.zero_()
                    if name.startswith("bias_ih"):  # gates i, f, g, o: the two biases add up
                        bias[hidden_size:2 * hidden_size] = 1.0
    return rnn
