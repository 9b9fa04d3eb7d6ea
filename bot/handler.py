"""What the bot does with what it receives: invites, commands, and finished jobs.

Data flows one way: event -> parsed command -> job -> queue -> result -> reply -> usage row.
Handling an event is quick (parse, record, enqueue); waiting for the GPU and delivering
the picture happen in a task of their own, so the sync loop never waits for the GPU.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from dataclasses import asdict
from typing import Any

from nio import AsyncClient, InviteMemberEvent, SyncResponse

from generation.job import Job, Result
from generation.png import encode_png
from generation.queue import GenerationQueue, QueueFull, Ticket

from . import db as database
from . import messages, usage
from .commands import Generate, Help, UsageError, help_text, parse, resolve
from .config import Settings
from .tasks import TaskOwner

log = logging.getLogger(__name__)


def matches(user_id: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(user_id, pattern) for pattern in patterns)


def _is_edit(content: dict[str, Any]) -> bool:
    return ("m.new_content" in content
            or messages.relation_of(content).get("rel_type") == "m.replace")


def caption(result: Result) -> str:
    job = result.job
    return (f"{job.prompt} — seed {job.seed} · {job.steps} steps · {job.width}×{job.height} · "
            f"{result.generation_seconds:.1f} s (waited {result.queue_seconds:.1f} s)")


class Bot:
    def __init__(self, client: AsyncClient, settings: Settings, db, queue: GenerationQueue,
                 tasks: TaskOwner):
        self.client = client
        self.settings = settings
        self.db = db
        self.queue = queue
        self.tasks = tasks
        self.model = queue.runner.name

    @property
    def me(self) -> str:
        return self.client.user_id

    # ---- sync ----------------------------------------------------------------------------

    async def on_sync(self, response: SyncResponse, first: bool) -> None:
        for room_id, info in response.rooms.invite.items():
            await self._guarded(self.on_invite(room_id, info.invite_state), room_id)
        if first:
            return  # history: commands sent before the bot's first start are not answered
        for room_id, info in response.rooms.join.items():
            for event in info.timeline.events:
                await self._guarded(self.on_event(room_id, event.source), room_id)

    async def _guarded(self, handling, room_id: str) -> None:
        """One event that cannot be handled must not stop the bot for everyone else."""
        try:
            await handling
        except Exception:
            log.exception("could not handle an event in %s", room_id)

    async def on_invite(self, room_id: str, invite_state: list) -> None:
        inviter = next((e.sender for e in invite_state if isinstance(e, InviteMemberEvent)
                        and e.state_key == self.me and e.membership == "invite"), None)
        if inviter is not None and matches(inviter, self.settings.matrix.allowed_users):
            response = await self.client.join(room_id)
            log.info("joined %s on the invite of %s: %s", room_id, inviter,
                     getattr(response, "room_id", response))
        else:
            # Invites from anyone else are declined, so they do not pile up.
            log.info("declining the invite to %s from %s", room_id, inviter)
            await self.client.room_leave(room_id)

    async def on_event(self, room_id: str, event: dict[str, Any]) -> None:
        content = event.get("content") or {}
        if (event.get("type") != "m.room.message" or content.get("msgtype") != "m.text"
                or event.get("sender") == self.me or _is_edit(content)):
            return
        command = parse(str(content.get("body", "")), self.settings.matrix.command_prefix,
                        self.settings.limits)
        if command is None:
            return
        sender = event["sender"]
        if not matches(sender, self.settings.matrix.allowed_users):
            log.info("ignoring a command from %s, who is not in allowed_users", sender)
            return
        if not await database.claim_event(self.db, event["event_id"], event.get("origin_server_ts", 0) / 1000):
            return  # answered already, before a restart
        if isinstance(command, Help):
            await messages.send_notice(self.client, room_id, help_text(
                self.settings.matrix.command_prefix, self.settings.limits), reply_to=event)
        elif isinstance(command, UsageError):
            await self._reject(room_id, event, command.message, prompt=str(content.get("body")))
        elif isinstance(command, Generate):
            await self.on_generate(room_id, event, command)

    # ---- generation ----------------------------------------------------------------------

    async def _reject(self, room_id: str, event: dict[str, Any], message: str,
                      prompt: str, job: Job | None = None) -> None:
        await usage.record_job(self.db, usage.NewJob(
            event["event_id"], room_id, event["sender"], prompt,
            asdict(job) if job else {}, job.seed if job else None, self.model),
            status="rejected", error=message)
        await messages.send_notice(self.client, room_id, message, reply_to=event)

    async def on_generate(self, room_id: str, event: dict[str, Any], command: Generate) -> None:
        job = resolve(command, self.settings.generation)
        try:
            ticket = self.queue.submit(job, owner=event["sender"])
        except QueueFull as exc:
            await self._reject(room_id, event, str(exc), prompt=job.prompt, job=job)
            return
        row = await usage.record_job(self.db, usage.NewJob(
            event["event_id"], room_id, event["sender"], job.prompt, asdict(job), job.seed,
            self.model))
        if ticket.ahead:
            eta = f", about {ticket.eta_seconds:.0f} s" if ticket.eta_seconds is not None else ""
            await messages.send_notice(
                self.client, room_id,
                f"Queued: {ticket.ahead} job{'s' if ticket.ahead > 1 else ''} ahead of yours{eta}.",
                reply_to=event)
        self.tasks.spawn(self.deliver(room_id, event, ticket, row), name=f"deliver-{ticket.id}")

    async def deliver(self, room_id: str, event: dict[str, Any], ticket: Ticket, row: int) -> None:
        result: Result = await ticket.result
        if not result.ok:
            await usage.finish_job(self.db, row, status="error", error=result.error,
                                   queue_seconds=result.queue_seconds)
            await messages.send_notice(self.client, room_id, f"Sorry, that failed. {result.error}",
                                       reply_to=event)
            return
        job = result.job
        params = job.parameters(result.model)
        sent = 0
        for index, image in enumerate(result.images):
            # Encoding runs in a thread, beside the next generation on the GPU.
            png = await asyncio.to_thread(encode_png, image, {**params, "seed": job.seed + index})
            event_id = await messages.send_image(
                self.client, room_id, png, width=image.width, height=image.height,
                filename=f"imgbot-{job.seed + index}.png", caption=caption(result),
                reply_to=event)
            sent += event_id is not None
        await usage.finish_job(
            self.db, row, status="ok" if sent else "error",
            error=None if sent else "the picture could not be delivered", images=sent,
            queue_seconds=result.queue_seconds, generation_seconds=result.generation_seconds)
