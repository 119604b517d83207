"""The encoder-decoder translator: model settings, construction, and the training loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pipelines.contract.errors import ConfigError
from pipelines.contract.specials import EOS_ID, GO_ID, PAD_ID
from rnn_models.attention import KINDS
from rnn_models.decoder import INITS, Decoder, DecoderState, Memory
from rnn_models.encoder import Encoder
from rnn_models.recurrent import CELLS
from rnn_models.settings import Settings


@dataclass(frozen=True)
class TranslatorSettings(Settings):
    """The shape of a translator (what a checkpoint needs to rebuild it); the fields are the
    ``model.*`` keys of the job's config."""

    prefix = "model."

    src_vocab: int
    tgt_vocab: int
    embedding_size: int = 256
    hidden_size: int = 256
    layers: int = 1
    cell: str = "lstm"
    bidirectional: bool = True
    reverse_source: bool = True
    dropout: float = 0.2
    attention: str | None = "bahdanau"
    input_feeding: bool = True
    decoder_init: str = "bridge"
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("attention", self.attention, KINDS + (None,)),
            ("cell", self.cell, tuple(CELLS)),
            ("decoder_init", self.decoder_init, INITS),
        ):
            if value not in allowed:
                shown = ", ".join("none" if a is None else str(a) for a in allowed)
                raise ConfigError(f"model.{name} must be one of {shown}; got {value!r}")
        for name in ("src_vocab", "tgt_vocab", "embedding_size", "hidden_size", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TranslatorSettings":
        """From a config's ``model`` keys (``attention: none`` is no attention) or a checkpoint."""
        values = dict(values)
        if values.get("attention") in ("none", "", False):
            values["attention"] = None
        return super().from_dict(values)


class Translator(nn.Module):
    """Source ids -> target scores. Ids follow the data contract: 0 is padding, targets are framed
    with ``<go>`` (input) and ``<eos>`` (output) here, not in the data."""

    def __init__(self, settings: TranslatorSettings):
        super().__init__()
        s = self.settings = settings
        src_embedding = nn.Embedding(s.src_vocab, s.embedding_size, padding_idx=PAD_ID)
        tgt_embedding = nn.Embedding(s.tgt_vocab, s.embedding_size, padding_idx=PAD_ID)
        self.encoder = Encoder(
            src_embedding, s.cell, s.hidden_size, s.layers, s.dropout, s.bidirectional, s.reverse_source
        )
        self.decoder = Decoder(
            tgt_embedding,
            s.cell,
            s.hidden_size,
            s.layers,
            s.dropout,
            self.encoder.output_size,
            s.attention,
            s.input_feeding,
            s.decoder_init,
            s.tie_embeddings,
        )

    def init_output_bias(self, counts: Sequence[int]) -> None:
        """Start the output bias at the log unigram distribution of the target words (``counts``
        per id): the model then starts from the unigram solution instead of pushing every layer
        towards it, which saturates the attentional layer early in training. No-op when tied."""
        bias = self.decoder.output.bias
        if bias is not None:
            smoothed = torch.tensor(counts, dtype=torch.float) + 1.0
            with torch.no_grad():
                bias.copy_(torch.log(smoothed / smoothed.sum()))

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> Memory:
        return self.decoder.prepare(self.encoder(src, src_len))

    # Decoding, one word at a time (rnn_models/search.py; an Ensemble answers the same three calls).
    @property
    def reverse_source(self) -> bool:
        return self.settings.reverse_source

    def start(self, memory: Memory) -> DecoderState:
        """The decoder state before the first word."""
        return self.decoder.initial_state(memory.encoded)

    def next_log_probs(
        self, prev: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """Log-probabilities (B, V) of the next word after ``prev``, the new state, and the
        attention weights (None without attention)."""
        vector, state, weights = self.decoder.step(prev, state, memory)
        return torch.log_softmax(self.decoder.logits(vector).float(), -1), state, weights

    def forward(
        self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced scores (B, T, V) for ``tgt_in`` (``<go>`` + target), and attention weights."""
        vectors, weights = self.decoder(tgt_in, self.encode(src, src_len))
        return self.decoder.logits(vectors), weights


def sequence_loss(
    logits: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the scores (B, T, V) against ``tgt_out`` (B, T), padding ignored, and
    the number of tokens it covers."""
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        tgt_out.reshape(-1),
        ignore_index=PAD_ID,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return loss, int((tgt_out != PAD_ID).sum())


def frame_target(tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input ``<go> w1 .. wn`` and output ``w1 .. wn <eos>`` for padded targets (B, T)."""
    lengths = (tgt != PAD_ID).sum(1)
    go = tgt.new_full((tgt.size(0), 1), GO_ID)
    tgt_in = torch.cat([go, tgt], dim=1)
    tgt_out = torch.cat([tgt, tgt.new_zeros(tgt.size(0), 1)], dim=1)
    tgt_out.scatter_(1, lengths.unsqueeze(1), EOS_ID)
    return tgt_in, tgt_out
