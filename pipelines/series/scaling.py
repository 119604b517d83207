"""How a series' values become the model's and back: an optional log, an optional difference over
``difference`` steps, then a per-series scale fitted on the training part only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.contract.errors import ConfigError, check_integer

TRANSFORMS = ("none", "log1p")
SCALES = ("standard", "minmax", "none")


@dataclass(frozen=True)
class Scaling:
    """The settings (the ``series.transform``, ``difference`` and ``scale`` keys), the same for every series."""

    transform: str = "none"
    difference: int = 0
    scale: str = "standard"

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"series.transform must be one of {', '.join(TRANSFORMS)}; got {self.transform!r}")
        if self.scale not in SCALES:
            raise ConfigError(f"series.scale must be one of {', '.join(SCALES)}; got {self.scale!r}")
        check_integer("series.difference", self.difference, 0)

    @classmethod
    def from_config(cls, series: Mapping[str, Any]) -> "Scaling":
        return cls(series["transform"], series["difference"], series["scale"])

    def to_dict(self) -> dict[str, Any]:
        return {"transform": self.transform, "difference": self.difference, "scale": self.scale}

    def _transformed(self, raw: np.ndarray) -> np.ndarray:
        if self.transform == "log1p":
            if (raw <= -1).any():
                raise ValueError("series.transform=log1p needs values > -1")
            return np.log1p(raw)
        return raw

    def _differenced(self, raw: np.ndarray) -> np.ndarray:
        t = self._transformed(np.asarray(raw, np.float64))
        return t[self.difference :] - t[: -self.difference] if self.difference else t

    def fit(self, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The per-feature centre and spread fitted on the training values ``train`` (points, features)."""
        d = self._differenced(train)
        features = d.shape[1]
        if self.scale == "none" or not len(d):
            return np.zeros(features), np.ones(features)
        if self.scale == "standard":
            centre, spread = d.mean(axis=0), d.std(axis=0)
        else:
            centre, spread = d.min(axis=0), d.max(axis=0) - d.min(axis=0)
        return centre, np.where(spread > 1e-12, spread, 1.0)  # a constant series keeps its spread at 1

    def forward(self, raw: np.ndarray, centre: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """The model's values of ``raw`` (points, features): ``difference`` points fewer (model
        point ``k`` belongs to raw point ``k + difference``)."""
        return (self._differenced(raw) - centre) / spread

    def inverse(self, model: np.ndarray, before: np.ndarray, centre: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """Raw values of the model's values ``model`` (steps, features) that follow the raw values
        ``before`` (at least ``difference`` points, the last ones before the first step)."""
        d = np.asarray(model, np.float64) * spread + centre
        if self.difference:
            if len(before) < self.difference:
                raise ValueError(f"inverting a difference of {self.difference} needs that many earlier values")
            level = list(self._transformed(np.asarray(before, np.float64))[-self.difference :])
            for value in d:
                level.append(level[-self.difference] + value)
            d = np.asarray(level[self.difference :])
        if self.transform == "log1p":
            return np.expm1(d)
        return d
