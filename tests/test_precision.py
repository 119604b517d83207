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
    for amp, expected in (
        ("all", torch.bfloat16 if has_bf16 else torch.float32),
        ("gpu", torch.float32),
        ("off", torch.float32),
    ):
        with precision.autocast(cpu, amp):
            assert layer(torch.ones(2, 4)).dtype == expected, amp


def test_a_gpu_device_gets_cuda_autocast_unless_off():
    """Only the context's kind is checked here (no GPU on these machines)."""
    gpu = torch.device("cuda")
    assert isinstance(precision.autocast(gpu, "gpu"), torch.autocast)
    assert isinstance(precision.autocast(gpu, "all"), torch.autocast)
    assert not isinstance(precision.autocast(gpu, "off"), torch.autocast)


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX512",
    reason="oneDNN runs a bf16 LSTM only on CPUs with AVX-512 (it emulates bf16 where it is not native); "
    f"this one has {torch.backends.cpu.get_cpu_capability()}",
)
def test_a_translator_step_under_cpu_bf16_stays_close_to_fp32(monkeypatch):
    """The benchmark model's kind (bidirectional LSTM, Bahdanau attention, input feeding) runs
    under CPU autocast, and its loss and gradients stay within bf16's precision of fp32's."""
    from rnn_models.translator import Translator, TranslatorSettings, frame_target, sequence_loss

    # autocast runs (slowly, emulated) on AVX-512 CPUs without native bf16 too
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    torch.manual_seed(0)
    model = Translator(TranslatorSettings(50, 60, embedding_size=32, hidden_size=32, dropout=0.0))
    src = torch.randint(6, 50, (8, 7))
    tgt_in, tgt_out = frame_target(torch.randint(6, 60, (8, 9)))
    results = []
    for amp in ("off", "all"):
        model.zero_grad()
        with precision.autocast(torch.device("cpu"), amp):
            logits, _ = model(src, torch.full((8,), 7), tgt_in)
            loss, tokens = sequence_loss(logits, tgt_out)
        (loss / tokens).backward()
        results.append((logits.dtype, float(loss.detach()), model.decoder.output.weight.grad.clone()))
    (fp32_dtype, fp32_loss, fp32_grad), (bf16_dtype, bf16_loss, bf16_grad) = results
    assert (fp32_dtype, bf16_dtype) == (torch.float32, torch.bfloat16)
    assert bf16_loss == pytest.approx(fp32_loss, rel=1e-2)
    assert torch.nn.functional.cosine_similarity(bf16_grad.flatten(), fp32_grad.flatten(), dim=0) > 0.99
