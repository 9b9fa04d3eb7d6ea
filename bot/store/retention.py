"""Privacy of the usage log: prompts kept or only hashed (`usage.store_prompts`), and old
rows deleted by a daily task (`usage.retention_days`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from typing import Any

import aiosqlite

from bot.store import db as database

from bot.config import UsageSettings

log = logging.getLogger(__name__)

DAY = 86400.0
INTERVAL_SECONDS = DAY
RETRY_SECONDS = 3600.0  # after a failed run (the database busy or full), try again sooner
# handled_events is what keeps a command from being answered twice; see apply_retention.
HANDLED_EVENTS_MIN_DAYS = 30
HASHED_OPTIONS = ("prompt", "negative_prompt")


def prompt_for_log(prompt: str, store: bool) -> str:
    """The prompt, or when prompts are not stored "sha256:" and the hex digest of its UTF-8:
    an admin can still see that two jobs had the same prompt, but not read it."""
    if store:
        return prompt
    return "sha256:" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def options_for_log(options: dict[str, Any], store: bool) -> dict[str, Any]:
    """The job's parameters (as written to the usage row's `options`), with the prompt and
    the negative prompt hashed when prompts are not stored; every key stays."""
    return {
        key: prompt_for_log(value, store)
        if key in HASHED_OPTIONS and isinstance(value, str)
        else value
        for key, value in options.items()
    }


async def apply_retention(
    db: aiosqlite.Connection, retention_days: int | None, now: float | None = None
) -> int:
    """Delete the usage rows created more than `retention_days` ago, and the handled-event
    records as old (but never younger than HANDLED_EVENTS_MIN_DAYS); returns how many usage
    rows went. None keeps everything. Jobs still `queued` are never deleted."""
    if retention_days is None:
        return 0
    if retention_days < 1:
        raise ValueError(f"retention_days {retention_days}: give 1 or more, or None")
    now = time.time() if now is None else now
    cutoff = now - retention_days * DAY
    async with database.writing(db):
        usage_rows, handled = await _delete_older(db, now, cutoff)
    log.info(
        "usage retention (%d days): deleted %d usage rows and %d handled-event records",
        retention_days,
        usage_rows,
        handled,
        extra={
            "retention_days": retention_days,
            "deleted_usage_rows": usage_rows,
            "deleted_handled_events": handled,
        },
    )
    return usage_rows


async def _delete_older(db: aiosqlite.Connection, now: float, cutoff: float) -> tuple[int, int]:
    cursor = await db.execute(
        "DELETE FROM usage WHERE created_at < ? AND status != 'queued'", (cutoff,)
    )
    usage_rows = cursor.rowcount
    # The records of posted pictures carry prompts too; `again` on an older picture then
    # says that it no longer knows it.
    await db.execute("DELETE FROM pictures WHERE created_at < ?", (cutoff,))

    # Why old handled_events may go: a command is only ever delivered to the bot again
    # (1) when a restart re-syncs from the last saved token, which is saved only after its
    # batch was handled (bot/sync.py), so a crash in between delivers that batch once more,
    # and gaps are filled only back to that same token; and (2) never after a lost token,
    # because the first sync without one is history and answers nothing (bot/handler.py
    # on_sync). So only events of the batch in hand when the bot last stopped can come back.
    # Their records are kept for HANDLED_EVENTS_MIN_DAYS counted back from the newest record,
    # not only from now: a bot that crashed mid-batch and stays down longer than that still
    # finds them when it re-syncs (this task runs at start). handled_at is when the bot
    # handled the event.
    newest = await database.single(db, "SELECT MAX(handled_at) FROM handled_events")
    keep_from = now if newest is None else min(now, newest)
    handled_cutoff = min(cutoff, keep_from - HANDLED_EVENTS_MIN_DAYS * DAY)
    cursor = await db.execute("DELETE FROM handled_events WHERE handled_at < ?", (handled_cutoff,))
    return usage_rows, cursor.rowcount


async def retention_task(
    db: aiosqlite.Connection, usage_settings: UsageSettings, stop: asyncio.Event
) -> None:
    """Apply the retention now and then every 24 h, until `stop` is set (at once)."""
    days = usage_settings.retention_days
    if days is None:
        log.info("usage.retention_days is not set: the usage log is kept in full")
        return
    while not stop.is_set():
        wait = INTERVAL_SECONDS
        try:
            await apply_retention(db, days)
        except sqlite3.Error:
            # A busy or full database must not end the retention for good.
            log.exception("usage retention failed; trying again in %.0f s", RETRY_SECONDS)
            wait = RETRY_SECONDS
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except asyncio.TimeoutError:
            pass
