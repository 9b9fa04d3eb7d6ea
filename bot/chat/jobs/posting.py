"""Posting one picture of a job, in two halves: `prepare` screens, encodes (in a thread) and
uploads it, side by side with the room's other pictures, a bounded number at once; `post`
sends its message when the picture's turn in the room comes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from nio import AsyncClient

from generation.compliance.signing import SigningError
from generation.compliance.claims import Claim
from generation.postprocess.png import encode_for_upload, encode_thumbnail

from bot.chat.jobs.pending import Pending
from bot.chat.jobs.screening import Screener
from bot.chat.jobs.slots import Slots
from bot.matrix import messages
from bot.ops.backlog import Backlog
from bot.store import gallery, jobs
from bot.store.retention import options_for_log, prompt_for_log

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotSent:
    """Why a picture was not sent."""

    why: str
    own_fault: bool = False  # the bot, not the homeserver, could not send it
    withheld: bool = False  # the compliance checks withheld it: their notice is its answer

    def __str__(self) -> str:
        return self.why


WITHHELD = NotSent("withheld by the compliance checks", withheld=True)


@dataclass(frozen=True)
class Ready:
    """A picture uploaded, with the message that will show it."""

    content: dict[str, Any]
    part: str  # what its transaction ID is made of
    index: int | None  # its place in the job (None: the contact sheet)


def _as_picture(encoded) -> messages.Picture | None:
    if encoded is None:
        return None
    return messages.Picture(
        encoded.data, encoded.width, encoded.height, encoded.mimetype, encoded.note
    )


def _encode(
    image, params: dict[str, Any], limit: int | None, thumbnail: bool, sign, claim: Claim
) -> tuple[messages.Picture | None, messages.Picture | None]:
    """The picture (marked with its claim, and signed last when `sign` is given) and its
    thumbnail."""
    small = encode_thumbnail(image, source_type=claim.source_type) if thumbnail else None
    return _as_picture(encode_for_upload(image, params, limit, sign, claim.source_type)), (
        messages.Picture(*small, mimetype="image/jpeg") if small else None
    )


class Poster:
    """Screens, encodes, uploads and posts pictures; knows the homeserver's upload limit
    (asked at start by bot.app, and again when an upload is refused as too large)."""

    def __init__(
        self,
        client: AsyncClient,
        db,
        backlog: Backlog,
        slots: Slots,
        screener: Screener,
        store_prompts: bool,
    ):
        self.client, self.db = client, db
        self.backlog = backlog  # a posted picture's records wait there when the disk is full
        self.slots = slots
        self.screener = screener
        self.store_prompts = store_prompts  # usage.store_prompts, for the picture's record
        self.upload_limit: int | None = None  # m.upload.size, once known

    async def learn_upload_limit(self) -> None:
        self.upload_limit = await messages.upload_limit(self.client)

    async def prepare(
        self,
        pending: Pending,
        image,
        params: dict[str, Any],
        text: str,
        stem: str,
        index: int | None,
        *,
        claim: Claim,
        thumbnail: bool = False,
    ) -> Ready | NotSent:
        """Screen, encode (in a thread, beside the next generation on the GPU) and upload
        picture `index` of the job (None: the contact sheet), marked and signed with `claim`;
        Ready, or why it cannot be sent.
        One that is too large for the homeserver is encoded again for its upload limit, read
        afresh. Raises messages.Unreachable."""
        part = "sheet" if index is None else f"picture-{index}"
        # The compliance checks: a withheld picture's notice is its answer.
        image = await self.screener.screen(pending, image, index, f"seed {params.get('seed')}")
        if image is None:
            return WITHHELD
        compliance = (await self.screener.load()).compliance
        params = compliance.public_parameters(params)
        for attempt in range(2):
            try:
                sign = compliance.signing(params, claim)
                # A signature may wait on a time-stamp server: that wait holds no encoding slot.
                async with self.slots.encoding if sign is None else contextlib.nullcontext():
                    picture, small = await asyncio.to_thread(
                        _encode, image, params, self.upload_limit, thumbnail, sign, claim
                    )
            except SigningError as exc:  # never sent unsigned; the notice says why
                log.error("job %d: %s", pending.ticket.id, exc)
                return NotSent(f"it could not be signed ({exc})", own_fault=True)
            except (OSError, ValueError) as exc:  # e.g. a side over JPEG's 65,535 pixels
                log.exception("job %d: a picture could not be encoded", pending.ticket.id)
                return NotSent(f"it could not be encoded ({type(exc).__name__})", own_fault=True)
            if picture is None:
                return NotSent(f"it does not fit the upload limit of {self.upload_limit} bytes")
            try:
                content = await messages.image_content(
                    self.client,
                    pending.room_id,
                    picture,
                    filename=f"{stem}.{'png' if picture.mimetype == 'image/png' else 'jpg'}",
                    caption=f"{text} · {picture.note}" if picture.note else text,
                    reply_to=pending.stored.command,
                    thumbnail=small,
                    patience=messages.PATIENT,
                    strict=True,
                )
            except messages.Refused as exc:
                if exc.errcode != "M_TOO_LARGE" or attempt:
                    return NotSent(str(exc))
                limit = await messages.upload_limit(self.client)
                self.upload_limit = (
                    limit if limit and limit < len(picture.data) else len(picture.data) // 2
                )
                continue
            return Ready(content, part, index)
        return NotSent("it could not be uploaded", own_fault=True)  # not reached

    async def post(self, pending: Pending, ready: Ready) -> NotSent | None:
        """Send the message of an uploaded picture; None when it arrived, else why not. Each
        posted picture is remembered, for replies to it. Raises messages.Unreachable."""
        try:
            event_id = await messages.send(
                self.client,
                pending.room_id,
                ready.content,
                txn_id=pending.txn(ready.part),
                patience=messages.PATIENT,
                strict=True,
            )
        except messages.Refused as exc:
            return NotSent(str(exc))
        pending.posted.append(event_id)  # its buttons go under it once the room's are sent
        # Recorded now, or once space is back when the disk is full (the next picture is sent
        # all the same): that it was posted, and the picture, for replies to it.
        number = pending.ticket.id
        await self.backlog.write(
            f"that job {number} posted its {ready.part}",
            lambda: jobs.sent_part(self.db, pending.stored),
        )
        store = self.store_prompts
        await self.backlog.write(
            f"the record of job {number}'s {ready.part}",
            lambda: gallery.remember(
                self.db,
                event_id,
                pending.room_id,
                pending.stored.usage_id,
                options_for_log(pending.stored.job.record(), store),
                prompt_for_log(pending.prompt, store),
                ready.index,
            ),
        )
        return None
