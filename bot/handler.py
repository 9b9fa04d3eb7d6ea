"""What the bot does with what it receives: invites, commands, redactions, finished jobs.

Data flows one way: event -> parsed command -> job -> queue -> result -> reply -> usage row.
Handling an event is quick (parse, record, enqueue); waiting for the GPU and delivering
the picture happen in a task of their own, so the sync loop never waits for the GPU.
The commands that only read or change settings (room, queue, usage) are in `replies.py`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from dataclasses import asdict, dataclass
from typing import Any

from nio import AsyncClient, InviteMemberEvent, SyncResponse

from generation.job import Job, Result
from generation.png import encode_png, encode_thumbnail
from generation.queue import GenerationQueue, QueueFull, Ticket

from . import db as database
from . import messages, quotas, rooms, usage
from .commands import Generate, UsageError, parse
from .config import Settings
from .resolve import Catalogue, resolve
from .sheet import contact_sheet
from .tasks import TaskOwner
from .text import plural

log = logging.getLogger(__name__)


def matches(user_id: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(user_id, pattern) for pattern in patterns)


def _is_edit(content: dict[str, Any]) -> bool:
    return ("m.new_content" in content
            or messages.relation_of(content).get("rel_type") == "m.replace")


def _redacted_id(event: dict[str, Any]) -> str | None:
    # Room versions up to 10 put `redacts` at the top level; version 11 in the content.
    redacts = event.get("redacts") or (event.get("content") or {}).get("redacts")
    return redacts if isinstance(redacts, str) else None


@dataclass
class Pending:
    """A job that was accepted and whose answer has not been sent yet."""

    ticket: Ticket
    prompt: str  # as the person typed it, before any style
    room_id: str
    withdrawn: bool = False  # its command was redacted while it ran: send nothing


def caption(result: Result, prompt: str, index: int = 0, default_model: str = "") -> str:
    job = result.job
    parts = [f"seed {job.seed + index}", f"{job.steps} steps", f"{job.width}×{job.height}"]
    if job.style:
        parts.append(f"style {job.style}")
    if job.model and job.model != default_model:
        parts.append(f"model {job.model}")
    if job.count > 1:
        parts.insert(0, f"picture {index + 1} of {job.count}")
        timing = (f"{result.generation_seconds:.1f} s for all {job.count} "
                  f"(waited {result.queue_seconds:.1f} s)")
    else:
        timing = f"{result.generation_seconds:.1f} s (waited {result.queue_seconds:.1f} s)"
    return f"{prompt} — {' · '.join(parts)} · {timing}"


class Bot:
    def __init__(self, client: AsyncClient, settings: Settings, db, queue: GenerationQueue,
                 tasks: TaskOwner):
        from .replies import Replies

        self.client = client
        self.settings = settings
        self.db = db
        self.queue = queue
        self.tasks = tasks
        runner = queue.runner
        self.catalogue = Catalogue(
            default_model=runner.name,
            models={name: runner.native_size(name) for name in runner.models},
            styles=settings.style_catalogue)
        self.pending: dict[str, Pending] = {}  # by the command's event ID
        self.replies = Replies(self)

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
        if event.get("sender") == self.me:
            return
        if event.get("type") == "m.room.redaction":
            self.on_redaction(room_id, event)
            return
        content = event.get("content") or {}
        if (event.get("type") != "m.room.message" or content.get("msgtype") != "m.text"
                or _is_edit(content)):
            return
        command = parse(str(content.get("body", "")), self.settings.matrix.command_prefix,
                        self.settings.limits)
        if command is None:
            return
        sender = event["sender"]
        if not matches(sender, self.settings.matrix.allowed_users):
            log.info("ignoring a command from %s, who is not in allowed_users", sender)
            return
        if not await database.claim_event(self.db, event["event_id"],
                                       event.get("origin_server_ts", 0) / 1000):
            return  # answered already, before a restart
        if isinstance(command, UsageError):
            await self.reject(room_id, event, command.message, prompt=str(content.get("body")))
        elif isinstance(command, Generate):
            await self.on_generate(room_id, event, command)
        else:
            await self.replies.answer(room_id, event, command)

    def on_redaction(self, room_id: str, event: dict[str, Any]) -> None:
        """A redacted command that is still queued is cancelled; one already running is
        finished but not posted (what was posted stays). The homeserver has checked that the
        redaction was allowed in this room; a redaction in another room changes nothing."""
        pending = self.pending.get(_redacted_id(event) or "")
        if pending is None or pending.room_id != room_id:
            return
        if not self.queue.cancel(lambda ticket: ticket is pending.ticket):
            pending.withdrawn = True
        log.info("the command of job %d was redacted by %s", pending.ticket.id, event["sender"])

    # ---- generation ----------------------------------------------------------------------

    async def reject(self, room_id: str, event: dict[str, Any], message: str,
                     prompt: str, job: Job | None = None) -> None:
        await usage.record_job(self.db, usage.NewJob(
            event["event_id"], room_id, event["sender"], prompt,
            asdict(job) if job else {}, job.seed if job else None,
            job.model if job else None), status="rejected", error=message)
        await messages.send_notice(self.client, room_id, message, reply_to=event)

    async def room_defaults(self, room_id: str):
        return rooms.usable(await rooms.stored(self.db, room_id), self.settings.limits,
                            self.catalogue)

    async def on_generate(self, room_id: str, event: dict[str, Any], command: Generate) -> None:
        sender = event["sender"]
        room, _ = await self.room_defaults(room_id)
        job = resolve(command, self.settings.generation, self.settings.limits, self.catalogue,
                      room)
        if isinstance(job, UsageError):
            await self.reject(room_id, event, job.message, prompt=command.prompt)
            return
        over = await quotas.refusal(self.db, sender, job.count, self.settings.quotas,
                                    exempt=matches(sender, self.settings.quotas.exempt))
        if over is not None:
            await self.reject(room_id, event, over, prompt=command.prompt, job=job)
            return
        try:
            ticket = self.queue.submit(job, owner=sender, tag=event["event_id"])
        except QueueFull as exc:
            await self.reject(room_id, event, str(exc), prompt=command.prompt, job=job)
            return
        row = await usage.record_job(self.db, usage.NewJob(
            event["event_id"], room_id, sender, command.prompt, asdict(job), job.seed,
            job.model))
        pending = Pending(ticket, command.prompt, room_id)
        self.pending[event["event_id"]] = pending
        if ticket.ahead or self.queue.paused:
            await messages.send_notice(self.client, room_id, _queued_text(ticket, self.queue),
                                       reply_to=event)
        self.tasks.spawn(self.deliver(event, pending, row), name=f"deliver-{ticket.id}")

    async def deliver(self, event: dict[str, Any], pending: Pending, row: int) -> None:
        try:
            await self._deliver(event, pending, row)
        finally:
            # Kept until everything is sent, so a redaction while uploading still counts.
            self.pending.pop(event["event_id"], None)

    async def _deliver(self, event: dict[str, Any], pending: Pending, row: int) -> None:
        result: Result = await pending.ticket.result
        room_id = pending.room_id
        if result.cancelled or pending.withdrawn:
            await usage.finish_job(self.db, row, status="cancelled", error="cancelled",
                                   queue_seconds=result.queue_seconds,
                                   generation_seconds=result.generation_seconds or None)
            return
        if not result.ok:
            await usage.finish_job(self.db, row, status="error", error=result.error,
                                   queue_seconds=result.queue_seconds)
            await messages.send_notice(self.client, room_id, f"Sorry, that failed. {result.error}",
                                       reply_to=event)
            return
        sent = await self._send_pictures(event, pending, result)
        if pending.withdrawn:
            status, error = "cancelled", "the command was redacted while it was being sent"
        elif sent:
            status, error = "ok", None
        else:
            status, error = "error", "the picture could not be delivered"
        await usage.finish_job(
            self.db, row, status=status, error=error, images=sent,
            queue_seconds=result.queue_seconds, generation_seconds=result.generation_seconds)

    async def _send_pictures(self, event: dict[str, Any], pending: Pending,
                             result: Result) -> int:
        """Each picture as its own reply, then a contact sheet of them all; returns how many
        pictures arrived."""
        job = result.job
        params = job.parameters(result.model)
        sent = 0
        for index, image in enumerate(result.images):
            if pending.withdrawn:
                return sent
            # Encoding runs in a thread, beside the next generation on the GPU.
            png, thumbnail = await asyncio.to_thread(
                _encode, image, {**params, "seed": job.seed + index})
            event_id = await messages.send_image(
                self.client, pending.room_id, png, width=image.width, height=image.height,
                filename=f"imgbot-{job.seed + index}.png",
                caption=caption(result, pending.prompt, index, self.catalogue.default_model),
                reply_to=event, thumbnail=thumbnail)
            sent += event_id is not None
        if len(result.images) > 1 and not pending.withdrawn:
            sheet, width, height = await asyncio.to_thread(_encode_sheet, result, params)
            await messages.send_image(
                self.client, pending.room_id, sheet, width=width, height=height,
                filename=f"imgbot-{job.seed}-sheet.png",
                caption=f"{pending.prompt} — all {len(result.images)} pictures, seeds "
                        f"{job.seed}–{job.seed + job.count - 1}", reply_to=event)
        return sent


def _encode(image, params: dict[str, Any]) -> tuple[bytes, messages.Picture | None]:
    thumbnail = encode_thumbnail(image)
    return encode_png(image, params), (
        messages.Picture(*thumbnail, mimetype="image/jpeg") if thumbnail else None)


def _encode_sheet(result: Result, params: dict[str, Any]) -> tuple[bytes, int, int]:
    job = result.job
    labels = [f"seed {job.seed + i}" for i in range(len(result.images))]
    image = contact_sheet(list(result.images), labels, cell=min(384, max(job.width, job.height)))
    png = encode_png(image, {**params, "seed": f"{job.seed}-{job.seed + job.count - 1}"})
    return png, image.width, image.height


def _queued_text(ticket: Ticket, queue: GenerationQueue) -> str:
    if queue.paused:
        return (f"Queued: the queue is paused by a bot admin; {plural(ticket.ahead, 'job')} "
                "ahead of yours.")
    eta = f", about {ticket.eta_seconds:.0f} s" if ticket.eta_seconds is not None else ""
    return f"Queued: {plural(ticket.ahead, 'job')} ahead of yours{eta}."
