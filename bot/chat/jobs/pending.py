"""The jobs accepted and not yet answered, and the order of each room's answers: a room's
answers come in the order its commands were accepted, though the next picture is made (and
encoded, and uploaded) while one is still being sent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from generation.scheduling.ticket import Ticket

from bot.matrix import messages
from bot.store.jobs import StoredJob


@dataclass
class Pending:
    """A job that was accepted and whose answer has not been sent yet."""

    ticket: Ticket
    stored: StoredJob
    # Set when its answer is sent (or will never be): the next job of the room waits for it.
    answered: asyncio.Future
    # The previous job of the same room, answered before this one is.
    after: asyncio.Future | None = None
    withdrawn: bool = False  # its command was redacted while it ran: send nothing
    status: Any = None  # its Status (status.py): what the room sees while it waits
    posted: list[str] = field(default_factory=list)  # its pictures' events, as posted

    @property
    def reaction(self) -> str | None:
        """The key of the reaction it was asked with ("🔁"); None for a typed command."""
        return self.stored.command.get("reaction")

    @property
    def prompt(self) -> str:  # as the person typed it, before any style
        return self.stored.prompt

    @property
    def room_id(self) -> str:
        return self.stored.room_id

    def txn(self, part: str) -> str:
        return messages.txn_id(self.stored.event_id, part)

    async def my_turn(self) -> None:
        """Wait until the room's earlier answers are sent: a room's answers arrive in the
        order its commands were accepted (the work before a send may overlap)."""
        if self.after is not None:
            await asyncio.shield(self.after)


class PendingJobs:
    """The jobs accepted and not yet answered, by their command's event ID, each behind its
    room's previous one."""

    def __init__(self) -> None:
        self._by_command: dict[str, Pending] = {}
        self._last_in_room: dict[str, asyncio.Future] = {}  # the answer of its newest job

    def add(self, ticket: Ticket, stored: StoredJob) -> Pending:
        """The queued job, answered after the room's jobs accepted before it."""
        answered = asyncio.get_running_loop().create_future()
        pending = Pending(ticket, stored, answered, self._last_in_room.get(stored.room_id))
        self._last_in_room[stored.room_id] = answered
        self._by_command[stored.event_id] = pending
        return pending

    def answered(self, pending: Pending) -> None:
        """Its answer is sent, or never will be: the room's next job may send its own. Kept
        until then, so that a redaction while its pictures upload still counts."""
        self._by_command.pop(pending.stored.event_id, None)
        if not pending.answered.done():
            pending.answered.set_result(None)
        if self._last_in_room.get(pending.room_id) is pending.answered:
            del self._last_in_room[pending.room_id]

    def of_command(self, event_id: str) -> Pending | None:
        return self._by_command.get(event_id)

    def of_status(self, event_id: str) -> Pending | None:
        """The job whose status notice is `event_id`."""
        return next(
            (
                p
                for p in self._by_command.values()
                if p.status is not None and p.status.event_id == event_id
            ),
            None,
        )

    def of_ticket(self, ticket: Ticket) -> Pending | None:
        return self._by_command.get(ticket.tag or "")  # tagged with the command's event ID

    def prompt_of(self, ticket: Ticket) -> str:
        """The prompt as the person typed it (the job's has the style applied)."""
        pending = self.of_ticket(ticket)
        return pending.prompt if pending else ticket.job.prompt

    def room_of(self, ticket: Ticket) -> str | None:
        pending = self.of_ticket(ticket)
        return pending.room_id if pending else None

    def __len__(self) -> int:
        return len(self._by_command)

    def __iter__(self) -> Iterator[Pending]:  # in the order they were accepted
        return iter(list(self._by_command.values()))
