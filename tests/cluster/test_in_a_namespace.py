"""Runs the cluster tests (a real two-node Ray cluster, the real Synapse, the tiny model)
inside a network namespace that has only loopback, where Ray binds to 127.0.0.1 and can
reach nothing else. Needs root (as CI and this project's machines run) and unshare."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import INSIDE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.mark.skipif(INSIDE, reason="this is the namespace already")
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a network namespace needs root and unshare",
)
def test_the_cluster_tests_pass_in_a_loopback_only_namespace():
    inner = (
        f"ip link set lo up && IMGBOT_LOOPBACK_ONLY=1 {sys.executable} -m pytest "
        f"-q -p no:cacheprovider -x {HERE}"
    )
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", inner],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
