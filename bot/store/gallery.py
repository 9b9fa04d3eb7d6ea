"""The pictures the bot posted, by event ID: what `again`, `vary` and `upscale` continue from.

Only the job's parameters are kept (the picture itself stays on the homeserver). When the
usage log keeps no prompts, neither does this table: the prompt is then read back from the
picture's own PNG parameters.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import aiosqlite

from generation.job import Job

from bot.store import db as database
from bot.store.jobs import job_from_record


@dataclass(frozen=True)
class Posted:
    job: Job
    prompt: str  # as typed, before any style
    picture: int | None  # which of the job's pictures (its seed is job.seed + picture); None: sheet
    usage_id: int | None = None  # the job's row in the usage log


async def remember(
    db: aiosqlite.Connection,
    event_id: str,
    room_id: str,
    usage_id: int,
    record: dict,
    prompt: str,
    picture: int | None,
) -> None:
    async with database.writing(db):
        await db.execute(
            "INSERT OR REPLACE INTO pictures(event_id, room_id, usage_id, job, prompt, picture,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (event_id, room_id, usage_id, json.dumps(record), prompt, picture, time.time()),
        )


async def find(db: aiosqlite.Connection, event_id: str, room_id: str) -> Posted | None:
    """The bot's picture `event_id` in this room (a picture is only continued in the room
    it was posted in); None when it is not one, or its record has expired."""
    row = await (
        await db.execute(
            "SELECT job, prompt, picture, usage_id FROM pictures"
            " WHERE event_id = ? AND room_id = ?",
            (event_id, room_id),
        )
    ).fetchone()
    if row is None:
        return None
    job = job_from_record(row["job"])
    if job is None:
        return None
    return Posted(job, row["prompt"], row["picture"], row["usage_id"])


async def forget(db: aiosqlite.Connection, event_id: str) -> None:
    """The picture was removed from its room: nothing continues from it any more."""
    async with database.writing(db):
        await db.execute("DELETE FROM pictures WHERE event_id = ?", (event_id,))


async def usage_of(db: aiosqlite.Connection, event_id: str, room_id: str) -> dict | None:
    """The usage log's row of the job that made the bot's picture `event_id` in this room
    (who asked, when, how long it took, the worker); None when the picture is not one of the
    bot's, or the row is gone (usage.retention_days)."""
    row = await (
        await db.execute(
            "SELECT usage.* FROM pictures JOIN usage ON usage.id = pictures.usage_id"
            " WHERE pictures.event_id = ? AND pictures.room_id = ?",
            (event_id, room_id),
        )
    ).fetchone()
    return dict(row) if row is not None else None
