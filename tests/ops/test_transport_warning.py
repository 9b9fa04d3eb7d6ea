"""Plain http to a homeserver on another machine sends the bot's password, token and every
message across the network in the clear: `imgbot run` and `imgbot check` say so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from nio import AsyncClient

from bot.config import MatrixSettings
from bot.matrix.session import LoginFailed, log_in
from bot.ops.check import run_checks

ELSEWHERE = [
    "http://matrix.invalid",
    "http://192.0.2.7:8008",
    "http://[2001:db8::1]:8008",
    "http://localhost.evil.invalid",
]
HERE = [
    "https://matrix.invalid",
    "http://127.0.0.1:1",
    "http://127.1.2.3:8008",
    "http://localhost:1",
    "http://[::1]:1",
]


async def start_log(url: str, tmp_path: Path, caplog) -> str:
    """What the bot's start logs before its login, which fails here (no secret is set)."""
    settings = MatrixSettings(homeserver_url=url, user_id="@imgbot:corp.example")
    client = AsyncClient(settings.homeserver_url, settings.user_id)
    caplog.set_level(logging.WARNING)
    try:
        with pytest.raises(LoginFailed):
            await log_in(client, settings, tmp_path)
    finally:
        await client.close()
    return caplog.text


@pytest.mark.parametrize("url", ELSEWHERE)
async def test_the_start_warns_of_plain_http_to_another_machine(url, tmp_path, caplog):
    said = await start_log(url, tmp_path, caplog)
    assert "matrix.homeserver_url is plain http to" in said and "use https://" in said


@pytest.mark.parametrize("url", HERE)
async def test_the_start_is_quiet_about_https_and_loopback(url, tmp_path, caplog):
    assert "plain http" not in await start_log(url, tmp_path, caplog)


def check_lines(url: str, tmp_path: Path) -> list[str]:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "matrix": {"homeserver_url": url, "user_id": "@imgbot:corp.example"},
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    lines: list[str] = []
    run_checks(config, say=lines.append)
    return lines


def test_check_warns_of_plain_http_to_another_machine(tmp_path):
    lines = check_lines("http://matrix.invalid:8008", tmp_path)
    (line,) = [line for line in lines if line.split()[1] == "transport:"]
    assert line.startswith(
        "WARN  transport: matrix.homeserver_url is plain http to "
        "matrix.invalid, which is not this machine"
    )


def test_check_says_nothing_of_loopback(tmp_path):
    lines = check_lines("http://127.0.0.1:1", tmp_path)
    assert not [line for line in lines if "transport" in line or "plain http" in line]
