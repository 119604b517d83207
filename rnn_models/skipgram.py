"""word2vec skip-gram (and CBOW) with NCE or negative sampling.

Pairs come in windows: every kept word is a centre, and the words of its dynamic window are its
inputs. As in word2vec.c, each window word's input vector predicts the centre's output vector
(the skip-gram pairs are symmetric, so this is the same set of pairs as the centre predicting
each window word). Noise words are drawn once per block of ``noise_block`` centres and shared
by all pairs of the block (Ji et al. 2016, "Parallelizing Word2Vec in Shared and Distributed
Memory"): each pair still sees ``k`` noise words.

Two ways to train on a stream, the same pairs, noise and objective: :meth:`Word2Vec.sgd_step`
updates a whole batch at once with tensor ops (any device; the scores become small matrix
products), and :meth:`Word2Vec.train_step` with ``native`` runs a loop in C on the CPU
(``word2vec_native``), several threads sharing the tables. The C loop updates skip-gram either pair
by pair like word2vec.c (``update="pair"``) or one centre's window at a time (``update="window"``,
pWord2Vec's form: the window words' input rows against the centre's and its noise words' output
rows as small matrix products, the summed gradient of the window applied at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pipelines.contract.errors import ConfigError
from rnn_models import word2vec_native
from rnn_models.nce import NoiseSampler, corrected_logits, nce_logit_grads, nce_loss, noise_distribution
from rnn_models.settings import Settings

LOSSES = ("nce", "negative")
UPDATES = ("window", "pair")


@dataclass(frozen=True)
class Word2VecSettings(Settings):
    """The shape and objective of a word2vec model (what a checkpoint must match to resume); the
    fields besides ``vocab_size`` are the ``model.*`` keys of the job's config."""

    prefix = "model."

    vocab_size: int
    dim: int = 200  # embedding size
    cbow: bool = False  # CBOW (the window's mean predicts the centre) instead of skip-gram
    loss: str = "nce"  # nce (with the log(k q(w)) correction) or negative (negative sampling)
    negatives: int = 5  # noise words k per pair
    noise_block: int = 1  # consecutive centres sharing one draw of noise words
    update: str = "window"  # skip-gram's C loop: window (a centre's window at once) or pair (pair by pair)
    noise_power: float = 0.75  # noise distribution: unigram counts to this power
    placeholder_noise: bool = True  # [UNK], [NUM], [URL] may be drawn as noise

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"model.loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.update not in UPDATES:
            raise ConfigError(f"model.update must be one of {', '.join(UPDATES)}; got {self.update!r}")
        for name in ("vocab_size", "dim", "negatives", "noise_block"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.noise_power < 0:
            raise ConfigError(f"model.noise_power must be >= 0, got {self.noise_power}")


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


def sentence_ids(lengths: torch.Tensor) -> torch.Tensor:
    """Sentence index of every token of sentences with the given lengths, flattened."""
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)


@dataclass
class Stream:
    """A (subsampled) token stream: each token (N,), its sentence (N,) and the reach (N,) of its
    window, drawn uniformly from 1..``window`` (word2vec's dynamic window). Windows never cross
    sentences."""

    tokens: torch.Tensor
    sentence: torch.Tensor
    reach: torch.Tensor
    window: int

    def __len__(self) -> int:
        return self.tokens.numel()

    @classmethod
    def draw(
        cls, tokens: torch.Tensor, sentence: torch.Tensor, window: int, generator: torch.Generator | None = None
    ) -> "Stream":
        reach = torch.randint(1, window + 1, tokens.shape, generator=generator, device=tokens.device)
        return cls(tokens, sentence, reach, window)

    def windows(self) -> Windows:
        """Every token as a centre with the tokens at distance 1..reach on both sides."""
        n, device, window = len(self), self.tokens.device, self.window
        offsets = torch.cat([torch.arange(-window, 0, device=device), torch.arange(1, window + 1, device=device)])
        positions = torch.arange(n, device=device).unsqueeze(1) + offsets
        inside = (positions >= 0) & (positions < n) & (offsets.abs() <= self.reach.unsqueeze(1))
        positions = positions.clamp_(0, max(n - 1, 0))
        mask = inside & (self.sentence[positions] == self.sentence.unsqueeze(1))
        return Windows(self.tokens, torch.where(mask, self.tokens[positions], 0), mask)


@dataclass
class Windows:
    """Centre words (C,) and their window words (C, 2 * window), ``mask`` marking real ones."""

    centres: torch.Tensor
    contexts: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.centres.numel()

    @property
    def pairs(self) -> int:
        return int(self.mask.sum())


class Word2Vec(nn.Module):
    """Input embeddings (the word vectors), output embeddings and output biases.

    With NCE the biases start at ``log(k q(w))``, so the model starts from the noise distribution
    (every corrected logit 0) instead of far from it. Negative sampling is word2vec's: no bias (the
    biases stay 0; NCE is negative sampling with a learned bias offset by ``log(k q(w))``).
    ``cbow`` averages a window's input vectors into one input that predicts the centre.
    """

    def __init__(self, settings: Word2VecSettings, counts: Sequence[int] | torch.Tensor):
        super().__init__()
        s = self.settings = settings
        if len(counts) != s.vocab_size:
            raise ValueError(f"{len(counts)} counts for a vocabulary of {s.vocab_size}")
        vocab_size, dim, negatives, loss = s.vocab_size, s.dim, s.negatives, s.loss
        noise_probs = noise_distribution(counts, s.noise_power, exclude_placeholders=not s.placeholder_noise)
        self.input = nn.Embedding(vocab_size, dim)
        self.output = nn.Embedding(vocab_size, dim)
        self.bias = nn.Embedding(vocab_size, 1)
        nn.init.uniform_(self.input.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.output.weight)
        self.register_buffer("noise_probs", noise_probs)
        self.register_buffer("log_kq", torch.log(negatives * noise_probs.clamp(min=1e-30)))
        with torch.no_grad():
            self.bias.weight.copy_(self.log_kq.unsqueeze(1) if loss == "nce" else 0)
        self.bias.weight.requires_grad_(loss == "nce")
        self.sampler = NoiseSampler(noise_probs)
        self.negatives, self.nce, self.cbow, self.noise_block = negatives, loss == "nce", s.cbow, s.noise_block

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.sampler = self.sampler.to(self.noise_probs.device)  # follow the module to its device
        return self

    def draw_noise(self, batch: Windows | Stream, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(blocks, k)`` noise words, one row per block of ``noise_block`` centres."""
        blocks = -(-len(batch) // self.noise_block)
        return self.sampler((blocks, self.negatives), generator)

    def _blocked(self, per_centre: torch.Tensor, blocks: int) -> torch.Tensor:
        """(C, ...) -> (blocks, noise_block * ..., last dim), zero-padding the last block."""
        pad = blocks * self.noise_block - per_centre.shape[0]
        padded = nn.functional.pad(per_centre, (0, 0) * (per_centre.dim() - 1) + (0, pad))
        return padded.view(blocks, -1, per_centre.shape[-1])

    def _inputs(self, batch: Windows) -> tuple[torch.Tensor, torch.Tensor]:
        """Input vectors (C, S, D) and their mask (C, S); CBOW averages each window (S = 1)."""
        vectors = self.input(batch.contexts)
        mask = batch.mask.to(vectors.dtype)
        if self.cbow:
            vectors = (vectors * mask.unsqueeze(-1)).sum(1, keepdim=True) / mask.sum(1).clamp(min=1)[:, None, None]
            mask = (mask.sum(1, keepdim=True) > 0).to(vectors.dtype)
        return vectors, mask

    def _logits(self, inputs: torch.Tensor, batch: Windows, noise: torch.Tensor):
        """Corrected true logits (C, S) and noise logits (C, S, k), with the output rows used."""
        c, s, d = inputs.shape
        centre_out = self.output(batch.centres)
        noise_out = self.output(noise)  # (blocks, k, D)
        true = (inputs * centre_out.unsqueeze(1)).sum(-1) + self.bias(batch.centres)
        blocked = self._blocked(inputs, noise.shape[0])
        noise_logit = torch.bmm(blocked, noise_out.transpose(1, 2)) + self.bias(noise).view(noise.shape[0], 1, -1)
        noise_logit = noise_logit.view(-1, s, self.negatives)[:c]
        kq = self.nce
        true = corrected_logits(true, self.log_kq[batch.centres].unsqueeze(1) if kq else None)
        noise_logit = corrected_logits(
            noise_logit, self.log_kq[noise].repeat_interleave(self.noise_block, 0)[:c].unsqueeze(1) if kq else None
        )
        return true, noise_logit, centre_out, noise_out, blocked

    def forward(self, batch: Windows, noise: torch.Tensor) -> torch.Tensor:
        """Mean loss per pair (per window for CBOW)."""
        inputs, mask = self._inputs(batch)
        true, noise_logit, *_ = self._logits(inputs, batch, noise)
        return (nce_loss(true, noise_logit) * mask).sum() / mask.sum().clamp(min=1)

    @torch.no_grad()
    def sgd_step(self, batch: Windows, noise: torch.Tensor, lr: float) -> float:
        """One plain SGD step on the summed loss, gradients computed directly (no autograd) and
        added in place, like word2vec's per-pair updates; returns the summed loss."""
        inputs, mask = self._inputs(batch)
        c, s, d = inputs.shape
        true, noise_logit, centre_out, noise_out, blocked = self._logits(inputs, batch, noise)
        loss = float((nce_loss(true, noise_logit) * mask).sum())
        g_true, g_noise = nce_logit_grads(true, noise_logit)
        g_true = g_true * mask  # (C, S)
        g_noise = g_noise * mask.unsqueeze(-1)  # (C, S, k)
        g_blocked = self._blocked(g_noise, noise.shape[0])
        d_inputs = g_true.unsqueeze(-1) * centre_out.unsqueeze(1) + torch.bmm(g_blocked, noise_out).view(-1, s, d)[:c]
        d_centre = (g_true.unsqueeze(-1) * inputs).sum(1)
        d_noise = torch.bmm(g_blocked.transpose(1, 2), blocked)  # (blocks, k, D)
        out, bias = self.output.weight, self.bias.weight.view(-1)
        out.index_add_(0, batch.centres, d_centre, alpha=-lr)
        out.index_add_(0, noise.flatten(), d_noise.view(-1, d), alpha=-lr)
        if self.nce:
            bias.index_add_(0, batch.centres, g_true.sum(1), alpha=-lr)
            bias.index_add_(0, noise.flatten(), g_blocked.sum(1).flatten(), alpha=-lr)
        if self.cbow:  # each window word gets its share of the averaged input's gradient
            share = batch.mask.to(inputs.dtype) / batch.mask.sum(1, keepdim=True).clamp(min=1)
            d_inputs = d_inputs * share.unsqueeze(-1)
        self.input.weight.index_add_(0, batch.contexts.flatten(), d_inputs.reshape(-1, d), alpha=-lr)
        return loss

    def train_step(
        self, stream: Stream, noise: torch.Tensor, lr: float, native: bool = False, threads: int = 1
    ) -> tuple[float, int]:
        """One SGD pass over a stream's windows; returns the summed loss and the number of terms
        (pairs; windows for CBOW). ``native`` runs the C loop (``settings.update``: pair by pair or
        window by window) on ``threads`` threads (CPU, float32); otherwise :meth:`sgd_step` updates
        the whole stream at once."""
        if native:
            tables = (self.input.weight, self.output.weight, self.bias.weight, self.log_kq)
            return word2vec_native.sgd(
                tables,
                stream.tokens,
                stream.sentence,
                stream.reach,
                noise,
                self.noise_block,
                lr,
                self.nce,
                self.cbow,
                threads,
                by_window=self.settings.update == "window",
            )
        batch = stream.windows()
        loss = self.sgd_step(batch, noise, lr)
        return loss, int(batch.mask.any(1).sum()) if self.cbow else batch.pairs


def training_stream(
    tokens: torch.Tensor,
    sentence: torch.Tensor,
    keep: torch.Tensor,
    window: int,
    generator: torch.Generator | None = None,
) -> Stream:
    """Subsample a token stream and draw its windows' reaches (discarded words leave no gap)."""
    kept = subsample(tokens, keep, generator)
    return Stream.draw(tokens[kept], sentence[kept], window, generator)


def linear_lr(initial: float, progress: float, floor: float = 1e-4) -> float:
    """Learning rate decayed linearly over the run (``progress`` in [0, 1]), never below
    ``floor`` times the initial rate."""
    return initial * max(floor, 1.0 - min(max(progress, 0.0), 1.0))
