"""Job configuration: YAML files from ``conf/`` merged with ``key=value`` overrides (OmegaConf).

Order, later wins: ``conf/common.yaml``, ``conf/training.yaml`` for the jobs that train with the
shared loop (:data:`LOOP_TRAINERS`), ``conf/<job>.yaml``, the CONFIG file given on the command
line (a preset such as ``conf/preprocess/tatoeba.yaml``), then the overrides. Keys that the job's
YAML does not define are rejected, so a typo fails instead of being ignored; a mapping that is empty
by default (such as ``spark.conf``) or named ``overrides`` (another job's keys, in jobs.pipeline) takes
any key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pipelines.contract.errors import ConfigError

__all__ = ["CONF_DIR", "PROJECT_DIR", "ConfigError", "flatten", "load_config", "to_dict", "to_dotlist", "to_yaml"]

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
CONF_DIR = PROJECT_DIR / "conf"
# the jobs whose config builds on conf/training.yaml (the shared training loop's settings)
LOOP_TRAINERS = ("train_translator", "train_lm", "train_classifier", "train_forecaster")


def load_config(job: str, argv: Sequence[str] | None = None) -> DictConfig:
    """The resolved config of ``job`` from ``argv`` (``[CONFIG.yaml] [key=value ...]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    presets = [a for a in argv if "=" not in a]
    overrides = [a for a in argv if "=" in a]
    if len(presets) > 1:
        raise ConfigError(f"expected at most one config file, got {presets}")
    bases = ["common.yaml"] + (["training.yaml"] if job in LOOP_TRAINERS else [])
    cfg = OmegaConf.merge(*(OmegaConf.load(CONF_DIR / name) for name in [*bases, f"{job}.yaml"]))
    OmegaConf.set_struct(cfg, True)
    _open_empty_mappings(cfg)
    layers = []
    for preset in presets:
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(f"config file {preset} does not exist")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as err:  # YAML syntax errors come in several types
            raise ConfigError(f"config file {preset} is not valid YAML: {err}") from None
    try:
        layers.append(OmegaConf.from_dotlist(overrides))
        cfg = OmegaConf.merge(cfg, *layers)
        OmegaConf.resolve(cfg)
    except ConfigKeyError as err:
        raise ConfigError(f"unknown config key {err.full_key or ''}: {_first_line(err)}") from None
    except OmegaConfBaseException as err:  # a value of the wrong type, an unresolvable ${...}
        raise ConfigError(
            f"{err.full_key + ': ' if getattr(err, 'full_key', None) else ''}{_first_line(err)}"
        ) from None
    return cfg


def _first_line(err: Exception) -> str:
    """OmegaConf's message without the lines of context it appends."""
    return str(getattr(err, "msg", None) or err).strip().splitlines()[0]


def _open_empty_mappings(node: DictConfig) -> None:
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            if len(child) == 0 or key == "overrides":
                OmegaConf.set_struct(child, False)
            else:
                _open_empty_mappings(child)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain Python containers."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_dotlist(values: dict[str, Any]) -> list[str]:
    """``{"train": {"epochs": 2}}`` -> ``["train.epochs=2"]``: overrides for :func:`load_config`
    (values in YAML/JSON syntax; empty mappings left out)."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in flatten(values).items() if v != {}]


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
