"""Private files stay private, whatever the umask: `imgbot run` started by hand (umask 022,
or a careless 000) makes state_dir 0700 and its database, login and keys 0600, and warns at
start about what it finds open to other users: state_dir, the database, a config file with
the password written into it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.cli.test_cli import IMGBOT, ROOT, write_config

UNREACHABLE = "http://127.0.0.1:1"  # the start gets as far as the login, then exits 1


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_with_umask(umask: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*IMGBOT, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        preexec_fn=lambda: os.umask(umask),
    )


def offline_config(tmp_path: Path, model: Path, state: Path, **matrix) -> Path:
    """A config whose homeserver does not answer: `run` prepares state_dir and opens the
    database, then stops at the login."""
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "matrix": {"homeserver_url": UNREACHABLE, "user_id": "@imgbot:localhost", **matrix},
                "state_dir": str(state),
                "generation": {"model": str(model), "size": "64x64", "steps": 2},
            }
        )
    )
    return path


def shared_warnings(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if "open to other users" in line or "readable by other users" in line
    ]


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_new_state_dir_and_database_are_private(tmp_path, test_model, umask):
    state = tmp_path / "state"
    config = offline_config(tmp_path, test_model, state, password="not used")
    config.chmod(0o600)
    result = run_with_umask(umask, "run", "-c", str(config))
    assert result.returncode == 1, result.stderr  # could not reach the homeserver
    assert mode(state) == 0o700
    assert mode(state / "imgbot.sqlite3") == 0o600
    assert shared_warnings(result.stderr) == []


def test_the_start_warns_about_a_state_dir_and_database_others_can_read(tmp_path, test_model):
    state = tmp_path / "state"
    config = offline_config(tmp_path, test_model, state, password="not used")
    config.chmod(0o600)
    assert run_with_umask(0o022, "run", "-c", str(config)).returncode == 1
    # As an older imgbot (or a hand-made folder) left them:
    state.chmod(0o755)
    (state / "imgbot.sqlite3").chmod(0o644)

    result = run_with_umask(0o022, "run", "-c", str(config))
    warnings = shared_warnings(result.stderr)
    assert any(
        "WARNING" in w
        and str(state) in w
        and "(mode 0755)" in w
        and f"run `chmod 700 {state}`" in w
        for w in warnings
    ), result.stderr
    database = state / "imgbot.sqlite3"
    assert any(
        "WARNING" in w
        and str(database) in w
        and "prompts" in w
        and "(mode 0644)" in w
        and f"run `chmod 600 {database}`" in w
        for w in warnings
    ), result.stderr
    # Warned about, not changed: the operator may have opened them on purpose.
    assert mode(state) == 0o755 and mode(database) == 0o644


@pytest.mark.parametrize("key", ["password", "access_token"])
def test_a_config_holding_a_secret_that_others_can_read_is_warned_about(tmp_path, test_model, key):
    config = offline_config(tmp_path, test_model, tmp_path / "state", **{key: "s3cret-value"})
    config.chmod(0o644)
    result = run_with_umask(0o022, "run", "-c", str(config))
    warnings = shared_warnings(result.stderr)
    assert any(
        f"config file {config} holds matrix.{key}" in w
        and "(mode 0644)" in w
        and f"run `chmod 600 {config}`" in w
        and f"matrix.{key}_file" in w
        for w in warnings
    ), result.stderr
    assert "s3cret-value" not in result.stderr + result.stdout

    config.chmod(0o600)
    result = run_with_umask(0o022, "run", "-c", str(config))
    assert not [w for w in shared_warnings(result.stderr) if "config file" in w]


def test_a_config_without_a_secret_in_it_may_be_readable(tmp_path, test_model):
    secret = tmp_path / "password"
    secret.write_text("s3cret-value\n")
    secret.chmod(0o600)
    config = offline_config(tmp_path, test_model, tmp_path / "state", password_file=str(secret))
    config.chmod(0o644)
    result = run_with_umask(0o022, "run", "-c", str(config))
    assert result.returncode == 1, result.stderr
    assert shared_warnings(result.stderr) == []


@pytest.mark.synapse
@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_running_bot_keeps_its_login_keys_and_database_private(
    homeserver, test_model, tmp_path, umask
):
    """With encryption and cross-signing on (the defaults): every file the first start
    writes, looked at while the bot runs (the -wal and -shm files exist only then)."""
    state = tmp_path / "state"
    config = write_config(tmp_path / "config.yaml", homeserver, test_model, state)
    config.chmod(0o600)
    log = tmp_path / "bot.log"
    with log.open("wb") as out:
        bot = subprocess.Popen(
            [*IMGBOT, "run", "-c", str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.umask(umask),
        )
    try:
        deadline = time.monotonic() + 240  # only so that a broken start cannot hang the suite
        while "imgbot is running" not in log.read_text():
            assert bot.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        crypto = state / "crypto"
        stores = sorted(crypto.iterdir())
        assert any(path.suffix == ".db" for path in stores), stores
        modes = {
            path.relative_to(tmp_path).as_posix(): f"{mode(path):o}"
            for path in [
                state,
                crypto,
                *stores,
                state / "credentials.json",
                state / "cross-signing.json",
                state / "imgbot.sqlite3",
                state / "imgbot.sqlite3-wal",
                state / "imgbot.sqlite3-shm",
            ]
        }
    finally:
        bot.send_signal(signal.SIGTERM)
        code = bot.wait(90)
    folders = {"state", "state/crypto"}
    assert modes == {name: "700" if name in folders else "600" for name in modes}
    assert code == 0, log.read_text()
    assert shared_warnings(log.read_text()) == []
