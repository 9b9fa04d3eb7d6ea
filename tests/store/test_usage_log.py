"""The SQLite database (`bot/db.py`), the usage log (`bot/usage.py`) and `imgbot usage`.

Everything runs on real SQLite files in tmp_path; the CLI runs as a separate process.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from bot.store import db as database
from bot.store import usage
from bot.cli import usage as usage_cli
from bot.store.usage import NewJob
from bot.text import parse_since

REPO = Path(__file__).resolve().parents[2]
DB_NAME = "imgbot.sqlite3"  # what `imgbot run` and `imgbot usage` use inside state_dir
NOW = 1_700_000_000.0
DAY = 86400.0


@pytest.fixture
async def db(tmp_path):
    conn = await database.connect(tmp_path / DB_NAME)
    yield conn
    await conn.close()


def new_job(
    user: str = "@alice:localhost",
    room: str | None = "!room1:localhost",
    prompt: str = "a cat",
    event_id: str | None = None,
    seed: int | None = 1,
) -> NewJob:
    return NewJob(
        event_id=event_id,
        room_id=room,
        user_id=user,
        prompt=prompt,
        options={"steps": 2, "size": "64x64"},
        seed=seed,
        model="tiny-sd",
    )


async def add(db, *, created_at: float, status: str = "ok", images: int = 1, **kw) -> int:
    """A finished row, dated `created_at`."""
    row_id = await usage.record_job(db, new_job(**kw))
    if status != "queued":
        await usage.finish_job(
            db,
            row_id,
            status=status,
            images=images,
            error="boom" if status == "error" else None,
            queue_seconds=0.5,
            generation_seconds=None if status == "rejected" else 1.25,
        )
    await db.execute("UPDATE usage SET created_at = ? WHERE id = ?", (created_at, row_id))
    await db.commit()
    return row_id


async def fill(db) -> None:
    """Five jobs by two users in two rooms over ten days."""
    await add(db, created_at=NOW - 10 * DAY, prompt="old alice job", images=2)
    await add(
        db,
        created_at=NOW - 2 * DAY,
        user="@bob:localhost",
        prompt="bob, in room 2",
        room="!room2:localhost",
    )
    await add(db, created_at=NOW - 3600, prompt="alice recent", images=4)
    await add(db, created_at=NOW - 60, prompt="alice failed", status="error", images=0)
    await add(
        db, created_at=NOW - 30, user="@bob:localhost", prompt="x" * 80, status="rejected", images=0
    )


# ---- schema and connection ----------------------------------------------------------------


async def test_migrations_bring_the_schema_up_to_date_in_wal_mode(db, tmp_path):
    (version,) = await (await db.execute("PRAGMA user_version")).fetchone()
    assert version == len(database.MIGRATIONS) >= 1
    (mode,) = await (await db.execute("PRAGMA journal_mode")).fetchone()
    assert mode.lower() == "wal"
    names = {
        row[0]
        for row in await (
            await db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ).fetchall()
    }
    assert {"usage", "handled_events", "bot_state"} <= names
    # Another process (imgbot usage) sees the same file in WAL mode.
    with sqlite3.connect(tmp_path / DB_NAME) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_connecting_twice_keeps_schema_and_data(tmp_path):
    path = tmp_path / "state" / DB_NAME  # the state folder does not exist yet
    first = await database.connect(path)
    await database.set_state(first, "sync_token", "s1")
    await first.close()
    second = await database.connect(path)
    try:
        (version,) = await (await second.execute("PRAGMA user_version")).fetchone()
        assert version == len(database.MIGRATIONS)
        assert await database.get_state(second, "sync_token") == "s1"
    finally:
        await second.close()


async def test_a_newer_database_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(database.MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError) as info:
        conn = await database.connect(path)
        await conn.close()
    message = str(info.value)
    assert f"version {len(database.MIGRATIONS) + 1}" in message
    assert "upgrade imgbot" in message


async def test_a_refused_database_leaves_no_connection_open(tmp_path):
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(database.MIGRATIONS) + 1}")
    before = set(threading.enumerate())
    try:
        with pytest.raises(RuntimeError) as info:
            await database.connect(path)
        leaked = [t for t in threading.enumerate() if t not in before]
        for thread in leaked:
            thread.join(timeout=1)
        assert not [t.name for t in leaked if t.is_alive()]
    finally:
        del info  # let the garbage collector stop a leaked worker, so pytest can exit
        gc.collect()


# ---- handled events and state -------------------------------------------------------------


async def test_claim_event_is_true_once(db, tmp_path):
    assert await database.claim_event(db, "$event1", NOW) is True
    assert await database.claim_event(db, "$event1", NOW + 1) is False
    assert await database.claim_event(db, "$event2", NOW) is True
    # Still claimed after a restart.
    again = await database.connect(tmp_path / DB_NAME)
    try:
        assert await database.claim_event(again, "$event1", NOW + 2) is False
    finally:
        await again.close()


async def test_state_round_trips_and_overwrites(db):
    assert await database.get_state(db, "next_batch") is None
    await database.set_state(db, "next_batch", "s72_1")
    assert await database.get_state(db, "next_batch") == "s72_1"
    await database.set_state(db, "next_batch", "s80_4")
    assert await database.get_state(db, "next_batch") == "s80_4"
    await database.set_state(db, "other", "x")
    assert await database.get_state(db, "next_batch") == "s80_4"


# ---- the usage log ------------------------------------------------------------------------


async def test_record_and_finish_a_job(db):
    before = time.time()
    row_id = await usage.record_job(db, new_job(event_id="$cmd", prompt="Эйнштейн, 油画"))
    [row] = await usage.query(db)
    assert row["id"] == row_id
    assert row["status"] == "queued" and row["finished_at"] is None
    assert row["created_at"] >= before - 1
    assert (
        row["event_id"],
        row["room_id"],
        row["user_id"],
        row["prompt"],
        row["seed"],
        row["model"],
    ) == ("$cmd", "!room1:localhost", "@alice:localhost", "Эйнштейн, 油画", 1, "tiny-sd")
    assert json.loads(row["options"]) == {"steps": 2, "size": "64x64"}

    await usage.finish_job(
        db, row_id, status="ok", images=2, queue_seconds=0.25, generation_seconds=1.5
    )
    [row] = await usage.query(db)
    assert (
        row["status"],
        row["images"],
        row["queue_seconds"],
        row["generation_seconds"],
        row["error"],
    ) == ("ok", 2, 0.25, 1.5, None)
    assert row["finished_at"] >= row["created_at"]


async def test_rejected_job_is_recorded_finished_with_its_reason(db):
    await usage.record_job(db, new_job(), status="rejected", error="queue full")
    [row] = await usage.query(db)
    assert row["status"] == "rejected" and row["error"] == "queue full"
    assert row["finished_at"] is not None


async def test_unknown_status_is_refused_by_the_database(db):
    row_id = await usage.record_job(db, new_job())
    with pytest.raises(sqlite3.IntegrityError):
        await usage.finish_job(db, row_id, status="done")


async def test_query_filters_by_since_user_and_room(db):
    await fill(db)

    def prompts(rows):
        return [r["prompt"] for r in rows]

    assert len(await usage.query(db)) == 5
    assert prompts(await usage.query(db, since=NOW - 7 * DAY)) == [
        "bob, in room 2",
        "alice recent",
        "alice failed",
        "x" * 80,
    ]
    assert prompts(await usage.query(db, user="@alice:localhost")) == [
        "old alice job",
        "alice recent",
        "alice failed",
    ]
    assert prompts(await usage.query(db, room="!room2:localhost")) == ["bob, in room 2"]
    assert prompts(await usage.query(db, since=NOW - DAY, user="@alice:localhost")) == [
        "alice recent",
        "alice failed",
    ]
    assert await usage.query(db, user="@nobody:localhost") == []


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30m", 1800),
        ("24h", 86400),
        ("7d", 7 * 86400),
        ("4w", 28 * 86400),
        ("1d", 86400),
        (" 7D ", 7 * 86400),
    ],
)
def test_parse_since_spans(text, seconds):
    assert parse_since(text, now=NOW) == NOW - seconds


def test_parse_since_all_is_no_limit():
    assert parse_since("all", now=NOW) is None


@pytest.mark.parametrize("text", ["", "7", "d", "7y", "-1d", "1.5h", "yesterday", "7 d"])
def test_parse_since_errors_say_what_is_allowed(text):
    with pytest.raises(ValueError) as info:
        parse_since(text, now=NOW)
    message = str(info.value)
    assert repr(text) in message
    assert "30m" in message and "7d" in message and "all" in message


# ---- rendering ----------------------------------------------------------------------------


def header_words(line: str) -> list[str]:
    """The table's column names, without the zone the time column names in brackets."""
    return re.sub(r" \([^)]*\)", "", line).split()


async def test_table_has_a_header_a_line_per_job_and_a_summary(db):
    await fill(db)
    rows = await usage.query(db)
    lines = usage_cli.render(rows, "table").splitlines()
    assert header_words(lines[0]) == list(usage_cli.COLUMNS)
    assert len(lines) == 1 + len(rows) + 1
    assert lines[-1] == ("5 jobs, 7 pictures, 2 users, 1 failed, 1 rejected, 5.0 GPU seconds")
    assert any("@bob:localhost" in line and "!room2:localhost" in line for line in lines[1:-1])
    # Long prompts are cut in the table (csv and json keep them whole).
    long_line = next(line for line in lines if "rejected" in line.split())
    assert "x" * 39 + "…" in long_line and "x" * 40 not in long_line


def test_table_of_nothing_still_has_a_summary():
    lines = usage_cli.render([], "table").splitlines()
    assert header_words(lines[0]) == list(usage_cli.COLUMNS)
    assert lines[-1].startswith("0 jobs, 0 pictures, 0 users")


async def test_csv_is_parseable_with_every_row(db):
    await fill(db)
    await add(db, created_at=NOW, prompt='a "quoted", comma\nand a newline')
    rows = await usage.query(db)
    parsed = list(csv.DictReader(io.StringIO(usage_cli.render(rows, "csv"))))
    assert len(parsed) == len(rows) == 6
    assert [r["prompt"] for r in parsed] == [r["prompt"] for r in rows]
    assert {"user_id", "room_id", "status", "images", "created_at"} <= set(parsed[0])
    # A user ID starts with @, which spreadsheets take for a formula: it reads '@… here.
    assert [r["user_id"] for r in parsed] == ["'" + r["user_id"] for r in rows]


async def test_json_is_parseable_and_complete(db):
    await fill(db)
    rows = await usage.query(db)
    parsed = json.loads(usage_cli.render(rows, "json"))
    assert len(parsed) == len(rows)
    for record, row in zip(parsed, rows):
        # The times as ISO 8601 with the zone beside the epochs, options as an object.
        assert record["created_at_epoch"] == row["created_at"]
        assert datetime.fromisoformat(record["created_at"]).timestamp() == int(row["created_at"])
        assert datetime.fromisoformat(record["created_at"]).utcoffset() is not None
        assert record["options"] == json.loads(row["options"]) == {"steps": 2, "size": "64x64"}
        plain = {
            k: v
            for k, v in record.items()
            if not k.startswith(("created", "finished", "deleted_at"))
        }
        assert plain == {
            k: v for k, v in row.items() if not k.startswith(("created", "finished", "deleted_at"))
        } | {"options": record["options"]}
    assert parsed[-1]["prompt"] == "x" * 80


# ---- `imgbot usage` -----------------------------------------------------------------------


@pytest.fixture
async def filled_config(tmp_path) -> Path:
    state = tmp_path / "state"
    conn = await database.connect(state / DB_NAME)
    try:
        await fill(conn)
        await add(conn, created_at=time.time() - 60, prompt="alice just now")
    finally:
        await conn.close()
    return write_config(tmp_path, state)


def write_config(tmp_path: Path, state: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "matrix": {"homeserver_url": "http://127.0.0.1:1", "user_id": "@imgbot:localhost"},
                "state_dir": str(state),
            }
        )
    )
    return path


def imgbot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_json_filtered_by_user(filled_config):
    done = imgbot(
        "usage",
        "-c",
        str(filled_config),
        "--format",
        "json",
        "--since",
        "all",
        "--user",
        "@alice:localhost",
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["prompt"] for r in rows] == [
        "old alice job",
        "alice recent",
        "alice failed",
        "alice just now",
    ]
    assert {r["user_id"] for r in rows} == {"@alice:localhost"}


async def test_cli_csv_filtered_by_room(filled_config):
    done = imgbot(
        "usage",
        "-c",
        str(filled_config),
        "--format",
        "csv",
        "--since",
        "all",
        "--room",
        "!room2:localhost",
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["user_id"], r["prompt"]) for r in rows] == [("'@bob:localhost", "bob, in room 2")]


async def test_cli_table_with_default_since_shows_only_the_last_week(filled_config):
    # The rows dated around NOW (2023) are older than a week; only the fresh one is shown.
    done = imgbot("usage", "-c", str(filled_config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert header_words(lines[0]) == list(usage_cli.COLUMNS)
    assert "alice just now" in done.stdout and "old alice job" not in done.stdout
    assert lines[-1].startswith("1 jobs, 1 pictures, 1 users")


async def test_cli_table_all(filled_config):
    done = imgbot(
        "usage",
        "-c",
        str(filled_config),
        "--format",
        "table",
        "--since",
        "all",
        "--user",
        "@alice:localhost",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 + 4 + 1
    assert lines[-1].startswith("4 jobs, 7 pictures, 1 users, 1 failed, 0 rejected")
    assert "@bob:localhost" not in done.stdout


async def test_cli_bad_since_exits_2_naming_the_problem(filled_config):
    done = imgbot("usage", "-c", str(filled_config), "--since", "yesterday")
    assert done.returncode == 2
    assert "--since" in done.stderr and "'yesterday'" in done.stderr and "7d" in done.stderr
    assert done.stdout == ""


def test_cli_missing_database_exits_non_zero_with_a_clear_message(tmp_path):
    state = tmp_path / "empty-state"
    done = imgbot("usage", "-c", str(write_config(tmp_path, state)), "--since", "all")
    assert done.returncode != 0
    assert "no usage log" in done.stderr and str(state / DB_NAME) in done.stderr
    assert not (state / DB_NAME).exists()  # looking did not create one


def test_cli_bad_config_exits_non_zero_naming_the_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("matrix:\n  homeserver_url: http://127.0.0.1:1\n  user_id: nobody\n")
    done = imgbot("usage", "-c", str(path))
    assert done.returncode != 0
    assert "matrix.user_id" in done.stderr


def test_cli_bad_format_is_refused_by_argparse(tmp_path):
    done = imgbot("usage", "-c", str(tmp_path / "config.yaml"), "--format", "xml")
    assert done.returncode == 2
    assert "invalid choice: 'xml'" in done.stderr


# ---- totals per user, room and day --------------------------------------------------------


@pytest.fixture
def tokyo(monkeypatch):
    """Local time is UTC+9 (a POSIX TZ string, so no tz database is needed)."""
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def fill_more(db) -> None:
    """`fill`, plus a failed job that still counted images, a cancelled one and a CLI job."""
    await fill(db)
    failed = await add(db, created_at=NOW - 20, prompt="failed late", status="error", images=3)
    await usage.finish_job(
        db,
        failed,
        status="error",
        error="boom",
        images=3,
        queue_seconds=9.5,
        generation_seconds=2.0,
    )
    await add(db, created_at=NOW - 10, user="@bob:localhost", status="cancelled", images=0)
    await add(db, created_at=NOW - 5, user="@carol:localhost", room=None, images=2)


async def test_group_by_user_sums_each_users_jobs(db):
    await fill_more(db)
    alice, carol, bob = usage.group(await usage.query(db), "user")  # by pictures
    assert alice == usage.Group(
        key="@alice:localhost",
        jobs=4,
        pictures=6,
        failed=2,
        rejected=0,
        cancelled=0,
        gpu_seconds=1.25 * 3 + 2.0,
        mean_queue_seconds=0.5,
        users=1,
        rooms=1,
    )
    assert bob == usage.Group(
        key="@bob:localhost",
        jobs=3,
        pictures=1,
        failed=0,
        rejected=1,
        cancelled=1,
        gpu_seconds=2.5,
        mean_queue_seconds=0.5,
        users=1,
        rooms=2,
    )
    assert (carol.key, carol.pictures, carol.rooms) == ("@carol:localhost", 2, 0)


async def test_failed_jobs_count_as_failed_not_pictures_nor_queue_wait(db):
    row_id = await add(db, created_at=NOW, status="error", images=0)
    await usage.finish_job(
        db,
        row_id,
        status="error",
        error="out of memory",
        images=4,
        queue_seconds=30.0,
        generation_seconds=3.0,
    )
    [only] = usage.group(await usage.query(db), "user")
    assert (only.jobs, only.pictures, only.failed, only.gpu_seconds) == (1, 0, 1, 3.0)
    assert only.mean_queue_seconds is None  # the wait of delivered jobs only


async def test_group_by_room_counts_users_and_keeps_jobs_outside_rooms(db):
    await fill_more(db)
    groups = usage.group(await usage.query(db), "room")
    assert [
        (g.key, g.jobs, g.pictures, g.failed, g.rejected, g.cancelled, g.users) for g in groups
    ] == [
        ("!room1:localhost", 6, 6, 2, 1, 1, 2),
        ("", 1, 2, 0, 0, 0, 1),  # the CLI job: no room
        ("!room2:localhost", 1, 1, 0, 0, 0, 1),
    ]


async def test_group_by_day_uses_local_days_oldest_first(db, tokyo):
    await fill_more(db)
    # NOW is 2023-11-14 22:13:20 UTC, which is already the 15th in Tokyo.
    groups = usage.group(await usage.query(db), "day")
    assert [(g.key, g.jobs, g.pictures, g.users) for g in groups] == [
        ("2023-11-05", 1, 2, 1),
        ("2023-11-13", 1, 1, 1),
        ("2023-11-15", 6, 6, 3),
    ]
    assert sum(g.jobs for g in groups) == len(await usage.query(db))


def test_group_refuses_an_unknown_grouping():
    with pytest.raises(ValueError, match="user, room, day"):
        usage.group([], "model")


async def test_grouped_table_csv_and_json(db):
    await fill_more(db)
    rows = await usage.query(db)
    lines = usage_cli.render_grouped(rows, "room", "table").splitlines()
    assert lines[0].split() == list(usage_cli.group_columns("room"))
    assert lines[0].split()[-1] == "users"
    assert lines[1].split() == ["!room1:localhost", "6", "6", "2", "1", "1", "7.0", "0.50", "2"]
    assert lines[2].split()[0] == "-"  # no room
    assert lines[-1] == usage_cli.summary(rows)

    parsed = list(csv.DictReader(io.StringIO(usage_cli.render_grouped(rows, "user", "csv"))))
    assert [(r["user"], r["pictures"], r["rooms"]) for r in parsed] == [
        ("'@alice:localhost", "6", "1"),
        ("'@carol:localhost", "2", "0"),
        ("'@bob:localhost", "1", "2"),
    ]

    records = json.loads(usage_cli.render_grouped(rows, "user", "json"))
    assert records[0] == {
        "user": "@alice:localhost",
        "jobs": 4,
        "pictures": 6,
        "failed": 2,
        "rejected": 0,
        "cancelled": 0,
        "gpu_seconds": 5.75,
        "mean_queue_seconds": 0.5,
        "rooms": 1,
    }


def test_grouped_csv_of_nothing_has_its_header():
    assert usage_cli.render_grouped([], "day", "csv").strip() == ",".join(
        usage_cli.group_columns("day")
    )


async def test_csv_of_nothing_has_the_usage_tables_columns(db):
    header = usage_cli.render([], "csv").strip().split(",")
    columns = [row[1] for row in await (await db.execute("PRAGMA table_info(usage)")).fetchall()]
    # Every column of the table, each time followed by its epoch, as with rows.
    assert [c for c in header if not c.endswith("_epoch")] == columns
    await fill(db)
    with_rows = usage_cli.render(await usage.query(db), "csv").splitlines()[0].split(",")
    assert header == with_rows == list(usage_cli.FIELDS)


# ---- read-only open -----------------------------------------------------------------------


async def test_read_only_open_of_a_missing_file_creates_nothing(tmp_path):
    with pytest.raises(sqlite3.OperationalError):
        await database.connect_readonly(tmp_path / DB_NAME)
    assert list(tmp_path.iterdir()) == []


async def test_read_only_open_reads_and_cannot_write(tmp_path):
    path = tmp_path / DB_NAME
    conn = await database.connect(path)
    await fill(conn)
    await conn.close()
    before = path.read_bytes(), path.stat().st_mtime_ns
    reader = await database.connect_readonly(path)
    try:
        assert len(await usage.query(reader)) == 5
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await usage.record_job(reader, new_job())
    finally:
        await reader.close()
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


@pytest.mark.parametrize(
    "offset, words", [(-1, ("older", "start the bot")), (1, ("newer", "upgrade imgbot"))]
)
async def test_read_only_open_refuses_another_schema_unchanged(tmp_path, offset, words):
    path = tmp_path / DB_NAME
    version = len(database.MIGRATIONS) + offset
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    before = path.read_bytes()
    with pytest.raises(database.SchemaMismatch) as info:
        await database.connect_readonly(path)
    assert f"version {version}" in str(info.value)
    assert all(word in str(info.value) for word in words)
    assert path.read_bytes() == before


# ---- `imgbot usage --by` ------------------------------------------------------------------


async def test_cli_by_user_table(filled_config):
    path = filled_config.parent / "state" / DB_NAME
    before = path.read_bytes()
    done = imgbot("usage", "-c", str(filled_config), "--since", "all", "--by", "user")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == list(usage_cli.group_columns("user"))
    # alice: the fill's 3 jobs and the fresh one; 2 + 4 + 1 pictures, her failure not counted.
    assert lines[1].split()[:4] == ["@alice:localhost", "4", "7", "1"]
    assert lines[2].split()[:4] == ["@bob:localhost", "2", "1", "0"]
    assert lines[-1].startswith("6 jobs, 8 pictures, 2 users")
    assert path.read_bytes() == before  # the review changed nothing


async def test_cli_by_day_json_filtered_by_room(filled_config):
    done = imgbot(
        "usage",
        "-c",
        str(filled_config),
        "--since",
        "all",
        "--by",
        "day",
        "--room",
        "!room2:localhost",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    [day] = json.loads(done.stdout)
    assert day["day"] == usage.day_of(NOW - 2 * DAY)
    assert (day["jobs"], day["pictures"], day["users"]) == (1, 1, 1)


def test_cli_on_a_newer_schema_says_so(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / DB_NAME) as conn:
        conn.execute(f"PRAGMA user_version = {len(database.MIGRATIONS) + 1}")
    done = imgbot("usage", "-c", str(write_config(tmp_path, state)), "--by", "room")
    assert done.returncode == 1
    assert "newer" in done.stderr and "upgrade imgbot" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_job_statuses_are_those_the_database_allows():
    """JobStatus names each value of the `status` column's CHECK constraint, and no other:
    a status the database refuses would fail a job's last write."""
    import re

    from bot.store import db as database

    check = re.search(
        r"status TEXT NOT NULL CHECK \(status IN \(([^)]*)\)\)", database.MIGRATIONS[0]
    )
    allowed = {value.strip().strip("'") for value in check[1].split(",")}
    assert {status.value for status in usage.JobStatus} == allowed
    assert f"{usage.JobStatus.OK}" == "ok" and usage.JobStatus("error") is usage.JobStatus.ERROR
