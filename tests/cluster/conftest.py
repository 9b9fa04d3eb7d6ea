"""The cluster tests run inside a network namespace that has only loopback (Ray binds to
every interface and probes an outside address to find its own): test_in_a_namespace.py
starts this folder's tests again there, as root, with IMGBOT_LOOPBACK_ONLY=1. Outside it,
the other tests here are skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cluster.raycluster import RayCluster

INSIDE = os.environ.get("IMGBOT_LOOPBACK_ONLY") == "1"


def pytest_collection_modifyitems(config, items):
    if INSIDE:
        return
    skip = pytest.mark.skip(
        reason="runs inside the loopback-only namespace (tests/cluster/test_in_a_namespace.py)"
    )
    for item in items:
        if "tests/cluster/" in str(item.fspath) and "test_in_a_namespace" not in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def ray_cluster(tmp_path):
    cluster = RayCluster(tmp_path / "ray")
    yield cluster
    cluster.stop()


@pytest.fixture
def make_cluster_settings(make_settings, tmp_path):
    """Settings of a bot whose workers are on `cluster` (one worker per node: each node
    has one imgbot_worker), each limited to one thread."""

    def make(cluster: RayCluster, workers: int = 2, token_file: Path | None = None, **sections):
        generation = sections.pop("generation", {})
        ray = {
            "address": cluster.address,
            "workers": workers,
            "resources": {"imgbot_worker": 1, "CPU": 1},
            "token_file": str(token_file or cluster.token_file),
            **generation.pop("ray", {}),
        }
        return make_settings(generation={"backend": "ray", "ray": ray, **generation}, **sections)

    return make
