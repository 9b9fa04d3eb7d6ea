"""The usage log: one row per job, written when it is accepted and completed when it ends."""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bot.store import db as database


class JobStatus(str, enum.Enum):
    """How a job stands in the usage log: the values of the `status` column's CHECK
    constraint (bot/store/db.py), which a test holds to these."""

    QUEUED = "queued"  # accepted, not answered yet
    OK = "ok"  # its pictures were posted
    ERROR = "error"  # it failed, or its pictures could not be posted
    REJECTED = "rejected"  # refused before any GPU work (limits, quotas, blocklist)
    CANCELLED = "cancelled"  # cancelled or redacted before it was answered

    def __str__(self) -> str:
        return self.value


STATUSES = tuple(status.value for status in JobStatus)


@dataclass(frozen=True)
class NewJob:
    event_id: str | None
    room_id: str | None
    user_id: str
    prompt: str
    options: dict[str, Any]
    seed: int | None
    model: str | None


async def record_job(
    db: aiosqlite.Connection,
    job: NewJob,
    status: JobStatus = JobStatus.QUEUED,
    error: str | None = None,
) -> int:
    """Write the row for an accepted (or rejected) job; returns its id."""
    async with database.writing(db):
        return await insert_job(db, job, status, error)


async def insert_job(
    db: aiosqlite.Connection,
    job: NewJob,
    status: JobStatus = JobStatus.QUEUED,
    error: str | None = None,
) -> int:
    """`record_job` inside the caller's `db.writing` transaction."""
    now = time.time()
    cursor = await db.execute(
        "INSERT INTO usage(created_at, finished_at, event_id, room_id, user_id, prompt, options,"
        " seed, model, status, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            now,
            None if status is JobStatus.QUEUED else now,
            job.event_id,
            job.room_id,
            job.user_id,
            job.prompt,
            json.dumps(job.options, sort_keys=True),
            job.seed,
            job.model,
            status,
            error,
        ),
    )
    if cursor.lastrowid is None:  # an INSERT always has one
        raise sqlite3.DatabaseError("the usage row was not inserted")
    return cursor.lastrowid


async def finish_job(db: aiosqlite.Connection, row_id: int, **outcome: Any) -> None:
    async with database.writing(db):
        await update_job(db, row_id, **outcome)


async def update_job(
    db: aiosqlite.Connection,
    row_id: int,
    *,
    status: JobStatus | str,
    error: str | None = None,
    images: int = 0,
    queue_seconds: float | None = None,
    generation_seconds: float | None = None,
    worker: str | None = None,
) -> None:
    """`finish_job` inside the caller's `db.writing` transaction."""
    await db.execute(
        "UPDATE usage SET finished_at=?, status=?, error=?, images=?, queue_seconds=?,"
        " generation_seconds=?, worker=? WHERE id=?",
        (time.time(), status, error, images, queue_seconds, generation_seconds, worker, row_id),
    )


async def counted_for_quotas(
    db: aiosqlite.Connection, user_id: str, since: float
) -> list[tuple[float, str, int, str]]:
    """The person's jobs since `since` that count against a quota, oldest first: delivered
    and still queued ones, as (created_at, status, images, options JSON)."""
    cursor = await db.execute(
        "SELECT created_at, status, images, options FROM usage WHERE user_id = ? "
        "AND created_at > ? AND status IN (?, ?) ORDER BY created_at",
        (user_id, since, JobStatus.OK.value, JobStatus.QUEUED.value),
    )
    return [tuple(row) for row in await cursor.fetchall()]


async def add_compliance(db: aiosqlite.Connection, usage_id: int, record: dict[str, Any]) -> None:
    """Add one picture's verdict of the compliance checks to its job's row (a JSON list)."""
    async with database.writing(db):
        row = await (
            await db.execute("SELECT compliance FROM usage WHERE id = ?", (usage_id,))
        ).fetchone()
        found = json.loads(row[0]) if row and row[0] else []
        found.append(record)
        await db.execute(
            "UPDATE usage SET compliance = ? WHERE id = ?",
            (json.dumps(found, sort_keys=True), usage_id),
        )


async def set_status_event(db: aiosqlite.Connection, usage_id: int, event_id: str) -> None:
    """The job's status notice, for removing it with the job's picture later."""
    async with database.writing(db):
        await db.execute("UPDATE usage SET status_event = ? WHERE id = ?", (event_id, usage_id))


async def asked(db: aiosqlite.Connection, usage_id: int) -> tuple[str, str | None] | None:
    """Who asked for the job of this row, and its status notice; None when it is gone."""
    row = await (
        await db.execute("SELECT user_id, status_event FROM usage WHERE id = ?", (usage_id,))
    ).fetchone()
    return (row[0], row[1]) if row else None


async def mark_deleted(db: aiosqlite.Connection, usage_id: int, by: str) -> None:
    """The job's picture was removed (🗑️) by `by`: the row keeps that it was."""
    async with database.writing(db):
        await db.execute(
            "UPDATE usage SET deleted_at = ?, deleted_by = ? WHERE id = ?",
            (time.time(), by, usage_id),
        )


async def close_interrupted(db: aiosqlite.Connection) -> int:
    """Mark the rows left `queued` whose job is not kept for resuming (a `imgbot generate`
    that was killed, or a bot older than the job store) as failed, so the log tells the
    truth and they do not count against quotas."""
    async with database.writing(db):
        cursor = await db.execute(
            "UPDATE usage SET status='error', finished_at=?, error=? WHERE status='queued'"
            " AND id NOT IN (SELECT usage_id FROM jobs)",
            (time.time(), "the bot stopped before this job finished"),
        )
    return cursor.rowcount


async def query(
    db: aiosqlite.Connection,
    since: float | None = None,
    user: str | None = None,
    room: str | None = None,
) -> list[dict[str, Any]]:
    clauses, args = [], []
    for clause, value in (("created_at >= ?", since), ("user_id = ?", user), ("room_id = ?", room)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    cursor = await db.execute(f"SELECT * FROM usage {where} ORDER BY created_at, id", args)
    return [dict(row) for row in await cursor.fetchall()]


# ---- totals per user, room or day ---------------------------------------------------------

GROUPINGS = ("user", "room", "day")


@dataclass(frozen=True)
class Group:
    """The totals of the jobs of one user, room or day."""

    key: str  # a user ID, a room ID ("" for jobs outside a room) or YYYY-MM-DD
    jobs: int
    pictures: int  # delivered by ok jobs
    failed: int
    rejected: int
    cancelled: int
    gpu_seconds: float
    mean_queue_seconds: float | None  # of the ok jobs; None when there is none
    users: int  # distinct
    rooms: int  # distinct, not counting jobs outside a room


def day_of(created_at: float) -> str:
    """YYYY-MM-DD in local time: an admin's day starts at their midnight, not UTC's."""
    return time.strftime("%Y-%m-%d", time.localtime(created_at))


_GROUP_KEYS = {
    "user": lambda row: row["user_id"],
    "room": lambda row: row["room_id"] or "",
    "day": lambda row: day_of(row["created_at"]),
}


def group(rows: list[dict[str, Any]], by: str) -> list[Group]:
    """Totals per user or room (most pictures first) or per day (oldest first).

    Only days with jobs appear; a chart that needs the empty days fills them itself.
    """
    if by not in _GROUP_KEYS:
        raise ValueError(f"{by!r}: group by {', '.join(GROUPINGS)}")
    members: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        members.setdefault(_GROUP_KEYS[by](row), []).append(row)
    groups = [totals(key, group_rows) for key, group_rows in members.items()]
    if by == "day":
        return sorted(groups, key=lambda g: g.key)
    return sorted(groups, key=lambda g: (-g.pictures, g.key))


def totals(key: str, rows: list[dict[str, Any]]) -> Group:
    """The totals of these rows, under this key."""
    ok = [r for r in rows if r["status"] == JobStatus.OK]
    waits = [r["queue_seconds"] for r in ok if r["queue_seconds"] is not None]
    return Group(
        key=key,
        jobs=len(rows),
        pictures=sum(r["images"] for r in ok),
        failed=sum(r["status"] == JobStatus.ERROR for r in rows),
        rejected=sum(r["status"] == JobStatus.REJECTED for r in rows),
        cancelled=sum(r["status"] == JobStatus.CANCELLED for r in rows),
        gpu_seconds=sum(r["generation_seconds"] or 0 for r in rows),
        mean_queue_seconds=sum(waits) / len(waits) if waits else None,
        users=len({r["user_id"] for r in rows}),
        rooms=len({r["room_id"] for r in rows if r["room_id"]}),
    )
