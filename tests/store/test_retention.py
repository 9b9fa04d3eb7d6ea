"""`bot/retention.py`: prompts hashed when not stored, and the daily deletion of old rows,
on real SQLite files made by `bot.db.connect`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from contextlib import closing

import pytest

from bot.store import db as database
from bot.store import retention, usage
from bot.config import UsageSettings
from bot.store.usage import NewJob

NOW = 1_700_000_000.0
DAY = 86400.0
SECRET = "a portrait of our unreleased product, codename Bluebird"


@pytest.fixture
async def db(tmp_path):
    conn = await database.connect(tmp_path / "x.sqlite3")
    yield conn
    await conn.close()


async def add(
    db, *, age_days: float, status: str = "ok", prompt: str = SECRET, now: float = NOW
) -> int:
    """A usage row written through the usage module, then dated `age_days` before `now`."""
    row_id = await usage.record_job(
        db,
        NewJob(
            event_id=None,
            room_id="!room:localhost",
            user_id="@alice:localhost",
            prompt=prompt,
            options={"prompt": prompt, "steps": 2},
            seed=1,
            model="tiny-sd",
        ),
    )
    if status != "queued":
        await usage.finish_job(db, row_id, status=status, images=1 if status == "ok" else 0)
    await db.execute("UPDATE usage SET created_at = ? WHERE id = ?", (now - age_days * DAY, row_id))
    await db.commit()
    return row_id


async def ids(db) -> set[int]:
    return {row[0] for row in await (await db.execute("SELECT id FROM usage")).fetchall()}


async def handled(db) -> set[str]:
    rows = await (await db.execute("SELECT event_id FROM handled_events")).fetchall()
    return {row[0] for row in rows}


# ---- hashing ------------------------------------------------------------------------------


def test_a_stored_prompt_is_kept_as_it_is():
    assert retention.prompt_for_log(SECRET, True) == SECRET
    options = {"prompt": SECRET, "negative_prompt": "blurry", "steps": 4}
    assert retention.options_for_log(options, True) == options


def test_a_prompt_not_stored_becomes_its_sha256():
    hashed = retention.prompt_for_log(SECRET, False)
    assert hashed == "sha256:" + hashlib.sha256(SECRET.encode("utf-8")).hexdigest()
    assert hashed == retention.prompt_for_log(SECRET, False)  # the same prompt, the same hash
    assert hashed != retention.prompt_for_log(SECRET + ".", False)
    assert "Bluebird" not in hashed
    # UTF-8, so non-ASCII prompts hash as well.
    assert retention.prompt_for_log("Straße, 油画", False) == (
        "sha256:" + hashlib.sha256("Straße, 油画".encode()).hexdigest()
    )


def test_options_keep_their_keys_and_lose_the_prompts():
    options = {
        "prompt": SECRET,
        "negative_prompt": "Bluebird logo",
        "seed": 7,
        "steps": 4,
        "style": "oil-painting",
        "count": 2,
    }
    hashed = retention.options_for_log(options, False)
    assert list(hashed) == list(options)
    assert hashed["prompt"] == retention.prompt_for_log(SECRET, False)
    assert hashed["negative_prompt"] == retention.prompt_for_log("Bluebird logo", False)
    assert {k: v for k, v in hashed.items() if "prompt" not in k} == {
        "seed": 7,
        "steps": 4,
        "style": "oil-painting",
        "count": 2,
    }
    assert "Bluebird" not in repr(hashed)
    assert options["prompt"] == SECRET  # the caller's dict is left alone
    assert retention.options_for_log({"steps": 4}, False) == {"steps": 4}


# ---- apply_retention ----------------------------------------------------------------------


async def test_old_rows_go_recent_and_queued_ones_stay(db, tmp_path):
    old_ok = await add(db, age_days=40)
    old_error = await add(db, age_days=8, status="error")
    old_rejected = await add(db, age_days=7.5, status="rejected")
    old_queued = await add(db, age_days=40, status="queued")
    recent = await add(db, age_days=6.9)
    today = await add(db, age_days=0)
    deleted = await retention.apply_retention(db, 7, now=NOW)
    assert deleted == 3
    assert await ids(db) == {old_queued, recent, today}
    assert {old_ok, old_error, old_rejected}.isdisjoint(await ids(db))
    # The deletion is committed: another connection sees it.
    with closing(sqlite3.connect(tmp_path / "x.sqlite3")) as other:
        assert other.execute("SELECT COUNT(*) FROM usage").fetchone() == (3,)


async def test_none_keeps_everything(db):
    rows = {await add(db, age_days=days) for days in (0, 40, 4000)}
    await database.claim_event(db, "$ancient", NOW - 4000 * DAY)
    assert await retention.apply_retention(db, None, now=NOW) == 0
    assert await ids(db) == rows
    assert await handled(db) == {"$ancient"}


async def test_handled_events_go_with_the_rows_but_never_before_30_days(db):
    for event_id, age in (
        ("$today", 0),
        ("$20d", 20),
        ("$29d", 29.9),
        ("$31d", 31),
        ("$100d", 100),
    ):
        await database.claim_event(db, event_id, NOW - age * DAY)
    # 7 days for the usage log, but handled events stay 30 days: a command must never be
    # answered twice.
    await retention.apply_retention(db, 7, now=NOW)
    assert await handled(db) == {"$today", "$20d", "$29d"}
    # A longer retention than 30 days applies to them too.
    await retention.apply_retention(db, 60, now=NOW)
    assert await handled(db) == {"$today", "$20d", "$29d"}
    await database.claim_event(db, "$later", NOW + 100 * DAY)
    await retention.apply_retention(db, 10, now=NOW + 100 * DAY)
    assert await handled(db) == {"$later"}


async def test_a_bot_that_was_down_long_keeps_the_events_of_its_last_batch(db):
    # The bot crashed in the middle of a batch and is started again 40 days later: its
    # first sync delivers that batch again, so the batch's records must still be there.
    await database.claim_event(db, "$before", NOW - 45 * DAY)
    await database.claim_event(db, "$last-batch", NOW - 40 * DAY)
    await add(db, age_days=40)
    assert await retention.apply_retention(db, 7, now=NOW) == 1  # the usage row goes
    assert await handled(db) == {"$before", "$last-batch"}  # within 30 days of the newest
    await database.claim_event(db, "$new", NOW)
    await retention.apply_retention(db, 7, now=NOW)
    assert await handled(db) == {"$new"}


async def test_the_log_line_counts_and_names_no_prompt(db, caplog):
    await add(db, age_days=10)
    await database.claim_event(db, "$old", NOW - 50 * DAY)
    await database.claim_event(db, "$new", NOW)
    with caplog.at_level(logging.INFO, logger="bot.store.retention"):
        await retention.apply_retention(db, 7, now=NOW)
    [record] = [r for r in caplog.records if r.name == "bot.store.retention"]
    assert record.levelno == logging.INFO
    assert "deleted 1 usage rows and 1 handled-event records" in record.getMessage()
    assert (record.deleted_usage_rows, record.deleted_handled_events) == (1, 1)
    assert "Bluebird" not in caplog.text


async def test_a_retention_below_one_day_is_refused(db):
    with pytest.raises(ValueError, match="retention_days 0"):
        await retention.apply_retention(db, 0, now=NOW)


# ---- the daily task -----------------------------------------------------------------------


async def test_the_task_runs_at_start_and_stops_at_once(db):
    old = await add(db, age_days=10, now=time.time())
    kept = await add(db, age_days=1, now=time.time())
    stop = asyncio.Event()
    task = asyncio.create_task(retention.retention_task(db, UsageSettings(retention_days=7), stop))
    for _ in range(200):
        if old not in await ids(db):
            break
        await asyncio.sleep(0.01)
    assert await ids(db) == {kept}
    assert not task.done()  # waiting for tomorrow
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, timeout=1)
    assert time.monotonic() - started < 0.5


async def test_the_task_repeats_and_survives_a_database_error(db, monkeypatch):
    calls: list[int | None] = []

    async def counting(db, days, now=None):
        calls.append(days)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return 0

    monkeypatch.setattr(retention, "apply_retention", counting)
    monkeypatch.setattr(retention, "INTERVAL_SECONDS", 0.01)
    monkeypatch.setattr(retention, "RETRY_SECONDS", 0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(retention.retention_task(db, UsageSettings(retention_days=3), stop))
    for _ in range(200):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=1)
    assert len(calls) >= 3 and set(calls) == {3}


async def test_without_retention_days_the_task_deletes_nothing_and_ends(db):
    rows = {await add(db, age_days=4000, now=time.time())}
    stop = asyncio.Event()
    await asyncio.wait_for(retention.retention_task(db, UsageSettings(), stop), timeout=1)
    assert await ids(db) == rows
