"""Config loading: layering, overrides, unknown keys, presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import CONF_DIR, ConfigError, flatten, load_config, to_dict


def test_defaults_and_overrides():
    cfg = load_config("preprocess", ["filter.max_len=40", "spark.master=local[1]", "vocab.shared=true"])
    assert cfg.filter.max_len == 40 and cfg.spark.master == "local[1]" and cfg.vocab.shared is True
    assert cfg.mlflow.experiment == "rnnmt"  # from conf/common.yaml


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("preprocess", ["filter.max_lenght=40"])


def test_free_form_mappings_take_any_key():
    cfg = load_config("preprocess", ['spark.conf={spark.sql.adaptive.enabled: "false"}',
                                     "spark.conf.spark.executor.cores=2"])
    assert flatten(to_dict(cfg)["spark"]["conf"]) == {"spark.sql.adaptive.enabled": "false",
                                                      "spark.executor.cores": 2}


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("preprocess", ["conf/preprocess/nope.yaml"])


@pytest.mark.parametrize("preset", sorted((CONF_DIR / "preprocess").glob("*.yaml")), ids=lambda p: p.stem)
def test_presets_load_and_resolve(preset: Path):
    cfg = to_dict(load_config("preprocess", [str(preset), "data_root=/corpora"]))
    assert cfg["data"]["inputs"], preset
    for entry in cfg["data"]["inputs"]:
        assert "${" not in str(entry)
        if "multi30k" in preset.stem or preset.stem in ("tatoeba", "wikipedia"):
            assert str(entry).count("/corpora/") >= 1


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
