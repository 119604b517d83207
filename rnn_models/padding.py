"""Helpers for padded batches: ids (B, S) with their lengths (B,), padding at the end of each row."""

from __future__ import annotations

import torch


def reverse_padded(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row of ``ids`` (B, S, ...) reversed within its length; padding stays at the end."""
    positions = torch.arange(ids.size(1), device=ids.device).unsqueeze(0)
    lengths = lengths.to(ids.device).unsqueeze(1)
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)
    if ids.dim() > 2:  # one index per row and step, the same for every feature
        index = index.view(*index.shape, *(1,) * (ids.dim() - 2)).expand_as(ids)
    return ids.gather(1, index)


def length_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps) True at the positions before each row's length."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)
