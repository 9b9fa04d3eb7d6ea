"""The bound on the pictures being encoded, uploaded and posted at once, per room and in all
rooms together; and which rooms have pictures under way (their status edits make way)."""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager


# Pictures encoded and uploaded at once: in one room (its answers still arrive in order),
# and in all rooms together (each one in flight holds its encoded file in memory).
PER_ROOM = 3
OVERALL = 6
# Pictures encoded at once, in all rooms: the encoding is CPU work, and one more at once
# than there are cores only slows the picture whose turn to be sent comes next.
_CORES = (
    len(os.sched_getaffinity(0))
    if hasattr(os, "sched_getaffinity")  # a container's
    else os.cpu_count() or 1
)
ENCODERS = max(1, min(OVERALL, _CORES))


class Slots:
    """The bound on pictures being encoded, uploaded and posted, per room and overall; and
    how many a room has under way (status edits make way for them)."""

    def __init__(self, per_room: int = PER_ROOM, overall: int = OVERALL):
        self._per_room = per_room
        self._overall = asyncio.Semaphore(overall)
        self.encoding = asyncio.Semaphore(ENCODERS)  # held while a picture is encoded
        self._rooms: dict[str, asyncio.Semaphore] = {}
        self._busy: dict[str, int] = {}

    def busy(self, room_id: str) -> bool:
        return bool(self._busy.get(room_id))

    @asynccontextmanager
    async def take(self, room_id: str):
        room = self._rooms.setdefault(room_id, asyncio.Semaphore(self._per_room))
        async with self.under_way(room_id), room, self._overall:
            yield

    @asynccontextmanager
    async def under_way(self, room_id: str):
        """Counts as the room's pictures being posted while the block runs."""
        self._busy[room_id] = self._busy.get(room_id, 0) + 1
        try:
            yield
        finally:
            self._busy[room_id] -= 1
            if not self._busy[room_id]:
                del self._busy[room_id]
