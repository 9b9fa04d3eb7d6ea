"""backend ray with a bridge the bot spawns (no generation.ray.bridge_socket): the bridge
runs as the bot's user, so what the cluster sends it can read the bot's state. `imgbot
check` says so in a WARN line and `imgbot run` logs it at the start; with the bridge
socket (the bridge as imgbot-ray) both are quiet."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from bot.cluster import connect
from generation.errors import ClusterUnavailable
from bot.config import Settings
from bot.ops.check import run_checks

WORDS = (
    "the bridge runs as the bot's user: what the cluster sends is handled by a process "
    "that can read the bot's state; for production use generation.ray.bridge_socket "
    "with systemd/imgbot-bridge.socket"
)


def _sections(tmp_path: Path, bridge_socket: str | None) -> dict:
    # Nothing answers at the cluster's address or the homeserver's: the lines come at once.
    return {
        "matrix": {"homeserver_url": "http://127.0.0.1:1", "user_id": "@imgbot:corp.example"},
        "generation": {
            "backend": "ray",
            "ray": {
                "address": "127.0.0.1:1",
                "allow_unauthenticated": True,
                "bridge_socket": bridge_socket,
            },
        },
        "state_dir": str(tmp_path / "state"),
    }


def _check(tmp_path: Path, bridge_socket: str | None) -> list[str]:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_sections(tmp_path, bridge_socket)))
    lines: list[str] = []
    run_checks(config, say=lines.append)
    return lines


def test_check_warns_when_the_bot_spawns_its_bridge(tmp_path):
    (line,) = [line for line in _check(tmp_path, None) if line.split()[1] == "bridge:"]
    assert line == f"WARN  bridge: {WORDS}"


def test_check_is_quiet_about_the_bridge_with_the_bridge_socket(tmp_path):
    lines = _check(tmp_path, str(tmp_path / "bridge.sock"))
    assert not [line for line in lines if line.split()[1] == "bridge:"]


@pytest.mark.parametrize("bridge_socket", [None, "/run/imgbot-bridge/bridge.sock"])
def test_the_start_warns_once_when_the_bot_spawns_its_bridge(
    tmp_path, caplog, test_model, bridge_socket
):
    sections = _sections(tmp_path, bridge_socket)
    sections["generation"]["model"] = str(test_model)
    caplog.set_level(logging.WARNING)
    with pytest.raises(ClusterUnavailable, match="nothing answers"):  # no cluster here
        connect(Settings(**sections), timeout=5)
    assert caplog.text.count(WORDS) == (1 if bridge_socket is None else 0)
