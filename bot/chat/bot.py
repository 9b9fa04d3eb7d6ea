"""The chat side of one bot: its roles built once and wired, each handed what it uses.

Data flows one way: event -> intake -> parsed command -> accepting (job stored, queued) ->
delivery (pictures sent, usage row); resuming re-queues at start what the last run left.
The commands that only read or change settings (room, queue, usage) are in `replies/`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nio import AsyncClient

from generation.scheduling.queue import GenerationQueue

from bot.chat.defaults import Defaults
from bot.chat.intake import Intake
from bot.chat.jobs.accepting import Acceptor
from bot.chat.jobs.buttons import Buttons
from bot.chat.jobs.delivery import Delivery
from bot.chat.jobs.iterate import Iterator
from bot.chat.jobs.pending import PendingJobs
from bot.chat.jobs.posting import Poster
from bot.chat.jobs.resuming import Resumer
from bot.chat.jobs.screening import Screener
from bot.chat.jobs.slots import Slots
from bot.chat.jobs.status import Statuses
from bot.chat.language import styles
from bot.chat.language.resolve import Catalogue
from bot.chat.reactions import Reactions
from bot.chat.replies.answers import Replies
from bot.chat.storing import WhenStored
from bot.config import Settings
from bot.matrix import edits
from bot.ops.backlog import Backlog
from bot.ops.disk import DiskWatch
from bot.ops.metrics import Metrics
from bot.ops.tasks import TaskOwner


def catalogue_of(queue: GenerationQueue, settings: Settings) -> Catalogue:
    """What a command may choose from: the runner's models and the configured styles."""
    runner = queue.runner
    return Catalogue(
        default_model=runner.name,
        models={name: runner.native_size(name) for name in runner.models},
        styles=styles.configured(settings.styles),
        families={name: runner.family_of(name) for name in runner.models},
        # generation.edit_model, else the default model where its family edits
        edit_model=settings.generation.edit_model
        or (runner.name if runner.family_of(runner.name).edits else None),
    )


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
        self.client, self.settings, self.db, self.queue = client, settings, db, queue
        metrics = metrics or Metrics()
        # state_dir's free space: a command that cannot be stored waits in it for space,
        # and a delivered job's writes wait in the backlog (bot.app hands in its watch)
        disk = disk or DiskWatch(settings.state_dir, settings.disk)
        self.backlog = Backlog(disk, tasks)
        catalogue = catalogue_of(queue, settings)
        self.pending = PendingJobs()
        defaults = Defaults(db, settings.limits, catalogue)
        slots = Slots()
        pressure = edits.Pressure(client)  # whether the homeserver holds the bot back
        when_stored = self.when_stored = WhenStored(disk)
        # Set by the first sync: until then nio does not know which rooms are encrypted
        # (with encryption on it cannot send to them; with it off, the guard against
        # sending in the clear could not work). The answers of resumed jobs wait for it.
        rooms_known = asyncio.Event()
        # The compliance checks: loaded at start by bot.app, else at the first picture.
        self.screener = Screener(client, db, self.backlog, settings)
        # Learns the homeserver's upload limit: at start by bot.app, else at a refusal.
        self.poster = Poster(
            client, db, self.backlog, slots, self.screener, settings.usage.store_prompts
        )
        self.delivery = Delivery(
            client=client,
            db=db,
            queue=queue,
            pending=self.pending,
            poster=self.poster,
            buttons=Buttons(client, settings.chat.buttons, defaults, slots, pressure, tasks),
            slots=slots,
            backlog=self.backlog,
            metrics=metrics,
            catalogue=catalogue,
            rooms_known=rooms_known,
        )
        self.acceptor = Acceptor(
            client=client,
            settings=settings,
            db=db,
            queue=queue,
            tasks=tasks,
            metrics=metrics,
            pending=self.pending,
            defaults=defaults,
            statuses=Statuses(
                client, db, queue, settings.progress, slots, pressure, self.backlog, tasks
            ),
            screener=self.screener,
            delivery=self.delivery,
            iterator=Iterator(client, settings, db, catalogue),
        )
        self.replies = Replies(client, settings, db, queue, catalogue, self.pending, defaults)
        self.reactions = Reactions(
            client=client,
            settings=settings,
            db=db,
            queue=queue,
            pending=self.pending,
            when_stored=when_stored,
            acceptor=self.acceptor,
            replies=self.replies,
        )
        self.intake = Intake(
            client=client,
            settings=settings,
            db=db,
            queue=queue,
            tasks=tasks,
            disk=disk,
            when_stored=when_stored,
            pending=self.pending,
            rooms_known=rooms_known,
            acceptor=self.acceptor,
            replies=self.replies,
            reactions=self.reactions,
            beat=beat,
        )
        self.resumer = Resumer(
            client=client,
            settings=settings,
            db=db,
            tasks=tasks,
            rooms_known=rooms_known,
            acceptor=self.acceptor,
            delivery=self.delivery,
        )
        # What bot.app and the sync loop drive.
        self.on_sync = self.intake.on_sync
        self.on_event = self.intake.on_event
        self.undecrypted = self.intake.undecrypted
        self.resume = self.resumer.resume
