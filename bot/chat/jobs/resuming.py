"""Resuming at start what the previous run accepted and did not answer: queued again in
their order, or answered with a notice when they are too old, unreadable, or may have caused
the crashes themselves."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import replace

from nio import AsyncClient

from bot.chat.jobs.accepting import Acceptor
from bot.chat.jobs.delivery import Delivery
from bot.chat.language.captions import age_words
from bot.chat.language.rich import rich
from bot.chat.jobs import source_pictures
from bot.config import Settings
from bot.matrix import messages, sources
from bot.ops.tasks import TaskOwner
from bot.store import jobs
from bot.store.jobs import StoredJob
from bot.store.usage import JobStatus

log = logging.getLogger(__name__)


# A job whose run ended this many times without an answer (the bot crashed or was killed
# each time) is answered with a notice instead of being made again: it may be the cause.
MAX_STARTS = 3


class Resumer:
    """Takes up, once at start, the jobs the previous run left unanswered."""

    def __init__(
        self,
        *,
        client: AsyncClient,
        settings: Settings,
        db,
        tasks: TaskOwner,
        rooms_known: asyncio.Event,
        acceptor: Acceptor,
        delivery: Delivery,
    ):
        self.client, self.settings, self.db, self.tasks = client, settings, db, tasks
        self.rooms_known = rooms_known  # a notice waits for the first sync
        self.acceptor = acceptor  # queues a job again
        self.delivery = delivery  # writes down the end of one that is not

    async def resume(self) -> None:
        """Answer what the previous run accepted and did not answer: young jobs (and any
        whose answer was partly posted) are queued again in their order; old ones, ones
        that could not be read, and ones that were started MAX_STARTS times without an
        answer (a crash they may cause themselves) get a notice instead."""
        max_age = self.settings.limits.resume_max_age_minutes * 60
        resumed = given_up = 0
        for stored in await jobs.unfinished(self.db):
            age = time.time() - stored.created_at
            if stored.job is None:
                why = "this imgbot cannot read the request any more"
            elif stored.starts > MAX_STARTS and not stored.parts_sent:
                why = f"the bot stopped {stored.starts - 1} times while making it"
            elif age > max_age and not stored.parts_sent:
                why = (
                    f"the bot stopped before it was done, and the request is now "
                    f"{age_words(age)} old"
                )
            else:
                try:
                    stored, why = await self._with_source(stored)
                except sources.Unavailable:
                    # The homeserver is away: the picture is fetched (and the job queued)
                    # once it is back, without holding up the start.
                    self.tasks.spawn(
                        self._resume_when_reachable(stored), name=f"resume-{stored.event_id}"
                    )
                    resumed += 1
                    continue
                if why is None:
                    self.acceptor.start(stored, resumed=True)
                    resumed += 1
                    continue
            given_up += 1
            # In a task: its notice waits for the first sync (rooms_known), which comes
            # after this.
            self.tasks.spawn(self._give_up(stored, why), name=f"give-up-{stored.event_id}")
        if resumed or given_up:
            log.info(
                "resumed %d unfinished jobs of the previous run; answered %d with a notice instead",
                resumed,
                given_up,
            )

    async def _resume_when_reachable(self, stored: StoredJob) -> None:
        for attempt in itertools.count():
            await asyncio.sleep(min(messages.RETRY_CAP, 2.0**attempt))
            try:
                stored, why = await self._with_source(stored)
            except sources.Unavailable:
                continue
            if why is None:
                self.acceptor.start(stored, resumed=True)
            else:
                await self._give_up(stored, why)
            return

    async def _give_up(self, stored: StoredJob, why: str) -> None:
        await self.rooms_known.wait()
        await messages.send_notice(
            self.client,
            stored.room_id,
            rich(
                "**Sorry, this was not made:** {why}. Send it again if you still want it.",
                why=why,
            ),
            reply_to=stored.command,
            txn_id=messages.txn_id(stored.event_id, "given-up"),
        )
        await self.delivery.finish(stored, status=JobStatus.ERROR, error=f"not resumed: {why}")

    async def _with_source(self, stored: StoredJob) -> tuple[StoredJob, str | None]:
        """A resumed job that starts from a picture gets that picture fetched again (it is
        not kept in the job store); or why it cannot be. Raises sources.Unavailable when
        the homeserver cannot be asked now."""
        job = stored.job
        if job.kind == "txt2img" or job.image is not None:
            return stored, None
        try:
            job = await source_pictures.refetched(self.client, job, self.settings.limits)
        except sources.Unavailable:
            raise
        except source_pictures.ReferenceUnusable as exc:
            return stored, (
                f"its reference picture (the thread's first picture) could not "
                f"be used again ({exc})"
            )
        except sources.SourceError as exc:
            return stored, f"the picture it starts from could not be used again ({exc})"
        return replace(stored, job=job), None
