"""The Ray connection every training job uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import ray

from jobs.common.ray_cluster import connect, ray_address, same_cluster


def test_address_from_config_then_environment(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address({"address": None}) is None
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert ray_address({"address": None}) == "auto"
    assert ray_address({"address": "ray://head:10001"}) == "ray://head:10001"


def test_in_process_ray(ray_local):
    resources = ray.cluster_resources()
    assert resources["CPU"] == 2
    assert ray.get(ray.remote(lambda x: x + 1).remote(1)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert connect({"address": None, "num_cpus": 4})["CPU"] == 2  # a second call reuses it
        gcs = ray.get_runtime_context().gcs_address
        assert connect({"address": gcs})["CPU"] == 2  # the same cluster named again: quietly reused
    with pytest.warns(UserWarning, match="ray.address=10.1.2.3:6379 is not used"):
        assert connect({"address": "10.1.2.3:6379"})["CPU"] == 2


def test_same_cluster():
    assert same_cluster("127.0.0.1:6379", "192.0.2.2:6379")  # Ray reports loopback as the machine's address
    assert same_cluster("10.0.0.5:6379", "10.0.0.5:6379")
    assert not same_cluster("10.0.0.5:6379", "10.0.0.6:6379")
    assert not same_cluster("127.0.0.1:6380", "192.0.2.2:6379")
    assert same_cluster("auto", "10.0.0.5:6379") and same_cluster("ray://head:10001", "10.0.0.5:6379")


RACE = """
import json, socket, sys
import ray
from jobs.common import ray_private

taken = socket.socket()  # another job's dashboard, bound between the check and Ray's own bind
taken.bind(("127.0.0.1", 0))
taken.listen()
ray_private.DASHBOARD_PORT = taken.getsockname()[1]
checks = iter([True])  # the first check finds the port free: the race
real = ray_private._port_free
ray_private._port_free = lambda port: next(checks, None) or real(port)
before = ray._private.services.find_gcs_addresses()  # the Rays on this machine (the tests' own)
ray_private.init_local(1)
from ray.util.state import list_nodes
url = ray._private.worker.global_worker.node.webui_url
print(json.dumps({"taken": ray_private.DASHBOARD_PORT, "url": url, "nodes": len(list_nodes(address=f"http://{url}")),
                  "new": len(ray._private.services.find_gcs_addresses() - before),
                  "two": ray.get(ray.remote(lambda: 2).remote())}))
ray.shutdown()
"""


def test_a_dashboard_port_taken_while_ray_starts_moves_the_dashboard(tmp_path):
    """Two jobs starting at once both find Ray's usual dashboard port free; the later one's Ray
    starts again with its dashboard (and state API) on another port."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", RACE],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root), "RAY_ADDRESS": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    host, port = answer["url"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) != answer["taken"], answer
    assert answer["nodes"] == 1 and answer["two"] == 2
    assert answer["new"] == 1  # nothing left of the Ray that failed to start
