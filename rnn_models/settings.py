"""What the frozen settings dataclasses of the models share: plain-dict round trips that refuse
unknown keys (the dicts come from configs and checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

from pipelines.contract.errors import ConfigError

S = TypeVar("S", bound="Settings")


class Settings:
    """Mixin for a frozen dataclass: ``from_dict`` (unknown keys refused) and ``to_dict``."""

    @classmethod
    def check_keys(cls, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)} (known: {sorted(names)})")

    @classmethod
    def from_dict(cls: type[S], values: dict[str, Any]) -> S:
        cls.check_keys(values)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]
