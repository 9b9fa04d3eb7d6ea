"""The `ray start` lines imgbot documents (the two Ray units, README's commands to start a
head and a GPU host by hand), read by the installed Ray's own option parser: a misspelt or
vanished flag fails here rather than on an operator's node."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ray_scripts = pytest.importorskip("ray.scripts.scripts")

REPO = Path(__file__).resolve().parent.parent
# The manual's page "More than one GPU server".
README = (REPO / "docs" / "cluster.md").read_text()
# What /etc/imgbot/ray.env gives the units (docs/cluster.md).
RAY_ENV = {
    "IMGBOT_RAY_HEAD": "10.0.0.5:6379",
    "IMGBOT_RAY_IP": "10.0.0.6",
    "IMGBOT_RAY_GPUS": "2",
    "IMGBOT_RAY_WORKERS": "2",
}


def parse(args: list[str]) -> dict:
    """The parameters `ray start` would run with; click's UsageError on a bad flag."""
    with ray_scripts.start.make_context("start", args) as context:
        return context.params


def exec_start(unit: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", (REPO / "systemd" / unit).read_text())
    [line] = re.findall(r"(?m)^ExecStart=(.*)$", text)
    line = re.sub(r"\$\{(\w+)\}", lambda m: RAY_ENV[m[1]], line)
    words = shlex.split(line)
    assert words[:2] == ["/opt/imgbot/venv/bin/ray", "start"], words
    return words[2:]


def by_hand() -> list[list[str]]:
    """The `ray start` commands of README's "the ray by hand" block, without the
    environment assignments before them."""
    after = README.split("<!-- the ray by hand -->", 1)[1]
    body = after.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in body.splitlines():
        words = shlex.split(line, comments=True)
        if "start" in words:
            at = words.index("start")
            assert words[at - 1].endswith("/ray"), line
            environment = dict(word.split("=", 1) for word in words[: at - 1])
            assert environment == {
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": "$HOME/ray-token",
                "RAY_USAGE_STATS_ENABLED": "0",
            }, line
            commands.append(words[at + 1 :])
    return commands


def test_the_worker_unit_joins_the_head():
    params = parse(exec_start("imgbot-ray-worker.service"))
    assert params["address"] == "10.0.0.5:6379" and not params["head"]
    assert params["node_ip_address"] == "10.0.0.6" and params["num_gpus"] == 2
    assert json.loads(params["resources"]) == {"imgbot_worker": 2}
    assert params["block"] and params["disable_usage_stats"]


def test_the_head_unit_starts_a_head():
    params = parse(exec_start("imgbot-ray-head.service"))
    assert params["head"] and params["port"] == 6379
    assert params["include_dashboard"] is False
    assert params["num_cpus"] == 0 and params["num_gpus"] == 0  # nothing runs beside the bot
    assert params["block"] and params["disable_usage_stats"]


def test_the_readme_starts_a_head_and_a_gpu_host_by_hand():
    head, worker = (parse(args) for args in by_hand())
    assert head["head"] and head["port"] == 6379 and head["node_ip_address"] == "10.0.0.5"
    assert head["include_dashboard"] is False and head["disable_usage_stats"]
    assert worker["address"] == "10.0.0.5:6379" and worker["node_ip_address"] == "10.0.0.6"
    assert worker["disable_usage_stats"] and not worker["head"]
    assert head["num_cpus"] == 0 and head["num_gpus"] == 0
    assert json.loads(worker["resources"]) == {"imgbot_worker": 2}
