"""Every use of a Ray API that is private or version-specific, in one place, each with why.

Tested against the Ray range ``pyproject.toml`` pins; when Ray moves one of these, this module is
what changes.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any


def in_tune_session() -> bool:
    """Whether this process runs a Ray Tune trial. Ray Train V2 wants ``TuneReportCallback`` added
    to a trainer fitted inside a trial, and offers no public test for being in one."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return bool(_in_tune_session())


def tune_stop_requested() -> Callable[[], bool]:
    """A test of whether Ray Tune has asked this process's trial to stop (ASHA's early stop), taken
    while the trial runs; always false outside a trial. A stopped trial's job can fail as its Ray
    Train actors go, after the search has marked its run: that is a stop, not an error. Tune keeps
    the request in its session's private ``stop_event``; the session itself is gone by then."""
    if "ray" not in sys.modules or not in_tune_session():
        return lambda: False
    from ray.train._internal.session import get_session

    session = get_session()
    return lambda: session.stop_event.is_set()


def init_local(num_cpus: int | None) -> None:
    """A new in-process Ray, its dashboard bound to 127.0.0.1, whatever other Ray runs on this machine.

    ``address="local"`` always starts one (a bare ``ray.init()`` joins a cluster that ``ray
    start`` left running). ``_node_ip_address`` names the node 127.0.0.1 and the dashboard binds
    there, but Ray 2.60's GCS, raylet and worker gRPC servers still listen on every interface
    (checked with ``ss -ltnp``: ``*:<port>``; Ray has no setting for them). Ray Train's placement-group
    cleaner and Tune query the state API from worker processes by auto-detecting "the" local
    Ray, which fails with "Found multiple active Ray instances" while another runs. That lookup
    reads ``RAY_API_SERVER_ADDRESS`` first: it is set to the dashboard's address while Ray's own
    processes start (its workers inherit it from them), and only then, as it also overrides the
    address of every state-API call in the process that sets it.

    The dashboard takes Ray's usual port when it is free. Another job starting at the same moment
    can take that port between the check and the dashboard's bind, and Ray then fails to start;
    it is started again on a port the system picks."""
    import ray

    if _port_free(DASHBOARD_PORT):
        try:
            return _init_local(num_cpus, DASHBOARD_PORT)
        except Exception:  # noqa: BLE001 - Ray raises a bare Exception when its dashboard cannot start
            if _port_free(DASHBOARD_PORT):  # not the race: a failure of its own
                raise
            ray.shutdown()  # what had started, before starting again
    _init_local(num_cpus, _free_port())


def _init_local(num_cpus: int | None, port: int) -> None:
    """``ray.init`` of a new local Ray, its dashboard (and state API) on 127.0.0.1:``port``."""
    import ray

    previous = os.environ.get(_API_SERVER)
    os.environ[_API_SERVER] = f"http://127.0.0.1:{port}"
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            _node_ip_address="127.0.0.1",
        )
    finally:
        if previous is None:
            del os.environ[_API_SERVER]
        else:
            os.environ[_API_SERVER] = previous


_API_SERVER = "RAY_API_SERVER_ADDRESS"


DASHBOARD_PORT = 8265  # Ray's usual dashboard port, taken when free


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_failures(error: BaseException) -> list[BaseException]:
    """The exceptions of the workers behind a failed ``TorchTrainer.fit`` (Train V2's
    ``WorkerGroupError.worker_failures``), each unwrapped from Ray's task-error wrapper."""
    failures: dict[Any, BaseException] = getattr(error, "worker_failures", None) or {}
    out = []
    for failure in failures.values():
        cause = getattr(failure, "cause", None)  # RayTaskError keeps the original exception here
        out.append(cause if isinstance(cause, BaseException) else failure)
    return out


def worker_progress_bar(desc: str, total: int, unit: str) -> Any:
    """A progress bar for a Ray worker that the driver draws (``ray.experimental.tqdm_ray``).
    tqdm_ray sends its state as a line on stdout through ``print``, which Ray Train V2 replaces in
    its workers with a logger call that loses the line; this bar writes its state to the real
    stdout instead, as ``jobs.common.collectives.worker_log`` does."""
    import json
    import sys
    import time

    from ray.experimental import tqdm_ray

    class Bar(tqdm_ray.tqdm):
        def _dump_state(self, force_flush: bool = False) -> None:
            now = time.time()
            if not force_flush and now - self._last_flush_time < self._flush_interval_s:
                return
            self._last_flush_time = now
            stream = sys.__stdout__ or sys.stdout
            stream.write(json.dumps(self._get_state()) + "\n")
            stream.flush()

    return Bar(desc=desc, total=total, unit=unit)
