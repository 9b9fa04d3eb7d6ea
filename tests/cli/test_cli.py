"""The `imgbot` command line, run as a user runs it: as a separate process."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from generation.compliance.marking import TRAINED_ALGORITHMIC_MEDIA, source_type_of
from generation.compliance.verify import TRUSTED, verify
from generation.postprocess.png import read_parameters
from tests.conftest import ALLOWED, PASSWORD
from tests.helpers.pki import make_ca

IMGBOT = [sys.executable, "-m", "bot.cli"]
ROOT = Path(__file__).resolve().parents[2]
BOT = "@imgbot:localhost"


def imgbot(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*IMGBOT, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def write_config(path: Path, homeserver, model: Path, state: Path, **matrix) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "matrix": {
                    "homeserver_url": homeserver.url,
                    "user_id": BOT,
                    "password": PASSWORD,
                    "allowed_users": ALLOWED,
                    **matrix,
                },
                "state_dir": str(state),
                "generation": {"model": str(model), "size": "64x64", "steps": 2},
            }
        )
    )
    return path


async def start_bot(config: Path, log: Path) -> asyncio.subprocess.Process:
    """`imgbot run -c config` as its own process, its output appended to `log`."""
    return await asyncio.create_subprocess_exec(
        *IMGBOT, "run", "-c", str(config), cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def test_help_lists_the_commands():
    result = imgbot("--help")
    assert result.returncode == 0
    for command in ("run", "demo", "generate", "usage", "check", "make-test-model"):
        assert command in result.stdout


def test_make_test_model_then_generate(tmp_path):
    model = tmp_path / "tiny-sdxl"
    made = imgbot("make-test-model", str(model), "--arch", "sdxl")
    assert made.returncode == 0, made.stderr
    assert (model / "model_index.json").is_file()
    assert (model / "tokenizer").is_dir() and (model / "tokenizer_2").is_dir()

    out = tmp_path / "einstein.png"
    result = imgbot(
        "generate",
        "Albert Einstein, oil painting",
        "--seed",
        "3",
        "--size",
        "96x64",
        "--steps",
        "2",
        "--model",
        str(model),
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "seed 3" in result.stdout
    with Image.open(out) as picture:
        assert picture.size == (96, 64)
    # compliance.embed_prompt is off by default: the seed is kept, the prompt is not.
    params = read_parameters(out.read_bytes())
    assert params["seed"] == 3 and "prompt" not in params
    assert b"Einstein" not in out.read_bytes()

    refused = imgbot(
        "generate", "a cat", "--steps", "0", "--model", str(model), "-o", str(tmp_path / "no.png")
    )
    assert refused.returncode == 2
    assert "`--steps` must be from 1 to 50" in refused.stderr
    assert not (tmp_path / "no.png").exists()
    jpeg = imgbot("generate", "a cat", "--model", str(model), "-o", str(tmp_path / "cat.jpg"))
    assert jpeg.returncode == 2 and "must end in .png" in jpeg.stderr


def test_generate_takes_the_chats_new_options(tmp_path, test_model):
    out = tmp_path / "fox.png"
    result = imgbot(
        "generate",
        "a fox",
        "--n",
        "2",
        "--ar",
        "16:9",
        "--style",
        "comic",
        "--seed",
        "8",
        "--steps",
        "1",
        "--model",
        str(test_model),
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    for path, seed in ((out, 8), (tmp_path / "fox-2.png", 9)):
        with Image.open(path) as picture:
            assert picture.size == (704, 384)  # 16:9 near the tiny SD model's 512²
        params = read_parameters(path.read_bytes())
        assert (params["seed"], params["style"]) == (seed, "comic")
    refused = imgbot(
        "generate",
        "a fox",
        "--style",
        "vaporwave",
        "--model",
        str(test_model),
        "-o",
        str(tmp_path / "no.png"),
    )
    assert refused.returncode == 2 and "no style 'vaporwave'" in refused.stderr


def test_generate_follows_the_configs_compliance_section(tmp_path, test_model):
    ca = make_ca(tmp_path / "ca")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "matrix": {
                    "homeserver_url": "http://127.0.0.1:1",
                    "user_id": BOT,
                    "password": PASSWORD,
                    "allowed_users": ALLOWED,
                },
                "state_dir": str(tmp_path / "state"),
                "generation": {"model": str(test_model), "size": "64x64", "steps": 1},
                "compliance": {
                    "embed_prompt": True,
                    "blocklist": {"words": ["banknote"]},
                    "c2pa": {"cert": str(ca["cert"]), "key": str(ca["key"])},
                },
            }
        )
    )
    out = tmp_path / "owl.png"
    made = imgbot("generate", "an owl", "--seed", "4", "-c", str(config), "-o", str(out))
    assert made.returncode == 0, made.stderr
    data = out.read_bytes()
    assert source_type_of(data) == TRAINED_ALGORITHMIC_MEDIA
    assert read_parameters(data)["prompt"] == "an owl"  # embed_prompt: true
    report = verify(data, ca["root"].read_text(), watermark=False)
    assert report.c2pa == TRUSTED, report.problems

    blocked = imgbot("generate", "a banknote", "-c", str(config), "-o", str(tmp_path / "b.png"))
    assert blocked.returncode == 2 and "blocked term 'banknote'" in blocked.stderr
    assert not (tmp_path / "b.png").exists()


def test_generate_refuses_a_folder_that_is_no_model(tmp_path):
    result = imgbot("generate", "a cat", "--model", str(tmp_path), "-o", str(tmp_path / "x.png"))
    assert result.returncode == 2
    assert "no model_index.json" in result.stderr


def test_run_refuses_a_bad_config_naming_the_key(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "matrix:\n  homeserver_url: http://127.0.0.1:1\n  user_id: imgbot\n"
        "limits:\n  max_steps: 0\n"
    )
    result = imgbot("run", "-c", str(config))
    assert result.returncode != 0
    assert "matrix.user_id" in result.stderr and "limits.max_steps" in result.stderr


@pytest.mark.synapse
def test_run_with_a_wrong_password_exits_with_a_reason(homeserver, test_model, tmp_path):
    config = write_config(
        tmp_path / "config.yaml",
        homeserver,
        test_model,
        tmp_path / "state",
        password="not the password",
    )
    result = imgbot("run", "-c", str(config))
    assert result.returncode == 2
    assert "login as @imgbot:localhost with matrix.password failed" in result.stderr
    assert "not the password" not in result.stderr + result.stdout


@pytest.mark.synapse
async def test_run_answers_then_stops_cleanly_on_sigterm(homeserver, test_model, tmp_path, alice):
    config = write_config(tmp_path / "config.yaml", homeserver, test_model, tmp_path / "state")
    log = tmp_path / "bot.log"
    bot = await start_bot(config, log)
    try:
        room = await alice.room_with(BOT)  # the bot joins on the invite once it is up
        first = await alice.send(room, "!img a quiet harbour --seed 11")
        await alice.wait_reply(room, first, "m.image")
    finally:
        bot.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(bot.wait(), 60)
    assert code == 0, log.read_text()
    device = json.loads((tmp_path / "state" / "credentials.json").read_text())["device_id"]

    bot = await start_bot(config, log)
    try:
        second = await alice.send(room, "!img a busy harbour --seed 12")
        await alice.wait_reply(room, second, "m.image", timeout=120)
    finally:
        bot.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(bot.wait(), 60)
    assert code == 0, log.read_text()
    assert len(alice.replies(room, first, "m.image")) == 1
    assert json.loads((tmp_path / "state" / "credentials.json").read_text())["device_id"] == device
    text = log.read_text()
    assert "a quiet harbour" not in text, "prompts must not be logged at INFO"
    assert PASSWORD not in text


def test_demo_makes_pictures_a_contact_sheet_and_a_timing_table(tmp_path):
    out = tmp_path / "demo"
    result = imgbot("demo", "--count", "3", "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "random-weight test model" in result.stdout
    pictures = sorted(out.glob("0*.png"))
    assert [p.name for p in pictures] == [
        "01-oil-painting.png",
        "02-watercolor.png",
        "03-pencil-sketch.png",
    ]
    for picture in pictures:
        assert read_parameters(picture.read_bytes())["prompt"].startswith("Albert Einstein, ")
    with Image.open(out / "contact-sheet.png") as sheet:
        assert sheet.width > 3 * 256
    table = (out / "timings.txt").read_text()
    assert "3 pictures in" in table and "s per picture" in table
    with (out / "timings.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == [p.name for p in pictures]
    assert all(float(r["generation_seconds"]) > 0 for r in rows)
    assert all(float(r["reply_seconds"]) >= float(r["generation_seconds"]) for r in rows)
    # Batched pictures count their share of the batch: together no more than the wall time.
    wall = float(re.search(r"3 pictures in ([\d.]+) s total", table)[1])
    assert sum(float(r["generation_seconds"]) for r in rows) <= wall + 0.05
    assert "a picture's share of its batch" in table
