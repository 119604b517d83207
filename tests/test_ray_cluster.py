"""The Ray connection every training job uses."""

from __future__ import annotations

import warnings

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
