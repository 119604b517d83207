"""Mixed precision of the training steps (``train.amp``): bf16 autocast where the hardware has it."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cache
from pathlib import Path

import torch

from pipelines.contract.errors import ConfigError

AMP = ("gpu", "all", "off")
# CPU flags of native bf16 arithmetic (Linux /proc/cpuinfo names): AVX-512 BF16 (Intel Cooper Lake
# and later, AMD Zen 4 and later) and AMX (Intel Sapphire Rapids and later)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (False where /proc/cpuinfo cannot tell)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return any(flag in flags for flag in BF16_FLAGS)


def amp_mode(value: object) -> str:
    """``train.amp`` checked: ``gpu`` (bf16 autocast on GPU), ``all`` (also on CPUs with native
    bf16), ``off``; the booleans of older configs mean ``gpu`` and ``off``."""
    mode = {True: "gpu", False: "off"}.get(value, value) if isinstance(value, bool) else value
    if mode not in AMP:
        raise ConfigError(f"train.amp must be one of {', '.join(AMP)}, got {value!r}")
    return mode


def autocast(device: torch.device, amp: object) -> AbstractContextManager:
    """The context a training step's forward pass runs in: bf16 autocast on a GPU unless
    ``amp`` is off, on a CPU with native bf16 when ``amp`` is ``all``, else nothing (fp32)."""
    mode = amp_mode(amp)
    if device.type == "cuda" and mode != "off":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and mode == "all" and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()
