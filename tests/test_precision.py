"""train.amp: which steps run in bf16 autocast, and the check of the key."""

from __future__ import annotations

import pytest
import torch

from jobs.common import precision
from pipelines.contract.errors import ConfigError


@pytest.mark.parametrize("value,mode", [("gpu", "gpu"), ("all", "all"), ("off", "off"), (True, "gpu"), (False, "off")])
def test_amp_values_and_the_booleans_of_older_configs(value, mode):
    assert precision.amp_mode(value) == mode


@pytest.mark.parametrize("value", ["bf16", 1, None])
def test_an_unknown_amp_value_is_a_config_error(value):
    with pytest.raises(ConfigError, match="train.amp must be one of gpu, all, off"):
        precision.amp_mode(value)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_cpu_steps_use_bf16_only_when_asked_and_the_cpu_has_it(monkeypatch, has_bf16):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)
    cpu = torch.device("cpu")
    layer = torch.nn.Linear(4, 4)
    for amp, expected in (("all", torch.bfloat16 if has_bf16 else torch.float32), ("gpu", torch.float32),
                          ("off", torch.float32)):
        with precision.autocast(cpu, amp):
            assert layer(torch.ones(2, 4)).dtype == expected, amp


def test_a_gpu_device_gets_cuda_autocast_unless_off():
    """Only the context's kind is checked here (no GPU on these machines)."""
    gpu = torch.device("cuda")
    assert isinstance(precision.autocast(gpu, "gpu"), torch.autocast)
    assert isinstance(precision.autocast(gpu, "all"), torch.autocast)
    assert not isinstance(precision.autocast(gpu, "off"), torch.autocast)

