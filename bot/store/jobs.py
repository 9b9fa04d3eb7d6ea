"""Accepted jobs, kept in SQLite from the moment they are accepted until they are answered.

This is what makes "a request the bot accepted is answered exactly once" hold through a
stop, a crash or a power cut: a job is written (with the claim on its command, in one
transaction) before the GPU sees it, and deleted (with its usage row's outcome, again in one
transaction) only after its answer was sent. What is left at the next start is resumed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

import aiosqlite

from generation.job import Job

from bot.store import db as database
from bot.store import usage


@dataclass(frozen=True)
class StoredJob:
    event_id: str  # the command's
    usage_id: int  # its row in the usage log
    created_at: float
    room_id: str
    sender: str
    command: dict[str, Any]  # what a reply needs of the command (messages.reply_target)
    prompt: str  # as typed, before any style
    job: Job | None  # None when the row cannot be read as a job any more
    starts: int = 1  # how often a run queued it, this one included
    parts_sent: int = 0  # replies already posted


async def accept(
    db: aiosqlite.Connection,
    event: dict[str, Any],
    room_id: str,
    prompt: str,
    job: Job,
    logged: usage.NewJob,
    reply_to: dict[str, Any],
) -> StoredJob:
    """Claim the command, write its usage row (`logged`) and the job: one transaction.
    `reply_to`: what its answers reply to (messages.reply_target)."""
    now = time.time()
    async with database.writing(db):
        await database.insert_claim(db, event["event_id"], now)
        row = await usage.insert_job(db, logged)
        stored = StoredJob(
            event["event_id"], row, now, room_id, event["sender"], reply_to, prompt, job
        )
        await db.execute(
            "INSERT INTO jobs(event_id, usage_id, created_at, room_id, sender, command, prompt,"
            " job, starts) VALUES (?,?,?,?,?,?,?,?,1)",
            (
                stored.event_id,
                row,
                now,
                room_id,
                stored.sender,
                json.dumps(stored.command),
                prompt,
                json.dumps(job.record()),
            ),
        )
    return stored


async def sent_part(db: aiosqlite.Connection, stored: StoredJob) -> None:
    """A reply of this job was posted: from now on it is completed, never given up."""
    async with database.writing(db):
        await db.execute(
            "UPDATE jobs SET parts_sent = parts_sent + 1 WHERE event_id = ?", (stored.event_id,)
        )


async def finish(db: aiosqlite.Connection, stored: StoredJob, **outcome: Any) -> None:
    """Record the outcome in the usage log and forget the job, in one transaction."""
    async with database.writing(db):
        await usage.update_job(db, stored.usage_id, **outcome)
        await db.execute("DELETE FROM jobs WHERE event_id = ?", (stored.event_id,))


async def unfinished(db: aiosqlite.Connection) -> list[StoredJob]:
    """The jobs a previous run left unanswered, in the order they were accepted, each
    counted as started once more."""
    async with database.writing(db):
        await db.execute("UPDATE jobs SET starts = starts + 1")
    cursor = await db.execute("SELECT * FROM jobs ORDER BY usage_id")
    return [
        StoredJob(
            row["event_id"],
            row["usage_id"],
            row["created_at"],
            row["room_id"],
            row["sender"],
            json.loads(row["command"]),
            row["prompt"],
            job_from_record(row["job"]),
            row["starts"],
            row["parts_sent"],
        )
        for row in await cursor.fetchall()
    ]


def job_from_record(text: str) -> Job | None:
    """A job from its JSON record, or None when it cannot be read (another version's)."""
    try:
        fields = json.loads(text)
        known = {f.name for f in dataclasses.fields(Job)}
        kept = {k: v for k, v in fields.items() if k in known}
        if "references" in kept:
            kept["references"] = tuple(kept["references"])
        return Job(**kept)
    except (ValueError, TypeError):
        return None
