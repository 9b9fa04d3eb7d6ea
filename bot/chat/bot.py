"""The chat side of one bot: its roles built once and wired, each handed the shared context.

Data flows one way: event -> intake -> parsed command -> accepting (job stored, queued) ->
delivery (pictures sent, usage row); resuming re-queues at start what the last run left.
The commands that only read or change settings (room, queue, usage) are in `replies.py`.
"""

from __future__ import annotations

from collections.abc import Callable

from nio import AsyncClient

from generation.scheduling.queue import GenerationQueue

from bot.chat.jobs.accepting import Acceptor
from bot.chat.context import Context
from bot.chat.jobs.delivery import Delivery
from bot.chat.intake import Intake
from bot.chat.jobs.iterate import Iterator
from bot.chat.replies.answers import Replies
from bot.chat.jobs.resuming import Resumer
from bot.config import Settings
from bot.ops.disk import DiskWatch
from bot.ops.metrics import Metrics
from bot.ops.tasks import TaskOwner


class Bot:
    """The roles of one bot, composed for bot.app; it holds no behaviour of its own."""

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
        self.ctx = ctx = Context(client, settings, db, queue, tasks, metrics, beat, disk)
        self.delivery = Delivery(ctx)
        self.acceptor = Acceptor(ctx, self.delivery, Iterator(ctx))
        self.replies = Replies(ctx)
        self.intake = Intake(ctx, self.acceptor, self.replies)
        self.resumer = Resumer(ctx, self.acceptor, self.delivery)
        # What bot.app and the sync loop drive.
        self.on_sync = self.intake.on_sync
        self.on_event = self.intake.on_event
        self.undecrypted = self.intake.undecrypted
        self.resume = self.resumer.resume

    # Set by bot.app at start: the loaded compliance checks, the homeserver's upload limit.
    @property
    def screening(self):
        return self.ctx.screening

    @screening.setter
    def screening(self, value) -> None:
        self.ctx.screening = value

    @property
    def upload_limit(self) -> int | None:
        return self.ctx.upload_limit

    @upload_limit.setter
    def upload_limit(self, value: int | None) -> None:
        self.ctx.upload_limit = value
