"""`imgbot check` (`bot/check.py`) against the real test homeserver and the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bot.ops.check import run_checks
from bot.cli import main
from bot.local.localserver import _free_port
from tests.conftest import ALLOWED, PASSWORD

pytestmark = pytest.mark.synapse

ROOT = Path(__file__).resolve().parents[2]
BOT = "@imgbot:localhost"


def write_config(tmp_path: Path, homeserver, model: Path, **sections) -> Path:
    """A config for the bot on the test homeserver; `sections` override keys per section."""
    data = {
        "matrix": {
            "homeserver_url": homeserver.url,
            "user_id": BOT,
            "password": PASSWORD,
            "allowed_users": ALLOWED,
            **sections.pop("matrix", {}),
        },
        "state_dir": str(tmp_path / "state"),
        "generation": {
            "model": str(model),
            "size": "64x64",
            "steps": 2,
            "device": "cpu",
            **sections.pop("generation", {}),
        },
        **sections,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def check(config: Path, load: bool = False) -> tuple[int, dict[str, str]]:
    """Run the checks; the exit code and each line's status by check name."""
    lines: list[str] = []
    code = run_checks(config, load=load, say=lines.append)
    statuses = {}
    for line in lines:
        status, rest = line.split(None, 1)
        statuses[rest.split(":", 1)[0]] = status
    return code, {"_text": "\n".join(lines), **statuses}


def devices(homeserver, token: str) -> list[str]:
    request = urllib.request.Request(
        homeserver.url + "/_matrix/client/v3/devices", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return sorted(d["device_id"] for d in json.loads(response.read())["devices"])


def log_out(homeserver, token: str) -> None:
    request = urllib.request.Request(
        homeserver.url + "/_matrix/client/v3/logout",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def bot_session(homeserver):
    """A login of the bot's account, as a running bot has; logged out afterwards."""
    session = homeserver.login("imgbot", PASSWORD)
    yield session
    log_out(homeserver, session["access_token"])


def test_all_good_exits_0_and_leaves_no_device(homeserver, test_model, tmp_path, bot_session):
    config = write_config(tmp_path, homeserver, test_model)
    before = devices(homeserver, bot_session["access_token"])

    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check", "-c", str(config), "--load"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    # A Ray node of this user elsewhere on the machine (cluster tests running beside) is
    # rightly warned about, and said apart (test_a_ray_node_of_the_bots_user_is_warned…).
    lines = [line for line in result.stdout.splitlines() if not line.startswith("WARN  ray user: ")]
    names = [line.split(None, 1)[1].split(":", 1)[0] for line in lines]
    assert names == [
        "config",
        "model tiny-sd",
        "load",
        "homeserver",
        "login",
        "state_dir",
        "disk",
        "encryption",
        "compliance",
    ]
    assert "ok    compliance: XMP marker" in lines
    assert all(line.startswith("ok    ") for line in lines), result.stdout
    assert f"ok    config: {config}" in lines
    assert "logged out again" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    # Nothing is left behind: the missing state_dir is not made, only said to be made later.
    assert not (tmp_path / "state").exists()
    assert "does not exist yet; the bot's first start makes it (mode 700)" in result.stdout
    # The password login of the check was logged out: its device is gone again.
    assert devices(homeserver, bot_session["access_token"]) == before


def test_uses_the_saved_login_of_a_running_bot(homeserver, test_model, tmp_path, bot_session):
    state = tmp_path / "state"
    state.mkdir()
    (state / "credentials.json").write_text(
        json.dumps(
            {
                "homeserver": homeserver.url,
                "user_id": BOT,
                "device_id": bot_session["device_id"],
                "access_token": bot_session["access_token"],
            }
        )
    )
    before = devices(homeserver, bot_session["access_token"])

    code, lines = check(write_config(tmp_path, homeserver, test_model))

    assert code == 0, lines["_text"]
    assert f"device {bot_session['device_id']}, with the login saved in" in lines["_text"]
    assert bot_session["access_token"] not in lines["_text"]
    assert devices(homeserver, bot_session["access_token"]) == before


def test_a_refused_saved_token_without_password_fails(homeserver, test_model, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "credentials.json").write_text(
        json.dumps(
            {
                "homeserver": homeserver.url,
                "user_id": BOT,
                "device_id": "GONE",
                "access_token": "syt_not_a_token",
            }
        )
    )
    config = write_config(
        tmp_path,
        homeserver,
        test_model,
        matrix={"password": None, "access_token": "syt_also_not_a_token"},
    )

    code, lines = check(config)

    assert code == 1
    assert lines["login"] == "FAIL"
    assert "was refused" in lines["_text"] and "no password is configured" in lines["_text"]
    assert "syt_" not in lines["_text"]


def test_an_access_token_of_someone_else_fails(homeserver, test_model, tmp_path):
    alice = homeserver.login("alice", PASSWORD)
    try:
        config = write_config(
            tmp_path,
            homeserver,
            test_model,
            matrix={"password": None, "access_token": alice["access_token"]},
        )
        code, lines = check(config)
    finally:
        log_out(homeserver, alice["access_token"])

    assert code == 1
    assert lines["login"] == "FAIL"
    assert f"belongs to @alice:localhost, not matrix.user_id {BOT}" in lines["_text"]
    assert alice["access_token"] not in lines["_text"]


def test_a_wrong_config_value_names_the_key(homeserver, test_model, tmp_path, capsys):
    config = write_config(
        tmp_path, homeserver, test_model, matrix={"homeserver_url": "matrix.example.org"}
    )

    assert main(["check", "-c", str(config)]) == 2

    out = capsys.readouterr().out
    assert out.startswith("FAIL  config: invalid configuration in")
    assert "matrix.homeserver_url: 'matrix.example.org' is not an http(s) URL" in out
    for name in ("model", "homeserver", "login", "state_dir", "disk", "encryption", "compliance"):
        assert f"skip  {name}: needs a valid config" in out
    assert PASSWORD not in out


def test_a_missing_model_folder_is_named(homeserver, test_model, tmp_path):
    missing = tmp_path / "models" / "sdxl-turbo"
    config = write_config(tmp_path, homeserver, test_model, generation={"model": str(missing)})

    code, lines = check(config, load=True)

    assert code == 1
    assert lines["model sdxl-turbo"] == "FAIL"
    assert f"generation.model: {missing} is not a folder" in lines["_text"]
    assert lines["load"] == "skip"
    # The checks that do not need the model still run.
    assert lines["homeserver"] == lines["login"] == lines["state_dir"] == "ok"


def test_an_unreachable_homeserver(homeserver, test_model, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    config = write_config(tmp_path, homeserver, test_model, matrix={"homeserver_url": url})

    code, lines = check(config)

    assert code == 1
    assert f"FAIL  homeserver: cannot reach {url} (ClientConnectorError" in lines["_text"]
    assert "skip  login: needs a reachable homeserver" in lines["_text"]
    assert lines["state_dir"] == "ok"


def test_a_wrong_password(homeserver, test_model, tmp_path, bot_session):
    config = write_config(tmp_path, homeserver, test_model, matrix={"password": "not the password"})
    before = devices(homeserver, bot_session["access_token"])

    code, lines = check(config)

    assert code == 1
    assert lines["login"] == "FAIL"
    assert f"login as {BOT} with matrix.password failed" in lines["_text"]
    assert "not the password" not in lines["_text"]
    assert devices(homeserver, bot_session["access_token"]) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_state_dir(homeserver, test_model, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o500)
    try:
        code, lines = check(write_config(tmp_path, homeserver, test_model))
    finally:
        state.chmod(0o700)

    assert code == 1
    assert (
        f"FAIL  state_dir: cannot write in {state.resolve()}: Permission denied" in lines["_text"]
    )


def test_a_state_dir_that_cannot_be_made(homeserver, test_model, tmp_path):
    # Under a plain file: no folder can be made there, not even by root.
    (tmp_path / "taken").write_text("")
    state = tmp_path / "taken" / "state"
    config = write_config(tmp_path, homeserver, test_model, state_dir=str(state))

    code, lines = check(config)

    assert code == 1
    assert (
        f"FAIL  state_dir: {state.resolve()} cannot be made: "
        f"{(tmp_path / 'taken').resolve()} is a file, not a folder" in lines["_text"]
    )


def test_compliance_is_loaded_as_the_start_loads_it(homeserver, test_model, tmp_path):
    from tests.helpers.pki import make_ca
    from tests.generation.compliance.test_compliance_copy import scene
    from tests.helpers.tsa import TimeStampAuthority

    ca = make_ca(tmp_path / "ca")
    references = tmp_path / "references"
    references.mkdir()
    scene(1).save(references / "ref-1.png")
    with TimeStampAuthority() as tsa:
        compliance = {
            "c2pa": {"cert": str(ca["cert"]), "key": str(ca["key"]), "tsa_url": tsa.url},
            "references": str(references),
            "blocklist": {"words": ["banknote"]},
        }
        config = write_config(tmp_path, homeserver, test_model, compliance=compliance)
        code, lines = check(config)
        assert code == 0 and lines["compliance"] == "ok", lines["_text"]
        assert (
            f"compliance: XMP marker, C2PA signed, time-stamped by {tsa.url}, copy check "
            "against 1 of 1 reference picture, prompt blocklist"
        ) in lines["_text"]
        assert tsa.requests == 1  # the trial signature
        tsa.status = 2  # the authority refuses: the bot would not start
        code, lines = check(config)
    assert code == 1 and lines["compliance"] == "FAIL"
    assert "c2pa.tsa_url" in lines["_text"]


def test_a_ray_node_of_the_bots_user_is_warned_about_not_failed(homeserver, test_model, tmp_path):
    # A process of this user (the bot's: check runs as the bot's user) named as Ray's raylet.
    raylet = subprocess.Popen(["raylet", "60"], executable=shutil.which("sleep"))
    try:
        while not Path(f"/proc/{raylet.pid}/cmdline").read_bytes().startswith(b"raylet"):
            time.sleep(0.01)  # until the exec
        code, lines = check(write_config(tmp_path, homeserver, test_model))
    finally:
        raylet.kill()
        raylet.wait()

    assert code == 0, lines["_text"]  # a warning, not a failure
    assert lines["ray user"] == "WARN"
    assert f"{raylet.pid} (raylet)" in lines["_text"]
    assert "Run Ray as a user of its own, imgbot-ray" in lines["_text"]
