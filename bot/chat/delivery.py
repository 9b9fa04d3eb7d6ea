"""Delivering a finished job: each picture screened, encoded (in a thread, beside the
next generation) and sent as a reply, then a contact sheet; or a notice saying why not; then
its usage row. A room's answers come in the order its commands were accepted."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from generation.compliance.checks import SigningFailed
from generation.job import Result
from generation.png import encode_for_upload, encode_thumbnail

from bot.chat.captions import caption
from bot.chat.context import Context, Pending
from bot.chat.screening import Screening
from bot.chat.sheet import contact_sheet
from bot.matrix import messages
from bot.store import gallery, jobs
from bot.store.jobs import StoredJob
from bot.store.retention import options_for_log, prompt_for_log

log = logging.getLogger(__name__)

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


class Delivery:
    """Sends each finished job's answer and writes down how it ended."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def deliver(self, pending: Pending) -> None:
        try:
            await self._deliver(pending)
        finally:
            # Kept until everything is sent, so a redaction while uploading still counts.
            self.ctx.pending.pop(pending.stored.event_id, None)
            pending.answered.set_result(None)
            room_id = pending.room_id
            if self.ctx.last_in_room.get(room_id) is pending.answered:
                del self.ctx.last_in_room[room_id]

    async def _deliver(self, pending: Pending) -> None:
        result: Result = await pending.ticket.result
        stored = pending.stored
        if result.interrupted:
            return  # the bot is stopping: the job stays stored, for the next start
        await self.ctx.rooms_known.wait()
        if not (result.cancelled or pending.withdrawn) and pending.after is not None:
            await asyncio.shield(pending.after)  # the room's earlier answers come first
        if result.cancelled or pending.withdrawn:
            await self.finish(stored, status="cancelled", error="cancelled",
                              queue_seconds=result.queue_seconds,
                              generation_seconds=result.generation_seconds or None)
            return
        try:
            if not result.ok:
                await messages.send_notice(
                    self.ctx.client, stored.room_id, f"Sorry, that failed. {result.error}",
                    reply_to=stored.command, txn_id=pending.txn("failed"),
                    patience=messages.PATIENT, strict=True)
                await self.finish(stored, status="error", error=result.error,
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
                self.ctx.client, stored.room_id, f"Sorry, the picture was made but {why}.",
                reply_to=stored.command, txn_id=pending.txn("undelivered"))
        await self.finish(stored, status=status, error=error, images=sent,
                          queue_seconds=result.queue_seconds,
                          generation_seconds=result.generation_seconds)

    async def finish(self, stored: StoredJob, *, status: str, error: str | None,
                     images: int = 0, queue_seconds: float | None = None,
                     generation_seconds: float | None = None) -> None:
        await jobs.finish(self.ctx.db, stored, status=status, error=error, images=images,
                          queue_seconds=queue_seconds, generation_seconds=generation_seconds)
        self.ctx.metrics.job_finished(status, images, generation_seconds, queue_seconds)

    async def _send_pictures(self, pending: Pending,
                             result: Result) -> tuple[int, str | None]:
        """Each picture as its own reply, then a contact sheet of them all; returns how many
        pictures arrived, and why one did not. Raises messages.Unreachable."""
        job = result.job
        upscaler = getattr(self.ctx.queue.runner, "upscaler_name", "")
        params = job.parameters(upscaler if job.kind == "upscale" else result.model)
        sent, refusal = 0, None
        for index, image in enumerate(result.images):
            if pending.withdrawn:
                break
            text = caption(result, pending.prompt, index, self.ctx.catalogue.default_model,
                           getattr(self.ctx.queue.runner, "upscaler_name", ""))
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
        screening = await Screening.of(self.ctx)
        image = await screening.screen(self.ctx, pending, image, index,
                                       f"seed {params.get('seed')}")
        if image is None:
            return WITHHELD
        compliance = screening.compliance
        params = compliance.public_parameters(params)
        for attempt in range(2):
            try:
                picture, small = await asyncio.to_thread(_encode, image, params,
                                                         self.ctx.upload_limit, thumbnail,
                                                         compliance.signing(params))
            except SigningFailed as exc:  # never sent unsigned; the notice says why
                log.error("job %d: %s", pending.ticket.id, exc)
                return OwnFault(f"it could not be signed ({exc})")
            except (OSError, ValueError) as exc:  # e.g. a side over JPEG's 65,535 pixels
                log.exception("job %d: a picture could not be encoded", pending.ticket.id)
                return OwnFault(f"it could not be encoded ({type(exc).__name__})")
            if picture is None:
                return f"it does not fit the upload limit of {self.ctx.upload_limit} bytes"
            try:
                event_id = await messages.send_image(
                    self.ctx.client, pending.room_id, picture,
                    filename=f"{stem}.{'png' if picture.mimetype == 'image/png' else 'jpg'}",
                    caption=f"{text} · {picture.note}" if picture.note else text,
                    reply_to=pending.stored.command, thumbnail=small,
                    txn_id=pending.txn(part), patience=messages.PATIENT, strict=True)
            except messages.Refused as exc:
                if exc.errcode != "M_TOO_LARGE" or attempt:
                    return str(exc)
                limit = await messages.upload_limit(self.ctx.client)
                self.ctx.upload_limit = limit if limit and limit < len(picture.data) \
                    else len(picture.data) // 2
                continue
            await jobs.sent_part(self.ctx.db, pending.stored)
            store = self.ctx.settings.usage.store_prompts
            await gallery.remember(
                self.ctx.db, event_id, pending.room_id, pending.stored.usage_id,
                options_for_log(pending.stored.job.record(), store),
                prompt_for_log(pending.prompt, store), index)
            return None
        return None  # not reached


