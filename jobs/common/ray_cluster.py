"""The Ray connection a job uses: in-process by default, a cluster at ``ray.address`` or ``RAY_ADDRESS``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from jobs.common.ray_private import init_local


def ray_address(cfg: Mapping[str, Any]) -> str | None:
    """The configured cluster address, or None for an in-process Ray."""
    return cfg.get("address") or os.environ.get("RAY_ADDRESS") or None


def connect(cfg: Mapping[str, Any]) -> dict[str, float]:
    """Initialise Ray for the ``ray`` section of a job config (once per process); returns the
    cluster's resources. An in-process Ray's dashboard binds to 127.0.0.1; its GCS, raylet and
    workers' gRPC servers listen on every interface (Ray 2.60 has no setting to change that)."""
    import ray

    address = ray_address(cfg)
    if not ray.is_initialized():
        if address is None:
            init_local(cfg.get("num_cpus"))
        else:
            ray.init(address=address)
    elif address is not None and not same_cluster(address, ray.get_runtime_context().gcs_address):
        warnings.warn(
            f"ray.address={address} is not used: this process is already connected to the Ray at "
            f"{ray.get_runtime_context().gcs_address}, and one process talks to one Ray; run the job "
            "in a process of its own to use another",
            stacklevel=2,
        )
    return ray.cluster_resources()


_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def same_cluster(address: str, gcs_address: str) -> bool:
    """Whether a configured ``ray.address`` names the cluster at ``gcs_address`` (host:port; Ray
    reports a loopback address as the machine's own). ``auto`` and ``ray://`` client addresses,
    which cannot be compared, count as the same."""
    if address == "auto" or "://" in address:
        return True
    host, _, port = address.rpartition(":")
    gcs_host, _, gcs_port = gcs_address.rpartition(":")
    return port == gcs_port and (host == gcs_host or host in _LOCAL_HOSTS)
