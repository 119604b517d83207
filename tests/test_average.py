"""Checkpoint averaging (Bundle.average and jobs.average): the mean of the parameters, refused
across models or vocabularies."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_translate import _original

from jobs import average as job
from jobs.common.checkpoint import BUNDLE_FILE, Bundle, average_states
from jobs.common.translation import translate
from pipelines.contract.errors import CheckpointError, ConfigError
from rnn_models.translator import Translator


def _bundle(seed: int, **settings) -> Bundle:
    """The test translator with parameters drawn from ``seed`` (and other settings if given)."""
    bundle = _original()
    torch.manual_seed(seed)
    if settings:
        bundle.model = Translator(replace(bundle.model.settings, **settings)).eval()
    else:
        for p in bundle.model.parameters():
            torch.nn.init.normal_(p)
    return bundle


def test_the_average_is_the_mean_of_the_parameters(tmp_path):
    a, b, c = _bundle(1), _bundle(2), _bundle(3)
    averaged = Bundle.average([a, b, c])
    for name, value in averaged.model.state_dict().items():
        expected = (a.model.state_dict()[name] + b.model.state_dict()[name] + c.model.state_dict()[name]) / 3
        assert torch.allclose(value, expected, atol=1e-6), name
    # averaging copies of one model gives that model, translating alike
    same = Bundle.average([a, _bundle(1)])
    texts = ["the cat sleeps on a mat", "a mat"]
    settings = a.decode_settings()
    assert [t.text for t in translate(same, texts, settings)] == [t.text for t in translate(a, texts, settings)]
    with pytest.raises(CheckpointError, match="different parameters"):
        average_states([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])


def test_checkpoints_of_other_models_or_vocabularies_are_refused():
    with pytest.raises(CheckpointError, match="different model settings"):
        Bundle.average([_bundle(1), _bundle(1, hidden_size=12)])
    other = _bundle(2)
    other.tgt_tokens = other.tgt_tokens[:-1] + ["chien"]
    with pytest.raises(CheckpointError, match="different vocabularies"):
        Bundle.average([_bundle(1), other])


def test_the_command_writes_one_loadable_checkpoint(tmp_path):
    paths = []
    for seed in (1, 2):
        path = tmp_path / f"c{seed}" / BUNDLE_FILE
        path.parent.mkdir()
        _bundle(seed).save(path)
        paths.append(str(path))
    summary = job.run([*paths, "--output", str(tmp_path / "avg")])
    loaded = Bundle.load(tmp_path / "avg")
    expected = Bundle.average([Bundle.load(p) for p in paths])
    assert summary["averaged"] == 2 and loaded.info["averaged_from"] == paths
    assert all(torch.equal(v, expected.model.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    with pytest.raises(ConfigError, match="at least two"):
        job.run([paths[0], "--output", str(tmp_path / "one")])
