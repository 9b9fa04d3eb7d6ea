"""Work owned per room: each room's events are handled one after another, in the order they
came, in a task of the room's own, so that the sync loop only hands them on and one slow room
(a picture fetched from a slow server, a report being drawn, a homeserver that answers
slowly) never delays another room's commands."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.ops.tasks import TaskOwner

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]


class Lanes:
    """One lane a room: a queue of work and the task that works it off, ended when the
    queue runs dry (and made again with the room's next event)."""

    def __init__(self, tasks: TaskOwner, beat: Callable[[], None] = lambda: None):
        self.tasks = tasks
        self.beat = beat  # progress, for the watchdog: called after each piece of work
        self._lanes: dict[str, asyncio.Queue] = {}

    def hand(self, room_id: str, work: Work, what: str = "") -> asyncio.Future:
        """Queue `work` in the room's lane; the future is done when it has run (failed or
        not: a failure is logged, and the room's next work goes on)."""
        done = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(room_id)
        if lane is None:
            lane = self._lanes[room_id] = asyncio.Queue()
            self.tasks.spawn(self._work_off(room_id, lane), name=f"room-{room_id}")
        lane.put_nowait((work, done, what))
        return done

    async def _work_off(self, room_id: str, lane: asyncio.Queue) -> None:
        try:
            while not lane.empty():
                work, done, what = lane.get_nowait()
                try:
                    await work()
                except Exception:
                    log.exception("could not handle %s in %s", what or "an event", room_id)
                finally:
                    if not done.done():
                        done.set_result(None)
                    self.beat()
        finally:
            # Nothing awaits between the last get and here: new work makes a new lane.
            if self._lanes.get(room_id) is lane:
                del self._lanes[room_id]
            while not lane.empty():  # cancelled at shutdown: nobody waits for ever
                _, done, _ = lane.get_nowait()
                done.cancel()

    async def idle(self) -> None:
        """Wait until every lane has run dry (for tests and the bench)."""
        while self._lanes:
            await asyncio.sleep(0.01)
