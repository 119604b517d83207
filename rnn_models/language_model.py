"""The recurrent language model: embeddings, stacked recurrent layers, a projection to the
vocabulary; trained on a token stream with truncated backpropagation through time.

The stream (documents, each ended by ``<eos>``) is cut into ``batch`` contiguous rows that are read
in parallel, ``bptt`` steps at a time; the state at the end of one segment starts the next, detached
so that gradients stop at the segment's start (Zaremba et al. 2014). Only the last row can be
shorter: it is padded, and padded targets count for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipelines.contract.errors import ConfigError
from pipelines.contract.specials import PAD_ID
from rnn_models.recurrent import CELLS, State, recurrent_layers
from rnn_models.settings import Settings
from rnn_models.translator import sequence_loss


@dataclass(frozen=True)
class LanguageModelSettings(Settings):
    """The shape of a language model (what a checkpoint needs to rebuild it); the fields are the
    ``model.*`` keys of the job's config."""

    prefix = "model."

    vocab: int
    embedding_size: int = 200
    hidden_size: int = 200
    layers: int = 2
    cell: str = "lstm"
    dropout: float = 0.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"model.cell must be one of {', '.join(CELLS)}; got {self.cell!r}")
        for name in ("vocab", "embedding_size", "hidden_size", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.tie_embeddings and self.embedding_size != self.hidden_size:
            raise ConfigError(
                f"model.tie_embeddings needs model.embedding_size == model.hidden_size "
                f"({self.embedding_size} != {self.hidden_size})"
            )


class LanguageModel(nn.Module):
    """Token ids (B, T) and a state -> scores of the next token (B, T, V) and the state after them.
    Dropout acts on the embeddings, between layers and on the top layer's output, in training only."""

    def __init__(self, settings: LanguageModelSettings):
        super().__init__()
        s = self.settings = settings
        self.embedding = nn.Embedding(s.vocab, s.embedding_size, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(s.dropout)
        self.rnn = recurrent_layers(s.cell, s.embedding_size, s.hidden_size, s.layers, s.dropout)
        self.output = nn.Linear(s.hidden_size, s.vocab)
        # small uniform embeddings and output weights, a zero output bias (Zaremba et al. 2014). Not
        # the log unigram bias the translator starts from: on PTB it held SGD at the unigram
        # perplexity (about 700) for a whole epoch, where a zero bias fell to 508 in 400 steps
        with torch.no_grad():
            self.embedding.weight.uniform_(-0.1, 0.1)
            self.embedding.weight[PAD_ID].zero_()
            self.output.weight.uniform_(-0.1, 0.1)
            self.output.bias.zero_()
        if s.tie_embeddings:  # one matrix for reading and writing tokens (Press & Wolf 2017)
            self.output.weight = self.embedding.weight

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        outputs, state = self.rnn(self.dropout(self.embedding(ids)), state)
        return self.output(self.dropout(outputs)), state


def stream_rows(tokens: np.ndarray, batch: int) -> torch.Tensor:
    """The stream as ``batch`` contiguous rows (batch, ceil(N / batch)): row r holds tokens
    ``[r * L, (r + 1) * L)``; the end of the last rows is padding."""
    length = max(1, math.ceil(len(tokens) / batch))
    rows = np.full(batch * length, PAD_ID, dtype=np.int64)
    rows[: len(tokens)] = tokens
    return torch.from_numpy(rows.reshape(batch, length))


def segments(rows: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) of ``bptt`` steps (fewer at the end) along the rows: targets are the
    inputs shifted by one token."""
    for start in range(0, rows.size(1) - 1, bptt):
        end = min(start + bptt, rows.size(1) - 1)
        yield rows[:, start:end], rows[:, start + 1 : end + 1]


def segment_count(tokens: int, batch: int, bptt: int) -> int:
    """How many segments ``segments(stream_rows(...))`` gives for a stream of ``tokens``."""
    return math.ceil((max(1, math.ceil(tokens / batch)) - 1) / bptt)


@torch.no_grad()
def stream_loss(
    model: LanguageModel, tokens: np.ndarray, batch: int, bptt: int, device: torch.device | str = "cpu"
) -> tuple[float, int]:
    """Summed cross-entropy (nats) of every predicted token of the stream and how many there are;
    ``exp(sum / count)`` is the perplexity. The state is carried along the rows."""
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    for inputs, targets in segments(stream_rows(tokens, batch).to(device), bptt):
        logits, state = model(inputs, state)
        loss, n = sequence_loss(logits, targets)
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total, count


def loss_metrics(prefix: str, loss: float, tokens: int, chars: bool) -> dict[str, float]:
    """Loss in nats per token, perplexity, and bits per character for a character model."""
    metrics = {f"{prefix}_loss": loss, f"{prefix}_perplexity": math.exp(min(loss, 50)), f"{prefix}_tokens": tokens}
    if chars:
        metrics[f"{prefix}_bits_per_char"] = loss / math.log(2)
    return metrics
