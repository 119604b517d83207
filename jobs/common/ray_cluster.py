"""The Ray connection a job uses: in-process by default, a cluster at ``ray.address`` or ``RAY_ADDRESS``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from jobs.common.ray_private import init_local


def ray_address(cfg: Mapping[str, Any]) -> str | None:
    """The configured cluster address, or None for an in-process Ray."""
    return cfg.get("address") or os.environ.get("RAY_ADDRESS") or None


def connect(cfg: Mapping[str, Any]) -> dict[str, float]:
    """Initialise Ray for the ``ray`` section of a job config (once per process); returns the
    cluster's resources. An in-process Ray binds to 127.0.0.1, its dashboard too."""
    import ray

    if not ray.is_initialized():
        address = ray_address(cfg)
        if address is None:
            init_local(cfg.get("num_cpus"))
        else:
            ray.init(address=address)
    return ray.cluster_resources()
