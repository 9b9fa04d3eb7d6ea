"""`imgbot usage --defaults`: the admins' list of who has personal defaults (`!img me set`),
run as an operator runs it, a separate process reading a stopped bot's database."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.store import db as database
from bot.store import personal_defaults
from tests.cli.test_admin_commands import DB_NAME, ZONE, imgbot, on_disk, systemd_config

WHEN = datetime(2024, 7, 15, 12, 30, tzinfo=ZoneInfo(ZONE)).timestamp()  # CEST


async def keep(state: Path, *rows: tuple[str, str, str]) -> None:
    db = await database.connect(state / DB_NAME)
    try:
        for minutes, (user, key, value) in enumerate(rows):
            await personal_defaults.store(db, user, key, value, now=WHEN + 60 * minutes)
    finally:
        await db.close()


async def test_defaults_lists_each_person_with_what_they_set(tmp_path):
    config = systemd_config(tmp_path)
    state = tmp_path / "state"
    await keep(
        state,
        ("@bob:corp.example", "style", "photo"),
        ("@ann:corp.example", "size", "16:9"),
        ("@bob:corp.example", "steps", "8"),
    )
    before = on_disk(state)
    done = imgbot("usage", "-c", str(config), "--defaults")
    assert done.returncode == 0, done.stderr
    head, ann, bob, count = done.stdout.splitlines()
    assert head.split()[:4] == ["user", "style", "size", "steps"]
    assert "last set (CEST, UTC+02:00)" in head
    assert ann.split()[:3] == ["@ann:corp.example", "-", "16:9"]
    assert bob.split()[:4] == ["@bob:corp.example", "photo", "-", "8"]
    assert bob.split()[-2:] == ["2024-07-15", "12:32"]  # the later of bob's two
    assert count == "2 people have own defaults"
    assert on_disk(state) == before  # a review changes nothing


async def test_defaults_as_json_and_csv_and_for_one_person(tmp_path):
    config = systemd_config(tmp_path)
    await keep(
        tmp_path / "state",
        ("@bob:corp.example", "negative", "=HYPERLINK(1)"),
        ("@ann:corp.example", "buttons", "off"),
    )
    done = imgbot("usage", "-c", str(config), "--defaults", "--format", "json", "--user", "bob")
    assert done.returncode == 0, done.stderr
    assert "--user bob is @bob:corp.example" in done.stderr
    assert json.loads(done.stdout) == [
        {
            "user_id": "@bob:corp.example",
            "defaults": {"negative": "=HYPERLINK(1)"},
            "last_set": "2024-07-15T12:30:00+02:00",
            "last_set_epoch": WHEN,
        }
    ]
    done = imgbot("usage", "-c", str(config), "--defaults", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["user_id"], r["negative"], r["buttons"]) for r in rows] == [
        ("'@ann:corp.example", "", "off"),
        ("'@bob:corp.example", "'=HYPERLINK(1)", ""),
    ]


async def test_defaults_takes_no_by_or_room(tmp_path):
    config = systemd_config(tmp_path)
    await keep(tmp_path / "state")
    done = imgbot("usage", "-c", str(config), "--defaults", "--by", "user")
    assert done.returncode == 2 and "no --by or --room" in done.stderr
