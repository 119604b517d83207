"""Config loading: layering, overrides, unknown keys, presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import DATA, PROJECT
from jobs import pipeline, train_translator, tune
from jobs.common.config import CONF_DIR, ConfigError, flatten, load_config, to_dict
from pipelines.spark.preprocess import check_settings
from pipelines.spark.series import check_series_settings
from rnn_models.forecaster import ForecasterSettings


def test_defaults_and_overrides():
    cfg = load_config("preprocess", ["filter.max_len=40", "spark.master=local[1]", "vocab.shared=true"])
    assert cfg.filter.max_len == 40 and cfg.spark.master == "local[1]" and cfg.vocab.shared is True
    assert cfg.mlflow.experiment == "rnnmt"  # from conf/common.yaml


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("preprocess", ["filter.max_lenght=40"])


def test_free_form_mappings_take_any_key():
    cfg = load_config(
        "preprocess", ['spark.conf={spark.sql.adaptive.enabled: "false"}', "spark.conf.spark.executor.cores=2"]
    )
    assert flatten(to_dict(cfg)["spark"]["conf"]) == {"spark.sql.adaptive.enabled": "false", "spark.executor.cores": 2}


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


PRESETS = sorted(p for p in CONF_DIR.glob("*/*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_preset_of_every_job_loads(preset: Path):
    """conf/<job>/*.yaml are presets of jobs.<job>: each loads over the job's defaults, with nothing
    unresolved, and what the job checks before it starts passes."""
    job = preset.parent.name
    assert (CONF_DIR / f"{job}.yaml").is_file(), f"{preset} is not under a job's name"
    has_root = "data_root" in to_dict(load_config(job, []))
    cfg = to_dict(load_config(job, [str(preset)] + (["data_root=/corpora"] if has_root else [])))
    assert "${" not in str(cfg)
    if job == "preprocess":
        if cfg["data"]["kind"] == "series":
            check_series_settings(cfg)
        else:
            check_settings(cfg)
    elif job == "train_forecaster":
        ForecasterSettings.from_dict({**cfg["model"], "features": 1})
    elif job == "train_translator":
        train_translator.settings_of(cfg)
        train_translator.decode_settings(cfg)
    elif job == "tune":
        trainer = tune.trainer_config(cfg)  # the trainer's preset and the searched keys exist
        assert set(cfg["space"]) <= set(flatten(trainer))
    assert len(PRESETS) >= 7


@pytest.mark.parametrize("preset", [None, DATA / "pipeline-toy.yaml"], ids=["defaults", "toy"])
def test_every_stage_of_the_pipeline_loads(preset, monkeypatch):
    """The pipeline's stages, wired as it runs them: each stage's arguments load as its job's config."""
    monkeypatch.chdir(PROJECT)
    config = to_dict(load_config("pipeline", [str(preset)] if preset else []))
    stages = pipeline.plan(config)
    lm = ["lm"] if config["stages"]["lm"]["enabled"] else []  # the toy preset trains one, the default not
    assert [s.name for s in stages] == ["corpus", "text", "word2vec", *lm, "translator", "evaluate"]
    for stage in stages:
        cfg = to_dict(load_config(stage.job, stage.argv))
        assert "${" not in str(cfg) and cfg["run_name"] == f"pipeline-{stage.name}"
        # each trainer registers under its own name
        registry = {"train_translator": "rnnmt-translator", "train_lm": "rnnmt-lm"}.get(stage.job)
        assert registry is None or cfg["mlflow"]["registry_name"] == registry


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
