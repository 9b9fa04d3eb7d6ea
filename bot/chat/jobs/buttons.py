"""The buttons under each picture: the bot's own reactions (🔁 🎲 🔍 by default), which a
person taps once in Element to add theirs, and so asks for that command (bot/chat/reactions.py
takes it in). A trusted Matrix bot (Draupnir) places its one-tap choices the same way.

Buttons are a courtesy, so they never hold anything up: they go out in a task of their own
once the job's pictures are posted, after the room's pictures then under way (each reaction
is an event the homeserver orders in the room, and a picture must not queue behind one), and
while the homeserver holds the bot back (a 429) they are left out: each counts against the
same rate limit as the pictures. A room's buttons go one at a time, each
after looking again: when a batch's pictures come, at most one button is on its way, not
one for each job of the batch before (with 8 of them, their reactions held the next
batch's pictures up). One that cannot be sent is logged, not retried: a person can still
type the reaction.
"""

from __future__ import annotations

import asyncio
import logging

from nio import AsyncClient

from bot.chat.defaults import Defaults
from bot.chat.jobs.locks import Locks
from bot.chat.jobs.pending import Pending
from bot.chat.jobs.slots import Slots
from bot.chat.language import reactions
from bot.matrix import edits, messages
from bot.ops.tasks import TaskOwner

log = logging.getLogger(__name__)

# Seconds the buttons wait at most for the room's pictures; then they go anyway (they are
# sent last of everything else).
MOST_WAIT = 60.0
POLL = 0.2


class Buttons:
    """Places the buttons under a job's posted pictures."""

    def __init__(
        self,
        client: AsyncClient,
        names: list[str],
        defaults: Defaults,
        slots: Slots,
        pressure: edits.Pressure,
        tasks: TaskOwner,
    ):
        self.client = client
        self.keys = reactions.buttons(names)  # chat.buttons, as the emoji placed
        self.defaults = defaults  # a room or the person who asked may turn them off
        self.slots = slots  # whether the room has pictures under way
        self.pressure = pressure
        self.tasks = tasks
        self._rooms = Locks()  # one button on its way at a time a room

    def place(self, pending: Pending) -> None:
        """Under each of the job's posted pictures, in a task of its own."""
        if self.keys and pending.posted and not pending.withdrawn:
            self.tasks.spawn(self._place(pending), name=f"buttons-{pending.ticket.id}")

    async def wanted(self, room_id: str, sender: str) -> bool:
        """Whether the room (first) or the person who asked (then) turned them off."""
        here = await self.defaults.here(room_id, sender)
        return here.merged.buttons is not False

    async def _place(self, pending: Pending) -> None:
        if not await self.wanted(pending.room_id, pending.stored.sender):
            return
        for picture in list(pending.posted):
            for key in self.keys:
                content = {
                    "m.relates_to": {"rel_type": "m.annotation", "event_id": picture, "key": key}
                }
                async with self._rooms.holding(pending.room_id):
                    await self._make_way(pending.room_id)
                    if self.pressure.limited:
                        # Held back by the homeserver's rate limit: each button is an event
                        # that counts against it, and would come out of the next picture's
                        # share. Left out: a person can still type the reaction.
                        log.info("job %d: no buttons: rate-limited", pending.ticket.id)
                        return
                    sent = await messages.send(
                        self.client,
                        pending.room_id,
                        content,
                        "m.reaction",
                        # Its own: a retry is recognised by the homeserver, never a second pill.
                        txn_id=pending.txn(f"button-{picture}-{reactions.key_of(key)}"),
                    )
                if sent is None:
                    log.info("job %d: a button could not be placed", pending.ticket.id)
                    return  # the others would fail alike; the log said why

    async def _make_way(self, room_id: str) -> None:
        """Wait while the room's pictures are being posted."""
        for _ in range(round(MOST_WAIT / POLL)):
            if not self.slots.busy(room_id):
                return
            await asyncio.sleep(POLL)
