"""The decoder: from ``<go>`` to ``<eos>``, with optional attention and input feeding.

Each step reads the previous word (and, with input feeding, the previous attentional vector), runs
the stacked recurrent layers, attends to the encoder states with the top layer's output and mixes
the two into the attentional vector h~ = tanh(W [h; c]) (Luong et al. 2015); without attention the
top layer's output is used as it is. The output layer maps these vectors to vocabulary scores.

``forward`` teacher-forces a whole target; ``step`` advances one word for decoding. Both give the
same vectors for the same inputs. Without input feeding ``forward`` runs the recurrent layers over
the whole sequence at once, which is much faster than stepping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines.contract.errors import ConfigError
from rnn_models.attention import Attention
from rnn_models.encoder import Encoded
from rnn_models.recurrent import WITH_CELL_STATE, State, recurrent_layers

INITS = ("bridge", "zero")


@dataclass
class DecoderState:
    """The recurrent state and the attentional vector fed to the next step (None without feeding)."""

    rnn: State
    feed: torch.Tensor | None

    def select(self, index: torch.Tensor) -> "DecoderState":
        """The states of the batch rows ``index`` (beam search reorders and copies hypotheses)."""
        rnn = (
            tuple(s.index_select(1, index) for s in self.rnn)
            if isinstance(self.rnn, tuple)
            else self.rnn.index_select(1, index)
        )
        return DecoderState(rnn, None if self.feed is None else self.feed.index_select(0, index))


@dataclass
class Memory:
    """The encoder output prepared for attention (keys projected once per batch)."""

    encoded: Encoded
    keys: torch.Tensor | None

    def select(self, index: torch.Tensor) -> "Memory":
        e = self.encoded
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return Memory(Encoded(pick(e.memory), pick(e.mask), pick(e.final), pick(e.final_cell)), pick(self.keys))


class Decoder(nn.Module):
    """Target-side embeddings, recurrent layers, attention and the output layer."""

    def __init__(
        self,
        embedding: nn.Embedding,
        cell: str,
        hidden_size: int,
        layers: int,
        dropout: float,
        encoder_size: int,
        attention: str | None,
        input_feeding: bool,
        init: str,
        tied: bool,
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"decoder init must be one of {INITS}, got {init!r}")
        self.embedding = embedding
        self.cell, self.layers, self.hidden_size, self.init = cell, layers, hidden_size, init
        self.input_feeding = bool(attention) and input_feeding
        rnn_input = embedding.embedding_dim + (hidden_size if self.input_feeding else 0)
        self.rnn = recurrent_layers(cell, rnn_input, hidden_size, layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.attention = Attention(attention, hidden_size, encoder_size) if attention else None
        if self.attention is not None:
            self.combine = nn.Linear(hidden_size + encoder_size, hidden_size, bias=False)
        if init == "bridge":
            self.bridge = nn.Linear(encoder_size, hidden_size)
            if cell in WITH_CELL_STATE:
                self.bridge_cell = nn.Linear(encoder_size, hidden_size)
        self.output = nn.Linear(hidden_size, embedding.num_embeddings, bias=not tied)
        if tied:
            if embedding.embedding_dim != hidden_size:
                raise ConfigError(
                    f"model.tie_embeddings needs model.embedding_size == model.hidden_size "
                    f"({embedding.embedding_dim} != {hidden_size})"
                )
            self.output.weight = embedding.weight

    def prepare(self, encoded: Encoded) -> Memory:
        return Memory(encoded, None if self.attention is None else self.attention.prepare(encoded.memory))

    def initial_state(self, encoded: Encoded) -> DecoderState:
        batch = encoded.memory.size(0)
        zeros = encoded.memory.new_zeros(self.layers, batch, self.hidden_size)
        if self.init == "zero":
            hidden = zeros
        else:
            hidden = torch.tanh(self.bridge(encoded.final)).unsqueeze(0).expand(self.layers, -1, -1).contiguous()
        state: State = hidden
        if self.cell in WITH_CELL_STATE:
            cell = (
                zeros
                if self.init == "zero" or encoded.final_cell is None
                else torch.tanh(self.bridge_cell(encoded.final_cell))
                .unsqueeze(0)
                .expand(self.layers, -1, -1)
                .contiguous()
            )
            state = (hidden, cell)
        feed = encoded.memory.new_zeros(batch, self.hidden_size) if self.input_feeding else None
        return DecoderState(state, feed)

    def forward(self, tgt_in: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: ``tgt_in`` (B, T) starts with ``<go>``; returns the vectors (B, T, H) to
        score and the attention weights (B, T, S) (None without attention)."""
        state = self.initial_state(memory.encoded)
        # the whole target embedded at once: one lookup, one dropout draw and one (dense,
        # vocabulary-sized) embedding gradient per batch rather than one per step
        embedded = self.dropout(self.embedding(tgt_in))
        if self.input_feeding:
            vectors, weights = [], []
            for t in range(tgt_in.size(1)):
                vector, state, w = self._step(embedded[:, t], state, memory)
                vectors.append(vector)
                weights.append(w)
            return torch.stack(vectors, 1), torch.stack(weights, 1)
        outputs, _ = self.rnn(embedded, state.rnn)
        return self._attend(outputs, memory)

    def step(
        self, prev: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One word: ``prev`` (B,) ids -> the vector (B, H) to score, the new state, weights (B, S)."""
        return self._step(self.dropout(self.embedding(prev)), state, memory)

    def _step(
        self, embedded: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """``step`` from the embedded previous word (B, E)."""
        x = embedded.unsqueeze(1)
        if self.input_feeding:
            x = torch.cat([x, state.feed.unsqueeze(1)], dim=-1)
        output, rnn_state = self.rnn(x, state.rnn)
        vector, weights = self._attend(output, memory)
        vector = vector.squeeze(1)
        return (
            vector,
            DecoderState(rnn_state, vector if self.input_feeding else None),
            None if weights is None else weights.squeeze(1),
        )

    def _attend(self, outputs: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.attention is None:
            return self.dropout(outputs), None
        context, weights = self.attention(outputs, memory.keys, memory.encoded.memory, memory.encoded.mask)
        return self.dropout(torch.tanh(self.combine(torch.cat([outputs, context], dim=-1)))), weights

    def logits(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.output(vectors)
