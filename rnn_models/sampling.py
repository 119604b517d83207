"""Generating from a language model: the sampling settings and the loop that feeds each sampled
token back in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipelines.contract.errors import ConfigError
from pipelines.contract.specials import GO_ID, PAD_ID
from rnn_models.language_model import LanguageModel
from rnn_models.settings import Settings

NEVER_SAMPLED = (PAD_ID, GO_ID)  # structural ids no training target holds


@dataclass(frozen=True)
class SampleSettings(Settings):
    """How the next token is drawn: ``temperature`` 0 is greedy (the most likely token); else the
    scores are divided by it, then cut to the ``top_k`` most likely (0 = all) and to the smallest
    set whose probability reaches ``top_p`` (1 = all), and one token drawn from what is left."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < math.inf:  # an infinite one divided every score into NaN
            raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")


def next_token(
    logits: torch.Tensor, settings: SampleSettings, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token id per row of the scores ``logits`` (B, V)."""
    logits = logits.float().clone()
    logits[:, list(NEVER_SAMPLED)] = float("-inf")
    if settings.temperature == 0:
        return logits.argmax(-1)
    logits = logits / settings.temperature
    if 0 < settings.top_k < logits.size(-1):
        kth = logits.topk(settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1:
        ordered, order = logits.sort(-1, descending=True)
        probs = ordered.softmax(-1)
        # drop a token when those more likely than it already reach top_p (the first always stays)
        dropped = probs.cumsum(-1) - probs >= settings.top_p
        logits = logits.scatter(-1, order, ordered.masked_fill(dropped, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


@torch.no_grad()
def generate(
    model: LanguageModel,
    prompt: list[int],
    steps: int,
    settings: SampleSettings,
    samples: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> list[list[int]]:
    """``samples`` continuations of ``steps`` tokens each after the ``prompt`` ids (at least one),
    each sampled token fed back in as the next input."""
    if not prompt:
        raise ValueError("generation needs a prompt of at least one token")
    model.eval()
    ids = torch.tensor([prompt] * samples, device=device)
    logits, state = model(ids)
    drawn = []
    for step in range(steps):
        token = next_token(logits[:, -1], settings, generator)
        drawn.append(token)
        if step + 1 < steps:
            logits, state = model(token.unsqueeze(1), state)
    return torch.stack(drawn, 1).tolist() if drawn else [[] for _ in range(samples)]
