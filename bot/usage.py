"""The usage log: one row per job, written when it is accepted and completed when it ends."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import aiosqlite

STATUSES = ("queued", "ok", "error", "rejected", "cancelled")
_SPAN_RE = re.compile(r"^(\d+)([mhdw])$")
_SPAN_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float | None:
    """'7d' -> the unix time 7 days ago; 'all' -> None. Raises ValueError otherwise."""
    text = text.strip().lower()
    if text == "all":
        return None
    match = _SPAN_RE.match(text)
    if not match:
        raise ValueError(f"{text!r}: write a span like 30m, 24h, 7d, 4w, or all")
    now = time.time() if now is None else now
    return now - int(match[1]) * _SPAN_SECONDS[match[2]]


@dataclass(frozen=True)
class NewJob:
    event_id: str | None
    room_id: str | None
    user_id: str
    prompt: str
    options: dict[str, Any]
    seed: int | None
    model: str | None


async def record_job(db: aiosqlite.Connection, job: NewJob, status: str = "queued",
                     error: str | None = None) -> int:
    """Write the row for an accepted (or rejected) job; returns its id."""
    now = time.time()
    cursor = await db.execute(
        "INSERT INTO usage(created_at, finished_at, event_id, room_id, user_id, prompt, options,"
        " seed, model, status, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (now, None if status == "queued" else now, job.event_id, job.room_id, job.user_id,
         job.prompt, json.dumps(job.options, sort_keys=True), job.seed, job.model, status, error),
    )
    await db.commit()
    return cursor.lastrowid


async def finish_job(db: aiosqlite.Connection, row_id: int, *, status: str,
                     error: str | None = None, images: int = 0,
                     queue_seconds: float | None = None,
                     generation_seconds: float | None = None) -> None:
    await db.execute(
        "UPDATE usage SET finished_at=?, status=?, error=?, images=?, queue_seconds=?,"
        " generation_seconds=? WHERE id=?",
        (time.time(), status, error, images, queue_seconds, generation_seconds, row_id),
    )
    await db.commit()


async def query(db: aiosqlite.Connection, since: float | None = None,
                user: str | None = None, room: str | None = None) -> list[dict[str, Any]]:
    clauses, args = [], []
    for clause, value in (("created_at >= ?", since), ("user_id = ?", user),
                          ("room_id = ?", room)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    cursor = await db.execute(f"SELECT * FROM usage {where} ORDER BY created_at, id", args)
    return [dict(row) for row in await cursor.fetchall()]


# ---- output for `imgbot usage` --------------------------------------------------------------

COLUMNS = ("time", "user", "room", "status", "images", "seed", "model", "queue_s", "gen_s",
           "prompt")


def _display_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created_at"])),
        "user": row["user_id"],
        "room": row["room_id"] or "",
        "status": row["status"],
        "images": row["images"],
        "seed": "" if row["seed"] is None else row["seed"],
        "model": row["model"] or "",
        "queue_s": "" if row["queue_seconds"] is None else f"{row['queue_seconds']:.2f}",
        "gen_s": "" if row["generation_seconds"] is None else f"{row['generation_seconds']:.2f}",
        "prompt": row["prompt"],
    }


def summary(rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    gpu = sum(r["generation_seconds"] or 0 for r in rows)
    return (f"{len(rows)} jobs, {sum(r['images'] for r in ok)} pictures, "
            f"{len({r['user_id'] for r in rows})} users, "
            f"{sum(r['status'] == 'error' for r in rows)} failed, "
            f"{sum(r['status'] == 'rejected' for r in rows)} rejected, "
            f"{gpu:.1f} GPU seconds")


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    shown = [_display_row(r) for r in rows]
    for row in shown:  # keep the table readable; csv and json carry the whole prompt
        if len(row["prompt"]) > 40:
            row["prompt"] = row["prompt"][:39] + "…"
    widths = {c: max([len(c)] + [len(str(r[c])) for r in shown]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS) for r in shown]
    lines.append(summary(rows))
    return "\n".join(lines)
