"""The peephole LSTM (Gers & Schmidhuber 2000): an LSTM whose gates also see the cell state.

For each layer and direction, with ``*`` the element-wise product and diagonal peephole weights
``p_i``, ``p_f``, ``p_o``::

    i = sigmoid(W_i x + U_i h + p_i * c + b_i)          input gate, sees the previous cell
    f = sigmoid(W_f x + U_f h + p_f * c + b_f)          forget gate, sees the previous cell
    g = tanh(W_g x + U_g h + b_g)
    c' = f * c + i * g
    o = sigmoid(W_o x + U_o h + p_o * c' + b_o)         output gate, sees the new cell
    h' = o * tanh(c')

``PeepholeLSTM`` takes what ``nn.LSTM`` takes (batch-first tensors or packed sequences, an optional
``(h, c)`` of shape (layers * directions, B, H)) and returns the same, so the encoder, the decoder
and the language model use it as a ``model.cell`` option. It runs a Python loop over time steps
(the input projections of all steps are one matrix product per layer), so it is slower than the
fused ``nn.LSTM``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnn_models.padding import length_mask, reverse_padded


class PeepholeLSTM(nn.Module):
    """Stacked (optionally bidirectional) peephole LSTM layers, batch first, with dropout between
    layers in training only; parameters per layer and direction: ``weight_ih`` (4H, in),
    ``weight_hh`` (4H, H), ``bias`` (4H) in gate order i, f, g, o, and ``peephole`` (3, H) for i, f, o."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ):
        super().__init__()
        if not batch_first:
            raise ValueError("PeepholeLSTM is batch first only")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.bidirectional = dropout, bidirectional
        self.directions = 2 if bidirectional else 1
        self.cells = nn.ModuleList()
        for layer in range(num_layers):
            size = input_size if layer == 0 else hidden_size * self.directions
            for _ in range(self.directions):
                cell = nn.Module()
                cell.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, size))
                cell.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
                cell.bias = nn.Parameter(torch.empty(4 * hidden_size))
                cell.peephole = nn.Parameter(torch.empty(3, hidden_size))
                self.cells.append(cell)
        bound = 1 / math.sqrt(hidden_size)  # nn.LSTM's initialisation
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(
        self, input: torch.Tensor | PackedSequence, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor | PackedSequence, tuple[torch.Tensor, torch.Tensor]]:
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(input, batch_first=True)
            lengths = lengths.to(x.device)
        else:
            x = input
            lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        batch, layers = x.size(0), self.num_layers * self.directions
        if state is None:
            zeros = x.new_zeros(layers, batch, self.hidden_size)
            state = (zeros, zeros)
        # positions past a row's length keep its state and output zeros, as nn.LSTM over packed input
        mask = length_mask(lengths, x.size(1)).unsqueeze(-1)
        finals_h, finals_c = [], []
        for layer in range(self.num_layers):
            if layer and self.dropout and self.training:
                x = nn.functional.dropout(x, self.dropout, training=True)
            outputs = []
            for direction in range(self.directions):
                k = layer * self.directions + direction
                seq = x if direction == 0 else reverse_padded(x, lengths)
                out, h, c = self._run(self.cells[k], seq, mask, state[0][k], state[1][k])
                outputs.append(out if direction == 0 else reverse_padded(out, lengths))
                finals_h.append(h)
                finals_c.append(c)
            x = torch.cat(outputs, dim=-1) if self.directions > 1 else outputs[0]
        final = (torch.stack(finals_h), torch.stack(finals_c))
        if packed:
            return pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False), final
        return x, final

    def _run(
        self, cell: nn.Module, x: torch.Tensor, mask: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One layer and direction over (B, T, in) from ``h``, ``c`` (B, H)."""
        projected = nn.functional.linear(x, cell.weight_ih, cell.bias)  # all steps at once
        p_i, p_f, p_o = cell.peephole
        outputs = []
        for t in range(x.size(1)):
            gates = projected[:, t] + nn.functional.linear(h, cell.weight_hh)
            i, f, g, o = gates.chunk(4, dim=-1)
            i, f = torch.sigmoid(i + p_i * c), torch.sigmoid(f + p_f * c)
            c_new = f * c + i * torch.tanh(g)
            h_new = torch.sigmoid(o + p_o * c_new) * torch.tanh(c_new)
            keep = mask[:, t]
            h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
            outputs.append(h_new * keep)
        return torch.stack(outputs, 1), h, c
