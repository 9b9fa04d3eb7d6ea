"""What the bot does with what it receives: invites, commands, redactions, finished jobs.

Data flows one way: event -> parsed command -> job -> queue -> result -> reply -> usage row.
Handling an event is quick (parse, record, enqueue); waiting for the GPU and delivering
the picture happen in a task of their own, so the sync loop never waits for the GPU.
The commands that only read or change settings (room, queue, usage) are in `replies.py`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from nio import AsyncClient, InviteMemberEvent, JoinResponse, MegolmEvent, SyncResponse

from generation.compliance.checks import SigningFailed
from generation.job import Job, Result
from generation.png import encode_for_upload, encode_thumbnail
from generation.queue import GenerationQueue, QueueFull, Ticket

from bot.store import db as database
from bot.matrix import encryption, messages, sources
from bot.store import gallery, jobs, usage
from bot.chat import quotas, rooms
from bot.chat.commands import ON_A_PICTURE, Generate, UsageError, parse
from bot.config import Settings
from bot.chat.iterate import Iterator, fitted
from bot.store.jobs import StoredJob
from bot.ops.metrics import Metrics
from bot.chat.resolve import Catalogue
from bot.store.retention import options_for_log, prompt_for_log
from bot.chat.screening import Screening
from bot.chat.sheet import contact_sheet
from bot.ops.tasks import TaskOwner
from bot.text import plural

log = logging.getLogger(__name__)

# A job whose run ended this many times without an answer (the bot crashed or was killed
# each time) is answered with a notice instead of being made again: it may be the cause.
MAX_STARTS = 3


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
    stored: StoredJob
    # Set when its answer is sent (or will never be): the next job of the room waits for it.
    answered: asyncio.Future
    # The previous job of the same room, answered before this one is.
    after: asyncio.Future | None = None
    withdrawn: bool = False  # its command was redacted while it ran: send nothing

    @property
    def prompt(self) -> str:  # as the person typed it, before any style
        return self.stored.prompt

    @property
    def room_id(self) -> str:
        return self.stored.room_id

    def txn(self, part: str) -> str:
        return messages.txn_id(self.stored.event_id, part)


def caption(result: Result, prompt: str, index: int = 0, default_model: str = "",
            upscaler: str = "") -> str:
    job = result.job
    if job.kind == "upscale":
        how = (f"with {upscaler}" if upscaler and upscaler != "Lanczos" else
               "with a Lanczos resize (no AI upscaler is configured)")
        done = f"upscaled {job.factor}× to {job.width}×{job.height} {how}"
        if job.enhance:
            done += " · enhanced"
        return (f"{prompt + ' — ' if prompt else ''}{done} · "
                f"{result.generation_seconds:.1f} s (waited {result.queue_seconds:.1f} s)")
    parts = [f"seed {job.seed + index}", f"{job.steps} steps", f"{job.width}×{job.height}"]
    if job.kind == "img2img":
        parts.insert(0, f"from the picture replied to, strength {job.strength:g}")
    if job.style:
        parts.append(f"style {job.style}")
    if job.model and job.model != default_model:
        parts.append(f"model {job.model}")
    if job.enhance:
        parts.append("enhanced")
    batch = result.extra.get("batch_pictures", 0)
    if job.count > 1:
        parts.insert(0, f"picture {index + 1} of {job.count}")
    if batch > job.count:
        # Made in one call with other jobs: the time is the whole call's, and says so.
        timing = (f"{result.generation_seconds:.1f} s for a batch of {batch} pictures "
                  f"(waited {result.queue_seconds:.1f} s)")
    elif job.count > 1:
        timing = (f"{result.generation_seconds:.1f} s for all {job.count} "
                  f"(waited {result.queue_seconds:.1f} s)")
    else:
        timing = f"{result.generation_seconds:.1f} s (waited {result.queue_seconds:.1f} s)"
    return f"{prompt} — {' · '.join(parts)} · {timing}"


class Bot:
    def __init__(self, client: AsyncClient, settings: Settings, db, queue: GenerationQueue,
                 tasks: TaskOwner, metrics: Metrics | None = None,
                 beat: Callable[[], None] = lambda: None):
        from bot.chat.replies import Replies

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
        # The answer of each room's newest job: answers in a room come in the order the
        # commands were accepted, though the next picture is made while one is uploading.
        self._last_in_room: dict[str, asyncio.Future] = {}
        self.replies = Replies(self)
        self.iterator = Iterator(self)
        self.upload_limit: int | None = None  # the homeserver's m.upload.size, once known
        self.metrics = metrics or Metrics()
        self.beat = beat  # progress, for the watchdog: called after each event
        self.undecrypted = encryption.Undecrypted(client, self.on_event, self._undecryptable)
        # Set by the first sync: until then nio does not know which rooms are encrypted
        # (with encryption on it cannot send to them; with it off, the guard against
        # sending in the clear could not work). The answers of resumed jobs wait for it.
        self.rooms_known = asyncio.Event()
        # The compliance checks: loaded at start by bot.app, else at the first picture.
        self.screening: Screening | None = None
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

    # ---- sync ----------------------------------------------------------------------------

    async def on_sync(self, response: SyncResponse, first: bool) -> None:
        self.rooms_known.set()
        try:
            await encryption.keep_keys(self.client)
        except messages.NETWORK_ERRORS as exc:  # tried again after the next sync
            log.warning("could not update the encryption keys: %s", exc)
        for room_id, info in response.rooms.invite.items():
            await self._guarded(self.on_invite(room_id, info.invite_state), room_id)
        if not self.settings.matrix.encryption:
            for room_id in response.rooms.join:
                if messages.is_encrypted(self.client, room_id):
                    await self._guarded(self._leave_encrypted(room_id), room_id)
        if first:
            return  # history: commands sent before the bot's first start are not answered
        for room_id, info in response.rooms.join.items():
            room = getattr(self.client, "rooms", {}).get(room_id)
            if info.timeline.limited and room is not None and room.encrypted:
                # Lazy-loaded members: people who joined in the gap are not in nio's view,
                # and would not get the room key of the bot's answers.
                room.members_synced = False
            for event in info.timeline.events:
                if isinstance(event, MegolmEvent):  # its room key has not arrived (yet)
                    await self._guarded(self.undecrypted.add(room_id, event), room_id)
                else:
                    await self._guarded(self.on_event(room_id, event.source), room_id)
        await self._guarded(self.undecrypted.retry(), "rooms waiting for keys")

    async def _guarded(self, handling, room_id: str) -> None:
        """One event that cannot be handled must not stop the bot for everyone else."""
        try:
            await handling
        except Exception:
            log.exception("could not handle an event in %s", room_id)
        self.beat()

    async def on_invite(self, room_id: str, invite_state: list) -> None:
        inviter = next((e.sender for e in invite_state if isinstance(e, InviteMemberEvent)
                        and e.state_key == self.me and e.membership == "invite"), None)
        if inviter is not None and matches(inviter, self.settings.matrix.allowed_users):
            response = await self.client.join(room_id)
            if isinstance(response, JoinResponse):
                log.info("joined %s on the invite of %s", room_id, inviter)
            else:
                log.warning("could not join %s on the invite of %s: %s", room_id, inviter,
                            getattr(response, "message", type(response).__name__))
        else:
            # Invites from anyone else are declined, so they do not pile up.
            log.info("declining the invite to %s from %s", room_id, inviter)
            await self.client.room_leave(room_id)

    async def _leave_encrypted(self, room_id: str) -> None:
        """With matrix.encryption off, an encrypted room gets one notice, in the clear (the
        bot has no keys), saying why the bot leaves; it never answers there unencrypted."""
        log.warning("leaving %s: it is encrypted and matrix.encryption is off", room_id)
        content = {"msgtype": "m.notice", "body": (
            "This room is end-to-end encrypted and this bot runs with encryption turned "
            "off (matrix.encryption: false), so it cannot work here and leaves. Ask its "
            "admin to turn encryption on, or invite it to an unencrypted room.")}
        try:
            await self.client.room_send(room_id, "m.room.message", content,
                                        tx_id=f"imgbot-leave-{room_id}")
        finally:
            await self.client.room_leave(room_id)

    async def _undecryptable(self, room_id: str, event: dict[str, Any], text: str) -> None:
        if matches(str(event.get("sender")), self.settings.matrix.allowed_users):
            await messages.send_notice(self.client, room_id, text, reply_to=event)

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
        if await database.was_handled(self.db, event["event_id"]):
            return  # answered already, before a restart
        # A refused or accepted command is claimed in the same transaction as its usage row
        # (and its job), so that a crash between the two loses neither; the others now.
        if isinstance(command, UsageError):
            await self.reject(room_id, event, command.message, prompt=str(content.get("body")))
        elif isinstance(command, (Generate, *ON_A_PICTURE)):
            await self.on_generate(room_id, event, command)
        else:
            await database.claim_event(self.db, event["event_id"], time.time())
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

    def logged(self, event: dict[str, Any], room_id: str, prompt: str,
               job: Job | None) -> usage.NewJob:
        """The usage row of a command, with the prompt kept or hashed as configured."""
        store = self.settings.usage.store_prompts
        # A picture of an encrypted room is a source with its key (for restarts and for
        # `again`); the usage log keeps only where it was.
        options = options_for_log({**job.record(), "source": job.source_url}, store) \
            if job else {}
        return usage.NewJob(event["event_id"], room_id, event["sender"],
                            prompt_for_log(prompt, store), options,
                            job.seed if job else None, job.model if job else None)

    async def reject(self, room_id: str, event: dict[str, Any], message: str,
                     prompt: str, job: Job | None = None) -> None:
        async with database.writing(self.db):
            await database.insert_claim(self.db, event["event_id"], time.time())
            await usage.insert_job(self.db, self.logged(event, room_id, prompt, job),
                                   status="rejected", error=message)
        self.metrics.job_rejected()
        await messages.send_notice(self.client, room_id, message, reply_to=event)

    async def room_defaults(self, room_id: str):
        return rooms.usable(await rooms.stored(self.db, room_id), self.settings.limits,
                            self.catalogue)

    async def on_generate(self, room_id: str, event: dict[str, Any], command) -> None:
        """A command that makes pictures: a prompt, or again/vary/upscale of a picture."""
        sender = event["sender"]
        room, _ = await self.room_defaults(room_id)
        made = await self.iterator.job_for(room_id, event, command, room)
        if isinstance(made, UsageError):
            await self.reject(room_id, event, made.message,
                              prompt=getattr(command, "prompt", str(event["content"]["body"])))
            return
        job, prompt = made
        screening = self.screening
        if (screening is not None and job.kind != "upscale"
                and screening.compliance.blocklist.blocked(job.prompt) is not None):
            # Refused before any GPU work; the check before sending stays as a safeguard.
            await self.reject(room_id, event, "Sorry, the prompt contains a blocked term "
                              "(compliance.blocklist), so nothing was made.",
                              prompt=prompt, job=job)
            return
        over = await quotas.refusal(self.db, sender, job.count, self.settings.quotas,
                                    exempt=matches(sender, self.settings.quotas.exempt))
        if over is not None:
            await self.reject(room_id, event, over, prompt=prompt, job=job)
            return
        try:
            self.queue.admit(sender)
        except QueueFull as exc:
            await self.reject(room_id, event, str(exc), prompt=prompt, job=job)
            return
        # Written down before any GPU work starts: from here on, the job is answered
        # exactly once, whatever happens to the bot in between.
        stored = await jobs.accept(self.db, event, room_id, prompt, job,
                                   self.logged(event, room_id, prompt, job))
        pending = self.start(stored)
        ticket = pending.ticket
        if ticket.ahead or self.queue.paused:
            await messages.send_notice(self.client, room_id, _queued_text(ticket, self.queue),
                                       reply_to=event, txn_id=pending.txn("queued"))

    def start(self, stored: StoredJob) -> Pending:
        """Queue a stored job and the task that answers it. The queue's limits were checked
        when it was accepted (or, for a resumed job, before the restart)."""
        ticket = self.queue.submit(stored.job, owner=stored.sender, tag=stored.event_id,
                                   check_limits=False)
        answered = asyncio.get_running_loop().create_future()
        pending = Pending(ticket, stored, answered, self._last_in_room.get(stored.room_id))
        self._last_in_room[stored.room_id] = answered
        self.pending[stored.event_id] = pending
        self.tasks.spawn(self.deliver(pending), name=f"deliver-{ticket.id}")
        return pending

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
                why = (f"the bot stopped before it was done, and the request is now "
                       f"{_age_words(age)} old")
            else:
                try:
                    stored, why = await self._with_source(stored)
                except sources.Unavailable:
                    # The homeserver is away: the picture is fetched (and the job queued)
                    # once it is back, without holding up the start.
                    self.tasks.spawn(self._resume_when_reachable(stored),
                                     name=f"resume-{stored.event_id}")
                    resumed += 1
                    continue
                if why is None:
                    self.start(stored)
                    resumed += 1
                    continue
            given_up += 1
            # In a task: its notice waits for the first sync (rooms_known), which comes
            # after this.
            self.tasks.spawn(self._give_up(stored, why), name=f"give-up-{stored.event_id}")
        if resumed or given_up:
            log.info("resumed %d unfinished jobs of the previous run; answered %d with a "
                     "notice instead", resumed, given_up)

    async def _resume_when_reachable(self, stored: StoredJob) -> None:
        for attempt in itertools.count():
            await asyncio.sleep(min(messages.RETRY_CAP, 2.0 ** attempt))
            try:
                stored, why = await self._with_source(stored)
            except sources.Unavailable:
                continue
            if why is None:
                self.start(stored)
            else:
                await self._give_up(stored, why)
            return

    async def _give_up(self, stored: StoredJob, why: str) -> None:
        await self.rooms_known.wait()
        await messages.send_notice(
            self.client, stored.room_id,
            f"Sorry, this was not made: {why}. Send it again if you still want it.",
            reply_to=stored.command, txn_id=messages.txn_id(stored.event_id, "given-up"))
        await self._finish(stored, status="error", error=f"not resumed: {why}")

    async def _with_source(self, stored: StoredJob) -> tuple[StoredJob, str | None]:
        """A resumed job that starts from a picture gets that picture fetched again (it is
        not kept in the job store); or why it cannot be. Raises sources.Unavailable when
        the homeserver cannot be asked now."""
        job = stored.job
        if job.kind == "txt2img" or job.image is not None:
            return stored, None
        try:
            source = await sources.fetch(self.client, job.source, None, self.settings.limits)
        except sources.Unavailable:
            raise
        except sources.SourceError as exc:
            return stored, f"the picture it starts from could not be used again ({exc})"
        image = source.image
        if job.kind == "img2img":
            image = await asyncio.to_thread(fitted, image, job.width, job.height)
        return replace(stored, job=replace(job, image=image)), None

    async def deliver(self, pending: Pending) -> None:
        try:
            await self._deliver(pending)
        finally:
            # Kept until everything is sent, so a redaction while uploading still counts.
            self.pending.pop(pending.stored.event_id, None)
            pending.answered.set_result(None)
            room_id = pending.room_id
            if self._last_in_room.get(room_id) is pending.answered:
                del self._last_in_room[room_id]

    async def _deliver(self, pending: Pending) -> None:
        result: Result = await pending.ticket.result
        stored = pending.stored
        if result.interrupted:
            return  # the bot is stopping: the job stays stored, for the next start
        await self.rooms_known.wait()
        if not (result.cancelled or pending.withdrawn) and pending.after is not None:
            await asyncio.shield(pending.after)  # the room's earlier answers come first
        if result.cancelled or pending.withdrawn:
            await self._finish(stored, status="cancelled", error="cancelled",
                               queue_seconds=result.queue_seconds,
                               generation_seconds=result.generation_seconds or None)
            return
        try:
            if not result.ok:
                await messages.send_notice(
                    self.client, stored.room_id, f"Sorry, that failed. {result.error}",
                    reply_to=stored.command, txn_id=pending.txn("failed"),
                    patience=messages.PATIENT, strict=True)
                await self._finish(stored, status="error", error=result.error,
                                   queue_seconds=result.queue_seconds)
                return
            sent, refusal = await self._send_pictures(pending, result)
        except messages.Unreachable as exc:
            # Kept in the job store: the next start makes and sends it again, and what did
            # arrive is recognised by its transaction ID.
            log.error("job %d could not be answered (%s); it is kept for the next start",
                      pending.ticket.id, exc)
            return
        except messages.Refused as exc:
            sent, refusal = 0, str(exc)
        if pending.withdrawn:
            status, error = "cancelled", "the command was redacted while it was being sent"
        elif sent:
            status, error = "ok", None
        elif refusal is WITHHELD:
            status, error = "error", WITHHELD  # the checks' notice said so already
        else:
            status, error = "error", f"the picture could not be delivered: {refusal}"
            why = (f"{refusal}, so it is not sent" if isinstance(refusal, OwnFault)
                   else f"the homeserver would not take it ({refusal})")
            await messages.send_notice(
                self.client, stored.room_id, f"Sorry, the picture was made but {why}.",
                reply_to=stored.command, txn_id=pending.txn("undelivered"))
        await self._finish(stored, status=status, error=error, images=sent,
                           queue_seconds=result.queue_seconds,
                           generation_seconds=result.generation_seconds)

    async def _finish(self, stored: StoredJob, *, status: str, error: str | None,
                      images: int = 0, queue_seconds: float | None = None,
                      generation_seconds: float | None = None) -> None:
        await jobs.finish(self.db, stored, status=status, error=error, images=images,
                          queue_seconds=queue_seconds, generation_seconds=generation_seconds)
        self.metrics.job_finished(status, images, generation_seconds, queue_seconds)

    async def _send_pictures(self, pending: Pending,
                             result: Result) -> tuple[int, str | None]:
        """Each picture as its own reply, then a contact sheet of them all; returns how many
        pictures arrived, and why one did not. Raises messages.Unreachable."""
        job = result.job
        upscaler = getattr(self.queue.runner, "upscaler_name", "")
        params = job.parameters(upscaler if job.kind == "upscale" else result.model)
        sent, refusal = 0, None
        for index, image in enumerate(result.images):
            if pending.withdrawn:
                break
            text = caption(result, pending.prompt, index, self.catalogue.default_model,
                           getattr(self.queue.runner, "upscaler_name", ""))
            problem = await self._send_picture(
                pending, image, {**params, "seed": job.seed + index}, text,
                f"imgbot-{job.seed + index}", index, thumbnail=True)
            if problem is WITHHELD:  # its notice was the answer; not counted as sent
                refusal = refusal or problem
                continue
            sent += problem is None
            if problem is not None and refusal in (None, WITHHELD):
                refusal = problem  # a failure of its own outranks a withheld picture's
        if len(result.images) > 1 and sent and not pending.withdrawn:
            labels = [f"seed {job.seed + i}" for i in range(len(result.images))]
            # Tiled in a thread, like the encoding: the event loop serves every room.
            sheet = await asyncio.to_thread(contact_sheet, list(result.images), labels,
                                            cell=min(384, max(job.width, job.height)))
            await self._send_picture(
                pending, sheet, {**params, "seed": f"{job.seed}-{job.seed + job.count - 1}"},
                f"{pending.prompt} — all {len(result.images)} pictures, seeds "
                f"{job.seed}–{job.seed + job.count - 1}", f"imgbot-{job.seed}-sheet", None)
        return sent, refusal

    async def _send_picture(self, pending: Pending, image, params: dict[str, Any], text: str,
                            stem: str, index: int | None, thumbnail: bool = False) -> str | None:
        """Encode (in a thread, beside the next generation on the GPU) and send picture
        `index` of the job (None: the contact sheet); None when it arrived, else why not.
        One that is too large for the homeserver is encoded again for its upload limit,
        read afresh. Each posted picture is remembered, for replies to it."""
        part = "sheet" if index is None else f"picture-{index}"
        # The compliance checks: a withheld picture's notice is its answer.
        screening = await Screening.of(self)
        image = await screening.screen(self, pending, image, index,
                                       f"seed {params.get('seed')}")
        if image is None:
            return WITHHELD
        compliance = screening.compliance
        params = compliance.public_parameters(params)
        for attempt in range(2):
            try:
                picture, small = await asyncio.to_thread(_encode, image, params,
                                                         self.upload_limit, thumbnail,
                                                         compliance.signing(params))
            except SigningFailed as exc:  # never sent unsigned; the notice says why
                log.error("job %d: %s", pending.ticket.id, exc)
                return OwnFault(f"it could not be signed ({exc})")
            except (OSError, ValueError) as exc:  # e.g. a side over JPEG's 65,535 pixels
                log.exception("job %d: a picture could not be encoded", pending.ticket.id)
                return OwnFault(f"it could not be encoded ({type(exc).__name__})")
            if picture is None:
                return f"it does not fit the upload limit of {self.upload_limit} bytes"
            try:
                event_id = await messages.send_image(
                    self.client, pending.room_id, picture,
                    filename=f"{stem}.{'png' if picture.mimetype == 'image/png' else 'jpg'}",
                    caption=f"{text} · {picture.note}" if picture.note else text,
                    reply_to=pending.stored.command, thumbnail=small,
                    txn_id=pending.txn(part), patience=messages.PATIENT, strict=True)
            except messages.Refused as exc:
                if exc.errcode != "M_TOO_LARGE" or attempt:
                    return str(exc)
                limit = await messages.upload_limit(self.client)
                self.upload_limit = limit if limit and limit < len(picture.data) \
                    else len(picture.data) // 2
                continue
            await jobs.sent_part(self.db, pending.stored)
            store = self.settings.usage.store_prompts
            await gallery.remember(
                self.db, event_id, pending.room_id, pending.stored.usage_id,
                options_for_log(pending.stored.job.record(), store),
                prompt_for_log(pending.prompt, store), index)
            return None
        return None  # not reached


# What `_send_picture` returns for a picture the compliance checks did not let through.
WITHHELD = "withheld by the compliance checks"


class OwnFault(str):
    """Why a picture was not sent when the bot, not the homeserver, could not send it."""


def _as_picture(encoded) -> messages.Picture | None:
    if encoded is None:
        return None
    return messages.Picture(encoded.data, encoded.width, encoded.height, encoded.mimetype,
                            encoded.note)


def _encode(image, params: dict[str, Any], limit: int | None, thumbnail: bool, sign=None
            ) -> tuple[messages.Picture | None, messages.Picture | None]:
    """The picture (marked, and signed last when `sign` is given) and its thumbnail."""
    small = encode_thumbnail(image) if thumbnail else None
    return _as_picture(encode_for_upload(image, params, limit, sign)), (
        messages.Picture(*small, mimetype="image/jpeg") if small else None)


def _age_words(seconds: float) -> str:
    if seconds < 2 * 3600:
        return plural(round(seconds / 60), "minute")
    if seconds < 2 * 86400:
        return plural(round(seconds / 3600), "hour")
    return plural(round(seconds / 86400), "day")


def _queued_text(ticket: Ticket, queue: GenerationQueue) -> str:
    if queue.paused:
        return (f"Queued: the queue is paused by a bot admin; {plural(ticket.ahead, 'job')} "
                "ahead of yours.")
    eta = f", about {ticket.eta_seconds:.0f} s" if ticket.eta_seconds is not None else ""
    return f"Queued: {plural(ticket.ahead, 'job')} ahead of yours{eta}."
