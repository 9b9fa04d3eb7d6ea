"""Per-room defaults as SQLite keeps them: the text each moderator typed, with who set it
and when (bot/chat/language/rooms.py checks them each time they are used)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

from bot.store import db as database


@dataclass(frozen=True)
class Stored:
    value: str
    set_by: str
    set_at: float


async def stored(db: aiosqlite.Connection, room_id: str) -> dict[str, Stored]:
    cursor = await db.execute(
        "SELECT key, value, set_by, set_at FROM room_defaults WHERE room_id = ?", (room_id,)
    )
    return {row[0]: Stored(row[1], row[2], row[3]) for row in await cursor.fetchall()}


async def store(db: aiosqlite.Connection, room_id: str, key: str, value: str, user_id: str) -> None:
    async with database.writing(db):
        await db.execute(
            "INSERT INTO room_defaults(room_id, key, value, set_by, set_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(room_id, key) DO UPDATE SET value=excluded.value, "
            "set_by=excluded.set_by, set_at=excluded.set_at",
            (room_id, key, value, user_id, time.time()),
        )


async def clear(db: aiosqlite.Connection, room_id: str, key: str | None = None) -> int:
    async with database.writing(db):
        if key is None:
            cursor = await db.execute("DELETE FROM room_defaults WHERE room_id = ?", (room_id,))
        else:
            cursor = await db.execute(
                "DELETE FROM room_defaults WHERE room_id = ? AND key = ?", (room_id, key)
            )
    return cursor.rowcount
