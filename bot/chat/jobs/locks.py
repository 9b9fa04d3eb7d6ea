"""A lock a key (a person, a room), kept only while it is held or waited for: the people
who ever sent a command, or the rooms the bot was ever in, do not each keep one for ever."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager


class Locks:
    """An asyncio.Lock a key, kept only while it is held or waited for (the people who
    ever sent a command do not each keep one for ever)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # holding or waiting, by key

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def holding(self, key: str):
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]
