"""Recurrent layers shared by encoder, decoder and language model: the cell types and their
initialisation."""

from __future__ import annotations

import torch
from torch import nn

from rnn_models.peephole import PeepholeLSTM

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN, "peephole": PeepholeLSTM}
WITH_CELL_STATE = ("lstm", "peephole")  # cells whose state is (h, c)

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def recurrent_layers(
    cell: str, input_size: int, hidden_size: int, layers: int, dropout: float, bidirectional: bool = False
) -> nn.Module:
    """A stack of ``layers`` recurrent layers (batch first) with dropout between them, applied in
    training only; LSTM forget-gate biases start at 1."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
    rnn = CELLS[cell](
        input_size,
        hidden_size,
        num_layers=layers,
        batch_first=True,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
    )
    if cell in WITH_CELL_STATE:
        with torch.no_grad():
            for name, bias in rnn.named_parameters():
                name = name.rsplit(".", 1)[-1]  # nn.LSTM: bias_ih_l0, bias_hh_l0, ...; peephole: bias
                if name.startswith("bias"):
                    bias.zero_()
                    if not name.startswith("bias_hh"):  # gates i, f, g, o: the two biases add up
                        bias[hidden_size : 2 * hidden_size] = 1.0
    return rnn


def detach_state(state: State) -> State:
    """The state cut from the graph that made it (truncated backpropagation through time)."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
