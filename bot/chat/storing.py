"""Taking a command only once it is stored: its claim (and, for one that makes pictures,
its job and usage row) is what makes it answered exactly once, so a command whose claim the
full disk refuses waits, in its room's lane, until there is space again."""

from __future__ import annotations

import logging
from typing import Any

from bot.ops.disk import DiskWatch

log = logging.getLogger(__name__)


class WhenStored:
    """Takes each command once it can be stored; counts the rooms that wait for space."""

    def __init__(self, disk: DiskWatch):
        self._disk = disk
        self.waiting = 0  # rooms whose next command waits for the disk to have space

    async def __call__(self, event: dict[str, Any], take) -> None:
        """Take a command (`take`: its handling up to and including its claim), or, when
        the disk is full, wait in its room's lane until space is back and take it then:
        it is answered once, late rather than never. The notice "not taken, try again"
        could not be stored either, so a restart would fetch the command again and answer
        it a second time. Meanwhile the sync token is not saved past it (its sync is not
        handled), so a restart before the space is back fetches it again too."""
        waited = False
        while True:
            try:
                await take()
            except Exception as exc:
                if not await self._disk.refused(exc):
                    raise
            else:
                if waited:
                    log.info(
                        "took %s's command %s, kept waiting by the full disk",
                        event.get("sender"),
                        event.get("event_id"),
                    )
                return
            if not waited:
                log.info(
                    "%s's command %s waits until the disk has space",
                    event.get("sender"),
                    event.get("event_id"),
                )
            waited = True
            self.waiting += 1
            try:
                await self._disk.space_back()
            finally:
                self.waiting -= 1
