"""What the frozen settings dataclasses of the models share: plain-dict round trips that refuse
unknown keys and values of the wrong type (the dicts come from configs, requests and checkpoints)."""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any, TypeVar

from pipelines.contract.errors import ConfigError

S = TypeVar("S", bound="Settings")


class Settings:
    """Mixin for a frozen dataclass: ``from_dict`` (unknown keys and mistyped values refused) and
    ``to_dict``. ``prefix`` is how a config names the fields in errors (``model.``, ``decode.``)."""

    prefix = ""

    @classmethod
    def check_values(cls, values: dict[str, Any]) -> None:
        """A ConfigError for a key the dataclass does not have, or a value whose type is not its
        field's: an int field takes integers, a float field finite numbers, a bool field true or
        false, a str field text (``X | None`` fields also None)."""
        declared = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(values) - set(declared)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)} (known: {sorted(declared)})")
        for name, value in values.items():
            kinds = [k.strip() for k in declared[name].split("|")]
            if value is None and "None" in kinds:
                continue
            wanted = next((k for k in kinds if k != "None"), "")
            if not _is(wanted, value):
                raise ConfigError(f"{cls.prefix}{name} must be {_WANTED[wanted]}, got {value!r}")

    @classmethod
    def from_dict(cls: type[S], values: dict[str, Any]) -> S:
        cls.check_values(values)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


_WANTED = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "text"}


def _is(kind: str, value: Any) -> bool:
    """Whether ``value`` is of the field type ``kind`` (types other than the four: not checked)."""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return True
