"""What the chat roles share: the parts the bot was built with, the jobs accepted and not
yet answered, and what is learnt while running (the upload limit, the first sync, the checks).

Each role (intake, accepting, resuming, delivering, the word replies) gets this one object
from the bot that wires them; none of them reaches another role through it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from nio import AsyncClient

from generation.families.known import family_of_runner
from generation.scheduling.queue import GenerationQueue
from generation.scheduling.ticket import Ticket

from bot.chat.language import rooms, styles
from bot.chat.language.resolve import Catalogue
from bot.config import Settings
from bot.matrix import edits, messages
from bot.ops.backlog import Backlog
from bot.ops.disk import DiskWatch
from bot.ops.metrics import Metrics
from bot.ops.tasks import TaskOwner
from bot.store import room_defaults
from bot.store.jobs import StoredJob


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


def matches(user_id: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(user_id, pattern) for pattern in patterns)


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


class Context:
    """The parts and the running state every chat role of one bot shares."""

    def __init__(
        self,
        client: AsyncClient,
        settings: Settings,
        db,
        queue: GenerationQueue,
        tasks: TaskOwner,
        metrics: Metrics | None = None,
        beat: Callable[[], None] = lambda: None,
        disk: DiskWatch | None = None,
    ):
        self.client = client
        self.settings = settings
        self.db = db
        self.queue = queue
        self.tasks = tasks
        # state_dir's free space: a command that cannot be stored waits in it for space,
        # and a delivered job's writes wait in the backlog (bot.app hands in its watch)
        self.disk = disk or DiskWatch(settings.state_dir, settings.disk)
        self.backlog = Backlog(self.disk, tasks)
        runner = queue.runner
        families = {name: family_of_runner(runner, name) for name in runner.models}
        self.catalogue = Catalogue(
            default_model=runner.name,
            models={name: runner.native_size(name) for name in runner.models},
            styles=styles.configured(settings.styles),
            families=families,
            # generation.edit_model, else the default model where its family edits
            edit_model=settings.generation.edit_model
            or (runner.name if family_of_runner(runner, runner.name).edits else None),
        )
        self.pending: dict[str, Pending] = {}  # by the command's event ID
        # The answer of each room's newest job: answers in a room come in the order the
        # commands were accepted, though the next picture is made while one is uploading.
        self.last_in_room: dict[str, asyncio.Future] = {}
        self.slots = Slots()  # pictures encoded, uploaded and posted at once
        self.typing = edits.Typing(client)  # the rooms the bot shows itself typing in
        self.pressure = edits.Pressure(client)  # whether the homeserver holds the bot back
        self.upload_limit: int | None = None  # the homeserver's m.upload.size, once known
        self.metrics = metrics or Metrics()
        self.beat = beat  # progress, for the watchdog: called after each event
        # Set by the first sync: until then nio does not know which rooms are encrypted
        # (with encryption on it cannot send to them; with it off, the guard against
        # sending in the clear could not work). The answers of resumed jobs wait for it.
        self.rooms_known = asyncio.Event()
        # The compliance checks: loaded at start by bot.app, else at the first picture.
        self.screening = None
        self.screening_lock = asyncio.Lock()

    @property
    def me(self) -> str:
        return self.client.user_id

    def is_admin(self, user_id: str) -> bool:
        return matches(user_id, self.settings.matrix.admins)

    def _pending_of(self, ticket: Ticket) -> Pending | None:
        return self.pending.get(ticket.tag or "")  # tagged with the command's event ID

    def prompt_of(self, ticket: Ticket) -> str:
        """The prompt as the person typed it (the job's has the style applied)."""
        pending = self._pending_of(ticket)
        return pending.prompt if pending else ticket.job.prompt

    def room_of(self, ticket: Ticket) -> str | None:
        pending = self._pending_of(ticket)
        return pending.room_id if pending else None

    async def room_defaults(self, room_id: str):
        return rooms.usable(
            await room_defaults.stored(self.db, room_id), self.settings.limits, self.catalogue
        )
