"""`imgbot check` and `imgbot run` agree on every config, and check answers promptly: each
part the start loads gets the same verdict from both, a rate-limited login fails the check
at once (and is waited out, said at INFO, by the start), and nio's schema noise stays out."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from bot.local.localserver import LocalHomeserver
from bot.matrix.session import log_in
from generation.testing.tiny import make_test_model, make_test_tiny_decoder
from generation.testing.upscaler import make_test_upscaler
from tests.cli.test_cli import IMGBOT, ROOT, imgbot
from tests.conftest import ALLOWED, PASSWORD

pytestmark = pytest.mark.synapse

BOT = "@imgbot:localhost"


def config_file(tmp_path: Path, url: str, model: Path, **generation) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "matrix": {
                    "homeserver_url": url,
                    "user_id": BOT,
                    "password": PASSWORD,
                    "allowed_users": ALLOWED,
                    "encryption": False,
                },
                "state_dir": str(tmp_path / "state"),
                "generation": {
                    "model": str(model),
                    "size": "64x64",
                    "steps": 2,
                    "device": "cpu",
                    "warm_up": False,
                    **{
                        key: str(value) if isinstance(value, Path) else value
                        for key, value in generation.items()
                    },
                },
            }
        )
    )
    return path


def fail_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("FAIL")]


def broken(tmp_path: Path, what: str, model: Path) -> tuple[dict, str, str]:
    """A config's generation keys with one part broken: (keys, its check name, the
    words both commands must say)."""
    if what == "default model that only edits":  # built only for its own case
        editing = make_test_model(tmp_path / "qwen-edit", "qwenimage-edit")
        return (
            {"model": editing},
            "model qwen-edit",
            f"generation.model: {editing} is a Qwen-Image-Edit model, which only edits "
            "pictures: name it in generation.models and set generation.edit_model to it",
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_model = tmp_path / "notes.pth"
    not_a_model.write_text("not a model")
    transformer_lora = tmp_path / "flux-style.safetensors"
    save_file(
        {"transformer.blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 32)}, transformer_lora
    )
    return {
        "upscaler missing": (
            {"upscaler": tmp_path / "missing.pth"},
            "upscaler",
            f"generation.upscaler: {tmp_path / 'missing.pth'} is not a file",
        ),
        "upscaler unreadable": (
            {"upscaler": not_a_model},
            "upscaler",
            f"generation.upscaler: {not_a_model} is not a model spandrel can load",
        ),
        "vae": (
            {"vae": empty},
            "vae",
            f"generation.vae: the VAE folder {empty} has no config.json",
        ),
        "fast_decoder": (
            {"fast_decoder": tmp_path / "taesd"},
            "fast_decoder",
            "generation.fast_decoder: the fast decoder folder "
            f"{tmp_path / 'taesd'} has no config.json",
        ),
        "another model": (
            {"models": {"other": str(empty)}},
            "model other",
            f"generation.models.other: {empty} has no model_index.json",
        ),
        "lora for another family": (
            {"loras": {"brand": str(transformer_lora)}},
            "lora brand",
            f"generation.loras.brand: {transformer_lora} is a LoRA "
            "for a transformer model, not for",
        ),
        # Where `auto` takes the CPU: the start's choice of device, checked before loading.
        "fp8 on auto": (
            {"quantize": "fp8", "device": "auto"},
            "quantize",
            "generation.quantize: fp8 needs an NVIDIA GPU of compute capability "
            "8.9 or newer (L4, L40S, RTX 4090, H100), and this is cpu",
        ),
        "edit model": (
            {"edit_model": model.name},
            "edit model",
            f"generation.edit_model: {model.name} is a SD 1.x/2.x model, which "
            "cannot edit pictures by instruction",
        ),
    }[what]


@pytest.mark.parametrize(
    "what",
    [
        "upscaler missing",
        "upscaler unreadable",
        "vae",
        "fast_decoder",
        "another model",
        "edit model",
        "lora for another family",
        "default model that only edits",
        pytest.param(
            "fp8 on auto",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="auto takes a GPU"),
        ),
    ],
)
def test_check_fails_each_part_that_run_refuses(homeserver, test_model, tmp_path, what):
    keys, name, words = broken(tmp_path, what, test_model)
    config = config_file(tmp_path, homeserver.url, keys.pop("model", test_model), **keys)

    checked = imgbot("check", "-c", str(config))
    assert checked.returncode == 1, checked.stdout
    (line,) = fail_lines(checked.stdout)
    assert line.startswith(f"FAIL  {name}: {words}"), checked.stdout

    ran = imgbot("run", "-c", str(config), timeout=120)
    assert ran.returncode == 2, ran.stderr
    assert words in ran.stderr
    # The same sentence, word for word, from both.
    assert line.split(": ", 1)[1] in ran.stderr
    assert (
        not (tmp_path / "state").exists() or not (tmp_path / "state" / "credentials.json").exists()
    )  # refused before the login


async def test_check_passes_every_part_that_run_takes(homeserver, test_model, tmp_path):
    upscaler = make_test_upscaler(tmp_path / "up.safetensors")
    decoder = make_test_tiny_decoder(tmp_path / "taesd")
    config = config_file(
        tmp_path,
        homeserver.url,
        test_model,
        upscaler=upscaler,
        vae=test_model / "vae",
        fast_decoder=decoder,
    )

    checked = imgbot("check", "-c", str(config))
    assert checked.returncode == 0, checked.stdout
    lines = checked.stdout.splitlines()
    for name in ("upscaler", "vae", "fast_decoder"):
        assert any(line.startswith(f"ok    {name}: ") for line in lines), checked.stdout
    assert not (tmp_path / "state").exists(), "check made state_dir"

    log = tmp_path / "run.log"
    bot = await asyncio.create_subprocess_exec(
        *IMGBOT, "run", "-c", str(config), cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    try:
        for _ in range(600):
            if "imgbot is running" in log.read_text() or bot.returncode is not None:
                break
            await asyncio.sleep(0.2)
        assert "imgbot is running" in log.read_text(), log.read_text()
    finally:
        if bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(bot.wait(), 60)
    assert code == 0, log.read_text()


def spend_the_login_limit(server: LocalHomeserver) -> None:
    """Synapse's default login limit (a burst of 5 per address, then one per 5 minutes),
    spent by logins of our own, as a few checks in a row spend it."""
    body = json.dumps(
        {
            "type": "m.login.password",
            "password": PASSWORD,
            "identifier": {"type": "m.id.user", "user": "imgbot"},
        }
    ).encode()
    for _ in range(5):
        request = urllib.request.Request(
            server.url + "/_matrix/client/v3/login",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def strict(tmp_path):
    with LocalHomeserver(tmp_path / "strict", rate_limits=True) as server:
        server.register("imgbot", PASSWORD)
        spend_the_login_limit(server)
        yield server


def test_a_rate_limited_login_fails_the_check_at_once(strict, test_model, tmp_path):
    config = config_file(tmp_path, strict.url, test_model)
    checked = imgbot("check", "-c", str(config), timeout=60)
    output = checked.stdout + checked.stderr
    assert checked.returncode == 1, output
    (line,) = fail_lines(checked.stdout)
    assert line.startswith("FAIL  login: rate-limited by the homeserver, try again in "), output
    seconds = int(line.split("try again in ", 1)[1].split(" s", 1)[0])
    assert seconds > 0
    assert "Got 429" not in output and "Error validating response" not in output


async def test_the_start_waits_a_rate_limit_out_and_says_so(
    strict, make_settings, tmp_path, caplog
):
    settings = make_settings(matrix={"homeserver_url": strict.url, "encryption": False})
    from nio import AsyncClient

    client = AsyncClient(strict.url, BOT)
    caplog.set_level(logging.INFO, logger="bot.matrix.session")
    login = asyncio.ensure_future(log_in(client, settings.matrix, settings.state_dir))
    try:
        for _ in range(100):
            if any("rate-limits logins" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.1)
        waiting = [r for r in caplog.records if "rate-limits logins" in r.getMessage()]
        assert waiting and waiting[0].levelno == logging.INFO
        assert "logging in again in" in waiting[0].getMessage()
        assert not login.done(), "the start gave up instead of waiting"
    finally:
        login.cancel()
        await asyncio.gather(login, return_exceptions=True)
        await client.close()


async def test_a_sigterm_stops_a_start_that_waits_out_a_rate_limit(strict, test_model, tmp_path):
    config = config_file(tmp_path, strict.url, test_model)
    log = tmp_path / "run.log"
    bot = await asyncio.create_subprocess_exec(
        *IMGBOT, "run", "-c", str(config), cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    try:
        for _ in range(300):
            if "rate-limits logins" in log.read_text() or bot.returncode is not None:
                break
            await asyncio.sleep(0.2)
        assert "rate-limits logins: logging in again in" in log.read_text(), log.read_text()
        bot.send_signal(signal.SIGTERM)
        # The limit's wait is minutes long (Synapse: about 5 after 5 logins); the stop is not.
        code = await asyncio.wait_for(bot.wait(), 60)
    finally:
        if bot.returncode is None:
            bot.kill()
            await bot.wait()
    assert code == 0, log.read_text()
    assert "stopped while logging in" in log.read_text()


def test_a_wrong_password_is_said_once_in_imgbots_words(homeserver, test_model, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("not the password")
    secret.chmod(0o600)
    config = config_file(tmp_path, homeserver.url, test_model)
    data = yaml.safe_load(config.read_text())
    del data["matrix"]["password"]
    data["matrix"]["password_file"] = str(secret)
    config.write_text(yaml.safe_dump(data))

    checked = imgbot("check", "-c", str(config))
    assert checked.returncode == 1
    assert (
        "FAIL  login: login as @imgbot:localhost with matrix.password_file failed" in checked.stdout
    )
    ran = imgbot("run", "-c", str(config), timeout=120)
    assert ran.returncode == 2
    assert "with matrix.password_file failed" in ran.stderr
    for output in (checked.stdout + checked.stderr, ran.stderr):
        assert "Error validating response" not in output
        assert "not the password" not in output


def test_an_https_url_on_a_plain_http_port_is_pointed_out(homeserver, test_model, tmp_path):
    https = homeserver.url.replace("http://", "https://")
    config = config_file(tmp_path, https, test_model)
    checked = imgbot("check", "-c", str(config))
    assert checked.returncode == 1
    (line,) = fail_lines(checked.stdout)
    assert line.startswith(f"FAIL  homeserver: cannot reach {https}")
    assert f"write {homeserver.url}" in line
