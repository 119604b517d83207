"""Every use of a Ray API that is private or version-specific, in one place, each with why.

Tested against the Ray range ``pyproject.toml`` pins; when Ray moves one of these, this module is
what changes.
"""

from __future__ import annotations

from typing import Any


def in_tune_session() -> bool:
    """Whether this process runs a Ray Tune trial. Ray Train V2 wants ``TuneReportCallback`` added
    to a trainer fitted inside a trial, and offers no public test for being in one."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return bool(_in_tune_session())


def init_local(num_cpus: int | None) -> None:
    """An in-process Ray bound to 127.0.0.1. ``_node_ip_address`` is the only way to keep a local
    Ray's own servers off other interfaces; its dashboard also binds to 127.0.0.1 (Ray Train's
    placement-group cleaner and Tune query the state API it serves)."""
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1")


def worker_failures(error: BaseException) -> list[BaseException]:
    """The exceptions of the workers behind a failed ``TorchTrainer.fit`` (Train V2's
    ``WorkerGroupError.worker_failures``), each unwrapped from Ray's task-error wrapper."""
    failures: dict[Any, BaseException] = getattr(error, "worker_failures", None) or {}
    out = []
    for failure in failures.values():
        cause = getattr(failure, "cause", None)  # RayTaskError keeps the original exception here
        out.append(cause if isinstance(cause, BaseException) else failure)
    return out
