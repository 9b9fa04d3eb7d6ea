"""Personal defaults as SQLite keeps them: the text each person typed (`!img me set`), with
when, for that person in every room (bot/chat/language/personal.py checks them each time
they are used, as room defaults are)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

from bot.store import db as database


@dataclass(frozen=True)
class Stored:
    value: str
    set_at: float


@dataclass(frozen=True)
class Holder:
    """One person with defaults, for the admins' listing (`imgbot usage --defaults`)."""

    user_id: str
    values: dict[str, str]  # key: the value as typed
    last_set: float  # when they last changed one


async def stored(db: aiosqlite.Connection, user_id: str) -> dict[str, Stored]:
    cursor = await db.execute(
        "SELECT key, value, set_at FROM personal_defaults WHERE user_id = ?", (user_id,)
    )
    return {row[0]: Stored(row[1], row[2]) for row in await cursor.fetchall()}


async def store(
    db: aiosqlite.Connection, user_id: str, key: str, value: str, now: float | None = None
) -> None:
    async with database.writing(db):
        await db.execute(
            "INSERT INTO personal_defaults(user_id, key, value, set_at) VALUES (?,?,?,?) "
            "ON CONFLICT(user_id, key) DO UPDATE SET value=excluded.value, "
            "set_at=excluded.set_at",
            (user_id, key, value, time.time() if now is None else now),
        )


async def clear(db: aiosqlite.Connection, user_id: str, key: str | None = None) -> int:
    """Forget one of the person's defaults, or all of them; how many were removed."""
    async with database.writing(db):
        if key is None:
            cursor = await db.execute("DELETE FROM personal_defaults WHERE user_id = ?", (user_id,))
        else:
            cursor = await db.execute(
                "DELETE FROM personal_defaults WHERE user_id = ? AND key = ?", (user_id, key)
            )
    return cursor.rowcount


async def holders(db: aiosqlite.Connection) -> list[Holder]:
    """Everyone who has defaults, by user ID, each with their values."""
    cursor = await db.execute(
        "SELECT user_id, key, value, set_at FROM personal_defaults ORDER BY user_id, key"
    )
    values: dict[str, dict[str, str]] = {}
    last: dict[str, float] = {}
    for user_id, key, value, set_at in await cursor.fetchall():
        values.setdefault(user_id, {})[key] = value
        last[user_id] = max(last.get(user_id, set_at), set_at)
    return [Holder(user_id, kept, last[user_id]) for user_id, kept in values.items()]
