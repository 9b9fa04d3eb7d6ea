"""Writes that a full disk put off: a job that was accepted is delivered even when the disk
fills meanwhile, and what its delivery must record (that a reply was posted, the picture
for later replies, the outcome in the usage log) waits here, in order, until space is back.

Kept in memory only: they could not be kept anywhere else. A stop before the space is back
loses these writes but never the job: its row in `jobs` (written when it was accepted) is
still there, so the next start makes it again, the homeserver recognises each reply by its
transaction ID (nothing is posted twice), and its usage row gets its outcome then.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from bot.ops.disk import DiskWatch
from bot.ops.tasks import TaskOwner

log = logging.getLogger(__name__)

Write = Callable[[], Awaitable[object]]


class Backlog:
    """Writes made now, or, while the disk is full, later and in the order they came."""

    def __init__(self, disk: DiskWatch, tasks: TaskOwner):
        self.disk = disk
        self.tasks = tasks
        self._writes: deque[tuple[str, Write]] = deque()
        self._worker: asyncio.Task | None = None

    def __len__(self) -> int:
        return len(self._writes)

    async def write(self, what: str, step: Write) -> None:
        """Run `step` (one write transaction, `what` it records, for the log), or put it off
        when the disk is full. Writes already put off go first: a later one never lands
        before an earlier one (a job's outcome after its posted replies). Any other failure
        is raised to the caller, as before."""
        if not self._writes:
            try:
                await step()
                return
            except Exception as exc:
                if not await self.disk.refused(exc):
                    raise
        self._writes.append((what, step))
        if self._worker is None:
            log.warning("the disk is full: %s is written once space is back", what)
            self._worker = self.tasks.spawn(self._write_when_space(), name="backlog")

    async def _write_when_space(self) -> None:
        try:
            while self._writes:
                await self.disk.space_back()
                while self._writes:
                    what, step = self._writes[0]
                    try:
                        await step()
                    except Exception as exc:
                        if await self.disk.refused(exc):
                            break  # full again: wait once more
                        log.exception("could not write %s, put off by the full disk", what)
                    self._writes.popleft()
                else:
                    log.info("the writes the full disk had put off are made")
        except asyncio.CancelledError:
            if self._writes:
                log.warning(
                    "%d writes put off by the full disk are lost with this stop; the "
                    "jobs they belong to are still stored and made again at the next "
                    "start (their replies are not posted twice)",
                    len(self._writes),
                )
            raise
        finally:
            self._worker = None
