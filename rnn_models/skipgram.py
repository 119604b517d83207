"""word2vec skip-gram (and CBOW) with NCE or negative sampling; batches built with tensor ops."""

from __future__ import annotations

import torch
from torch import nn

from rnn_models.nce import draw_noise, nce_loss


def keep_probabilities(counts: torch.Tensor, sample: float) -> torch.Tensor:
    """Probability of keeping each word under frequent-word subsampling (word2vec's formula):
    ``(sqrt(f / sample) + 1) * sample / f`` for a word of frequency ``f``, at most 1."""
    counts = counts.double()
    if sample <= 0:
        return torch.ones_like(counts, dtype=torch.float32)
    freq = counts / counts.sum()
    keep = torch.where(freq > 0, ((freq / sample).sqrt() + 1) * sample / freq.clamp(min=1e-30), torch.ones_like(freq))
    return keep.clamp(max=1).float()


def subsample(tokens: torch.Tensor, keep: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask of the tokens kept (each kept with probability ``keep[token]``)."""
    return torch.rand(tokens.shape, generator=generator, device=tokens.device) < keep[tokens]


def skipgram_pairs(tokens: torch.Tensor, sentence: torch.Tensor, window: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, context) index pairs of a flat token stream with a dynamic window.

    ``tokens`` (N,) and ``sentence`` (N,) give each token and the sentence it belongs to (pairs never
    cross sentences). Each centre draws its window ``b`` uniformly from 1..``window`` and pairs with
    the tokens at distance 1..b on both sides, as word2vec does. Returns positions into ``tokens``.
    """
    n = tokens.numel()
    span = torch.randint(1, window + 1, (n,), generator=generator, device=tokens.device)
    positions = torch.arange(n, device=tokens.device)
    centres, contexts = [], []
    for offset in range(1, window + 1):
        left, right = positions[:-offset], positions[offset:]
        same = sentence[:-offset] == sentence[offset:]
        forward = same & (span[:-offset] >= offset)   # centre on the left
        backward = same & (span[offset:] >= offset)   # centre on the right
        centres += [left[forward], right[backward]]
        contexts += [right[forward], left[backward]]
    return torch.cat(centres), torch.cat(contexts)


class Word2Vec(nn.Module):
    """Input (centre) embeddings, output embeddings and biases for NCE; ``cbow`` averages the
    context to predict the centre instead."""

    def __init__(self, vocab_size: int, dim: int, noise_probs: torch.Tensor, negatives: int = 5,
                 loss: str = "nce", cbow: bool = False):
        super().__init__()
        if loss not in ("nce", "negative"):
            raise ValueError(f"loss must be 'nce' or 'negative', got {loss!r}")
        self.input = nn.Embedding(vocab_size, dim)
        self.output = nn.Embedding(vocab_size, dim)
        self.bias = nn.Embedding(vocab_size, 1)
        nn.init.uniform_(self.input.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.bias.weight)
        self.register_buffer("noise_probs", noise_probs)
        self.register_buffer("log_kq", torch.log(negatives * noise_probs.clamp(min=1e-30)))
        self.negatives, self.loss_kind, self.cbow = negatives, loss, cbow

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, input_mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean loss. Skip-gram: ``inputs`` (B,) centre ids, ``targets`` (B,) context ids. CBOW:
        ``inputs`` (B, C) context ids with ``input_mask`` (B, C), ``targets`` (B,) centre ids."""
        vectors = self.input(inputs)
        if self.cbow:
            mask = input_mask.unsqueeze(-1).to(vectors.dtype)
            vectors = (vectors * mask).sum(1) / mask.sum(1).clamp(min=1)
        noise = draw_noise(self.noise_probs, targets.numel(), self.negatives, generator)
        nce = self.loss_kind == "nce"
        return nce_loss(vectors, self.output(targets), self.bias(targets).squeeze(-1),
                        self.output(noise), self.bias(noise).squeeze(-1),
                        self.log_kq[targets] if nce else None, self.log_kq[noise] if nce else None)


def linear_lr(initial: float, progress: float, floor: float = 1e-4) -> float:
    """Learning rate decayed linearly over the run (``progress`` in [0, 1]), never below
    ``floor`` times the initial rate."""
    return initial * max(floor, 1.0 - min(max(progress, 0.0), 1.0))


def sentence_ids(lengths: torch.Tensor) -> torch.Tensor:
    """Sentence index of every token of sentences with the given lengths, flattened."""
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)


