"""The compliance checks on the chat side: run them on each picture before it is sent,
answer what they withhold or flag, and put their verdict in the usage log.

The checks themselves live in `generation.compliance` and run in a thread (they take a
few tenths of a second a picture), like the encoding, beside the next generation.
What a block means in chat: a notice, in reply to the command, where the picture would
have been, naming what was found (the closest reference and its distances, or the safety
scores); the picture is not uploaded and not kept. A warn sends the notice and the picture.
A contact sheet is not sent when any of its pictures was withheld or blurred (it would
show them), and is not checked again otherwise (its pictures were).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from nio import AsyncClient
from PIL import Image

from generation.compliance import Compliance, Verdict
from generation.compliance.signing import TimestampUnavailable

from bot.chat.jobs.pending import Pending
from bot.chat.language.rich import RichText, rich
from bot.config import Settings
from bot.matrix import messages
from bot.ops.backlog import Backlog
from bot.store import room_defaults, usage
from bot import version

log = logging.getLogger(__name__)

# Jobs with a picture withheld or blurred, whose contact sheet is then not sent: a few
# hundred is far more than are ever being answered at once.
_REMEMBERED = 512


class Screening:
    """The loaded checks of one bot, or why they could not be loaded."""

    def __init__(
        self, compliance: Compliance | None, broken: str | None = None, retry: bool = False
    ):
        self.compliance = compliance or Compliance()
        self.broken = broken  # why the checks could not be loaded: every picture is withheld
        self.retry = retry  # broken by a service that is down, not by the config

    @classmethod
    def load(cls, settings) -> Screening:
        """Everything `compliance:` asks for, loaded (in a thread: indexing a reference
        folder that changed takes a while). A failure withholds every picture, with a
        notice, rather than sending one unchecked; the config's validation has already
        stopped the start for what can be checked early (certificates, packages, folders)."""
        try:
            return cls(Compliance.from_settings(settings.compliance, settings.state_dir, version()))
        except TimestampUnavailable as exc:
            return cls(None, str(exc), retry=True)
        except Exception as exc:
            log.exception("the compliance checks could not be loaded")
            return cls(None, f"the compliance checks could not be loaded ({exc})")


class Screener:
    """Runs the bot's checks on each picture and answers for them in the room: the checks
    are loaded at start by bot.app (`load`), else at the first picture; it remembers which
    jobs had a picture withheld or blurred."""

    def __init__(self, client: AsyncClient, db, backlog: Backlog, settings: Settings):
        self.client, self.db, self.settings = client, db, settings
        self.backlog = backlog  # the verdict waits there when the disk is full
        self.loaded: Screening | None = None
        self._loading = asyncio.Lock()
        self._flagged: OrderedDict[str, None] = OrderedDict()

    async def load(self) -> Screening:
        """The checks, loaded once (in a thread: a reference folder may be indexed)."""
        async with self._loading:
            if self.loaded is None:
                self.loaded = await asyncio.to_thread(Screening.load, self.settings)
        return self.loaded

    def _flag(self, event_id: str) -> None:
        self._flagged[event_id] = None
        while len(self._flagged) > _REMEMBERED:
            self._flagged.popitem(last=False)

    async def screen(
        self, pending: Pending, image: Image.Image, index: int | None, label: str
    ) -> Image.Image | None:
        """The picture to send (perhaps blurred or watermarked), or None when it is
        withheld; its notice, if any, is sent here. `label` names it in notices."""
        event_id = pending.stored.event_id
        checks = await self.load()
        if checks.broken is not None:
            verdict = Verdict(
                "block", None, [checks.broken], {"action": "block", "error": checks.broken}
            )
            await self._record(pending, index, verdict)
            if index is not None:
                await self._notify(pending, verdict, index, label)
            return None
        if index is None:  # the contact sheet
            if event_id in self._flagged:
                log.info(
                    "job %d: its contact sheet is not sent (a picture was withheld or blurred)",
                    pending.ticket.id,
                )
                return None
            if not checks.compliance.watermark:
                return image
            from generation.compliance.watermark import embed

            try:
                return await asyncio.to_thread(embed, image)
            except Exception:  # fail closed: a sheet without its watermark is not sent
                log.exception(
                    "job %d: the contact sheet could not be watermarked", pending.ticket.id
                )
                return None
        stored = await room_defaults.stored(self.db, pending.room_id)
        # The room's own safety policy, stricter than the config's or ignored.
        room_nsfw = stored["nsfw"].value if "nsfw" in stored else None
        room_nsfw = room_nsfw if room_nsfw in ("blur", "block") else None
        job = pending.stored.job
        # The blocklist sees what the command-time check saw: the prompt with its style; an
        # upscale has no prompt of its own.
        prompt = job.prompt if job.kind != "upscale" else ""
        try:
            verdict: Verdict = await asyncio.to_thread(
                checks.compliance.screen, image, prompt, room_nsfw
            )
        except Exception as exc:  # fail closed: an unchecked picture is not sent
            log.exception("job %d: the compliance checks failed", pending.ticket.id)
            verdict = Verdict(
                "block",
                None,
                [f"the compliance checks failed ({type(exc).__name__})"],
                {"action": "block", "error": type(exc).__name__},
            )
        await self._record(pending, index, verdict)
        if verdict.action == "send":
            return verdict.image
        log.info(
            "job %d: picture %d %s by the compliance checks (%s)",
            pending.ticket.id,
            index,
            {"block": "withheld", "blur": "blurred", "warn": "flagged"}[verdict.action],
            "; ".join(verdict.reasons),
        )
        if verdict.withheld or verdict.record.get("blurred"):
            self._flag(event_id)
        await self._notify(pending, verdict, index, label)
        return verdict.image

    async def _notify(self, pending: Pending, verdict: Verdict, index: int, label: str) -> None:
        await pending.my_turn()  # the notice is the picture's answer: it waits its turn
        await messages.send_notice(
            self.client,
            pending.room_id,
            notice_text(verdict, label),
            reply_to=pending.stored.command,
            txn_id=pending.txn(f"compliance-{index}"),
            patience=messages.PATIENT,
            strict=True,
        )

    async def _record(self, pending: Pending, index: int | None, verdict: Verdict) -> None:
        """Add the verdict to the job's usage row, now or (the disk full) once space is back."""
        await self.backlog.write(
            f"what the compliance checks found in job {pending.ticket.id}",
            lambda: usage.add_compliance(
                self.db, pending.stored.usage_id, {"picture": index, **verdict.record}
            ),
        )


def notice_text(verdict: Verdict, label: str) -> RichText:
    reasons = "; ".join(verdict.reasons)
    if verdict.action == "block":
        text = "The picture ({label}) was made but **is not sent**: {reasons}."
    elif verdict.action == "blur":
        text = "The picture ({label}) **is sent blurred**: {reasons}."
    else:
        text = "**Warning** about the next picture ({label}): {reasons}. It is sent anyway."
    return rich(text, label=label, reasons=reasons)
