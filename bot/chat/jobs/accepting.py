"""Accepting a command that makes pictures: its job built and checked (blocklist, quota,
queue), written down with its usage row before any GPU work, queued, and handed to delivery.
A refused command gets its notice and a usage row of its own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nio import AsyncClient

from generation.job import Job
from generation.scheduling.queue import GenerationQueue, QueueFull

from bot.chat.jobs import quotas
from bot.chat.language.commands import UsageError
from bot.chat.language.rich import RichText, as_rich, rich
from bot.chat.defaults import Defaults
from bot.chat.jobs.pending import Pending, PendingJobs
from bot.chat.jobs.screening import Screener
from bot.chat.jobs.delivery import Delivery
from bot.chat.jobs.iterate import Iterator
from bot.chat.jobs.locks import Locks
from bot.chat.jobs.status import Statuses
from bot.config import Settings
from bot.matrix import messages
from bot.ops.metrics import Metrics
from bot.ops.tasks import TaskOwner
from bot.store import db as database
from bot.store import jobs, usage
from bot.store.jobs import StoredJob
from bot.store.usage import JobStatus
from bot.store.retention import options_for_log, prompt_for_log


class Acceptor:
    """Turns a command that makes pictures into a stored, queued job, or refuses it."""

    def __init__(
        self,
        *,
        client: AsyncClient,
        settings: Settings,
        db,
        queue: GenerationQueue,
        tasks: TaskOwner,
        metrics: Metrics,
        pending: PendingJobs,
        defaults: Defaults,
        statuses: Statuses,
        screener: Screener,
        delivery: Delivery,
        iterator: Iterator,
    ):
        self.client, self.settings, self.db, self.queue = client, settings, db, queue
        self.tasks = tasks
        self.metrics = metrics
        self.pending = pending
        self.defaults = defaults
        self.statuses = statuses
        self.screener = screener  # its blocklist refuses a prompt before any GPU work
        self.delivery = delivery
        self.iterator = iterator
        self._people = Locks()  # one a person whose jobs are being checked and accepted

    def logged(
        self, event: dict[str, Any], room_id: str, prompt: str, job: Job | None
    ) -> usage.NewJob:
        """The usage row of a command, with the prompt kept or hashed as configured."""
        store = self.settings.usage.store_prompts
        # A picture of an encrypted room is a source with its key (for restarts and for
        # `again`); the usage log keeps only where it was.
        options = (
            options_for_log(
                {**job.record(), "source": job.source_url, "references": job.reference_urls}, store
            )
            if job
            else {}
        )
        return usage.NewJob(
            event["event_id"],
            room_id,
            event["sender"],
            prompt_for_log(prompt, store),
            options,
            job.seed if job else None,
            job.model if job else None,
        )

    async def reject(
        self,
        room_id: str,
        event: dict[str, Any],
        message: RichText | str,
        prompt: str,
        job: Job | None = None,
    ) -> None:
        """Refuse a command: its usage row keeps the plain text, the notice says it (a str
        is plain text)."""
        message = as_rich(message)
        async with database.writing(self.db):
            await database.insert_claim(self.db, event["event_id"], time.time())
            await usage.insert_job(
                self.db,
                self.logged(event, room_id, prompt, job),
                status=JobStatus.REJECTED,
                error=message.plain(),
            )
        self.metrics.job_rejected()
        await messages.send_notice(self.client, room_id, message, reply_to=event)

    async def on_generate(self, room_id: str, event: dict[str, Any], command) -> None:
        """A command that makes pictures: a prompt, or again/vary/upscale of a picture."""
        sender = event["sender"]
        here = await self.defaults.here(room_id, sender)
        made = await self.iterator.job_for(room_id, event, command, here)
        if isinstance(made, UsageError):
            await self.reject(
                room_id,
                event,
                made.text,
                prompt=getattr(command, "prompt", str(event["content"]["body"])),
            )
            return
        job, prompt = made
        screening = self.screener.loaded
        # In a thread: an operator's pattern may take up to its time limit (safety.py).
        if (
            screening is not None
            and job.kind != "upscale"
            and await asyncio.to_thread(screening.compliance.blocklist.blocked, job.prompt)
            is not None
        ):
            # Refused before any GPU work; the check before sending stays as a safeguard.
            await self.reject(
                room_id,
                event,
                rich(
                    "Sorry, the prompt contains a blocked term (`compliance.blocklist`), "
                    "so **nothing was made**."
                ),
                prompt=prompt,
                job=job,
            )
            return
        # Each room's commands are handled in a lane of their own: the limits are checked,
        # and the job written down and queued, under the person's lock, else commands sent
        # at once from several rooms would all pass the checks before any was counted.
        async with self._people.holding(sender):
            refused = await self._refusal(sender, job)
            if refused is None:
                # Written down before any GPU work starts: from here on, the job is answered
                # exactly once, whatever happens to the bot in between.
                stored = await jobs.accept(
                    self.db,
                    event,
                    room_id,
                    prompt,
                    job,
                    self.logged(event, room_id, prompt, job),
                    messages.reply_target(event),
                )
                self.start(stored)
        if refused is not None:
            await self.reject(room_id, event, refused, prompt=prompt, job=job)

    async def _refusal(self, sender: str, job: Job) -> RichText | str | None:
        """Why the person's quotas or share of the queue leave no room for `job` now."""
        over = await quotas.refusal(
            self.db,
            sender,
            job.count,
            self.settings.quotas,
            exempt=self.settings.quotas.exempts(sender),
        )
        if over is not None:
            return over
        try:
            self.queue.admit(sender)
        except QueueFull as exc:
            return str(exc)
        return None

    def start(self, stored: StoredJob, resumed: bool = False) -> Pending:
        """Queue a stored job, the task that answers it and the one that shows its status
        (a resumed job is not told it waits: its room heard from it before the restart).
        The queue's limits were checked when it was accepted (or before the restart)."""
        ticket = self.queue.submit(
            stored.job, owner=stored.sender, tag=stored.event_id, check_limits=False
        )
        pending = self.pending.add(ticket, stored)
        pending.status = self.statuses.of(pending, tell_waiting=not resumed)
        self.tasks.spawn(self.delivery.deliver(pending), name=f"deliver-{ticket.id}")
        return pending
