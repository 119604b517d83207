"""The Ray connection every training job uses."""

from __future__ import annotations

import ray

from jobs.common.ray_cluster import connect, ray_address


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
    assert connect({"address": "ray://nowhere:1", "num_cpus": 4})["CPU"] == 2  # a second call reuses it
