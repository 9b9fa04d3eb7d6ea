"""Delivering a finished job: its pictures screened, encoded and uploaded side by side
(posting.py) and sent as replies, then a contact sheet; or a notice saying why not; then its
usage row, and the last words of its status. A room's answers come in the order its
commands were accepted."""

from __future__ import annotations

import asyncio
import logging
import time

from nio import AsyncClient

from generation.compliance.claims import claim_for
from generation.job import Result
from generation.scheduling.queue import GenerationQueue

from bot.chat.jobs.buttons import Buttons
from bot.chat.jobs.pending import Pending, PendingJobs
from bot.chat.jobs.posting import NotSent, Poster
from bot.chat.jobs.sheet import contact_sheet
from bot.chat.jobs.slots import Slots
from bot.chat.language import reactions
from bot.chat.language.captions import caption
from bot.chat.language.resolve import Catalogue
from bot.chat.language.rich import rich
from bot.matrix import messages
from bot.ops.backlog import Backlog
from bot.ops.metrics import Metrics
from bot.store import jobs
from bot.store.jobs import StoredJob
from bot.store.usage import JobStatus
from bot.text import plural, shorten

log = logging.getLogger(__name__)


class Delivery:
    """Sends each finished job's answer and writes down how it ended."""

    def __init__(
        self,
        *,
        client: AsyncClient,
        db,
        queue: GenerationQueue,
        pending: PendingJobs,
        poster: Poster,
        buttons: Buttons,
        slots: Slots,
        backlog: Backlog,
        metrics: Metrics,
        catalogue: Catalogue,
        rooms_known: asyncio.Event,
    ):
        self.client, self.db, self.queue = client, db, queue
        self.pending = pending
        self.poster = poster
        self.buttons = buttons  # placed under the pictures once they are all posted
        self.slots = slots
        self.backlog = backlog  # the usage row's outcome waits there when the disk is full
        self.metrics = metrics
        self.catalogue = catalogue
        self.rooms_known = rooms_known  # no answer goes out before the first sync

    async def deliver(self, pending: Pending) -> None:
        final = None
        try:
            final = await self._deliver(pending)
        finally:
            if pending.status is not None:
                pending.status.end(final)
            self.pending.answered(pending)
        self.buttons.place(pending)

    async def _deliver(self, pending: Pending) -> str | None:
        """Answer the job; returns the last words of its status, None to leave it be."""
        ticket, stored = pending.ticket, pending.stored
        if ticket.started is not None:
            # The queue sets `started` before `result` when a worker takes the job.
            await asyncio.wait({ticket.started, ticket.result}, return_when=asyncio.FIRST_COMPLETED)
            if ticket.started.done():
                log.info(
                    "job %d started: %s; waited %.1f s",
                    ticket.id,
                    self._described(stored),
                    ticket.started.result() - ticket.submitted,
                )
        result: Result = await ticket.result
        if result.interrupted:
            # The bot is stopping: the job stays stored, for the next start.
            log.info("job %d is kept for the next start (usage id %d)", ticket.id, stored.usage_id)
            return None
        await self.rooms_known.wait()
        batch = dict(
            batch=result.extra.get("batch_pictures", 0),
            pictures=stored.job.count,
            worker=result.extra.get("worker"),
        )
        if result.cancelled or pending.withdrawn:
            # A job redacted while its batch ran is charged its share of the batch.
            await self.finish(
                stored,
                status=JobStatus.CANCELLED,
                error="cancelled",
                queue_seconds=result.queue_seconds,
                generation_seconds=result.generation_seconds or None,
                number=ticket.id,
                **batch,
            )
            return "Cancelled."
        try:
            if not result.ok:
                await pending.my_turn()  # the room's earlier answers come first
                await messages.send_notice(
                    self.client,
                    stored.room_id,
                    rich("**Sorry, that failed.** {error}", error=result.error),
                    reply_to=stored.command,
                    txn_id=pending.txn("failed"),
                    patience=messages.PATIENT,
                    strict=True,
                )
                await self.finish(
                    stored,
                    status=JobStatus.ERROR,
                    error=result.error,
                    queue_seconds=result.queue_seconds,
                    number=ticket.id,
                    worker=batch["worker"],
                )
                return "Failed: the reply below says why."
            sent, refusal = await self._send_pictures(pending, result)
        except messages.Unreachable as exc:
            # Kept in the job store: the next start makes and sends it again, and what did
            # arrive is recognised by its transaction ID.
            log.error(
                "job %d could not be answered (%s); it is kept for the next start",
                pending.ticket.id,
                exc,
            )
            return None
        except messages.Refused as exc:
            sent, refusal = 0, NotSent(str(exc))
        if pending.withdrawn:
            status = JobStatus.CANCELLED
            error: str | None = "the command was redacted while it was being sent"
            final = "Cancelled."
        elif sent:
            status, error = JobStatus.OK, None
            final = (
                f"Done: {plural(sent, 'picture')} posted, "
                f"{time.monotonic() - ticket.submitted:.0f} s after the command."
            )
        elif refusal is not None and refusal.withheld:
            status, error = JobStatus.ERROR, refusal.why  # the checks' notice said so already
            final = "Withheld by the compliance checks."
        else:
            final = "Made, but not posted: the reply below says why."
            status, error = JobStatus.ERROR, f"the picture could not be delivered: {refusal}"
            why = (
                f"{refusal}, so it is not sent"
                if refusal is not None and refusal.own_fault
                else f"the homeserver would not take it ({refusal})"
            )
            await messages.send_notice(
                self.client,
                stored.room_id,
                rich("**Sorry**, the picture was made but {why}.", why=why),
                reply_to=stored.command,
                txn_id=pending.txn("undelivered"),
            )
        await self.finish(
            stored,
            status=status,
            error=error,
            images=sent,
            queue_seconds=result.queue_seconds,
            generation_seconds=result.generation_seconds,
            number=ticket.id,
            **batch,
        )
        return final

    async def finish(
        self,
        stored: StoredJob,
        *,
        status: JobStatus,
        error: str | None,
        images: int = 0,
        queue_seconds: float | None = None,
        generation_seconds: float | None = None,
        number: int | None = None,
        batch: int = 0,
        pictures: int = 1,
        worker: str | None = None,
    ) -> None:
        """Write down how a job ended, and say so in the log (`number`: its ticket's, when
        it was queued in this run). A job made in one call with others (`batch` pictures in
        all, `pictures` of them its own) is recorded with its share of the call's time, so
        that the usage log's GPU seconds add up to the time the GPU worked."""
        whole = generation_seconds
        if generation_seconds is not None and batch > pictures:
            generation_seconds = generation_seconds * pictures / batch
        # Written once space is back when the disk is full: the answer went out regardless.
        await self.backlog.write(
            f"the outcome of {'job ' + str(number) if number is not None else 'a job'} in "
            "the usage log",
            lambda: jobs.finish(
                self.db,
                stored,
                status=status,
                error=error,
                images=images,
                queue_seconds=queue_seconds,
                generation_seconds=generation_seconds,
                worker=worker,
            ),
        )
        self.metrics.job_finished(status, images, generation_seconds, queue_seconds)
        outcome = (
            status.value
            if status is JobStatus.OK or error == status.value
            else f"{status.value} ({self._error(stored, error)})"
        )
        timing = (
            []
            if generation_seconds is None
            else [
                f"{generation_seconds:.1f} s on the GPU"
                + (
                    f" (its share of {whole:.1f} s for a batch of {batch} pictures)"
                    if batch > pictures
                    else ""
                )
            ]
        )
        if queue_seconds is not None:
            timing.append(f"waited {queue_seconds:.1f} s")
        log.info(
            "%s ended: %s, %s sent; %s%s",
            f"job {number}" if number is not None else "a job of an earlier run",
            outcome,
            plural(images, "picture"),
            self._described(stored),
            "; " + ", ".join(timing) if timing else "",
        )

    def _described(self, stored: StoredJob) -> str:
        """A job as the log shows it: who, where, what, never the prompt."""
        what = f"usage id {stored.usage_id}, {stored.sender} in {stored.room_id}"
        job = stored.job
        if job is None:
            return what
        if job.kind == "upscale":
            return f"{what}, upscale {job.factor}× to {job.width}x{job.height}"
        model = job.model or self.catalogue.default_model
        kind = {
            "img2img": f", image-to-image at strength {job.strength:g}",
            "edit": ", an edit by instruction",
        }.get(job.kind, "")
        return (
            f"{what}, model {model}, {job.width}x{job.height}, {job.steps} steps, "
            f"{plural(job.count, 'picture')}{kind}"
        )

    @staticmethod
    def _error(stored: StoredJob, error: str | None) -> str:
        # An exception's own words could quote the prompt; the log never does.
        prompts = [p for p in (stored.prompt, stored.job.prompt if stored.job else "") if p]
        if not error or any(p in error for p in prompts):
            return "see the usage log"
        return shorten(error, 200)

    async def _send_pictures(self, pending: Pending, result: Result) -> tuple[int, NotSent | None]:
        """Each picture as its own reply, then a contact sheet of them all; returns how many
        pictures arrived, and why one did not. The pictures are encoded and uploaded side
        by side (and beside the room's earlier answers); their messages are sent in order,
        once the room's earlier answers are. Raises messages.Unreachable."""
        job = result.job
        # An upscale by 1 (✨: the picture enhanced) runs no upscaler: none is named or
        # claimed; a job that is no upscale has the factor 1 too, and neither reads them.
        scaled = job.factor > 1
        upscaler = self.queue.runner.upscaler_name if scaled else ""
        params = job.parameters(upscaler if job.kind == "upscale" else result.model)
        if result.extra.get("worker"):
            # Which GPU worker made it; embedded only with compliance.embed_worker.
            params["worker"] = result.extra["worker"]
        # What the pictures claim: a plain resize of someone's picture claims no AI at all.
        claim = claim_for(job, self.queue.runner.ai_upscaler and scaled)

        async def prepared(index: int, image):
            text = caption(result, pending.prompt, index, self.catalogue.default_model, upscaler)
            if pending.reaction:  # asked for with a reaction: who asked comes first
                text = (
                    f"{reactions.caption_prefix(pending.reaction, pending.stored.sender)}: {text}"
                )
            async with self.slots.take(pending.room_id):
                return await self.poster.prepare(
                    pending,
                    image,
                    {**params, "seed": job.seed + index},
                    text,
                    f"imgbot-{job.seed + index}",
                    index,
                    claim=claim,
                    thumbnail=True,
                )

        # Owned here: each is awaited in order below, and cancelled if that ends early.
        preparing = [
            asyncio.ensure_future(prepared(index, image))
            for index, image in enumerate(result.images)
        ]
        try:
            async with self.slots.under_way(pending.room_id):
                sent, refusal, lost = await self._post_in_order(pending, job, preparing)
        finally:
            for task in preparing:
                task.cancel()
            await asyncio.gather(*preparing, return_exceptions=True)
        if sent and lost and not pending.withdrawn:
            # The others arrived, so the job counts as answered: say which did not, and why.
            await messages.send_notice(
                self.client,
                pending.room_id,
                rich(
                    "**{lost} of {made}** could not be posted: {why}.",
                    lost=plural(len(lost), "picture"),
                    made=len(result.images),
                    why="; ".join(lost),
                ),
                reply_to=pending.stored.command,
                txn_id=pending.txn("partly-delivered"),
            )
        if len(result.images) > 1 and sent and not pending.withdrawn:
            labels = [f"seed {job.seed + i}" for i in range(len(result.images))]
            # Tiled in a thread, like the encoding: the event loop serves every room.
            sheet = await asyncio.to_thread(
                contact_sheet,
                list(result.images),
                labels,
                cell=min(384, max(job.width, job.height)),
            )
            async with self.slots.take(pending.room_id):
                ready = await self.poster.prepare(
                    pending,
                    sheet,
                    {**params, "seed": f"{job.seed}-{job.seed + job.count - 1}"},
                    f"{pending.prompt} — all {len(result.images)} pictures, seeds "
                    f"{job.seed}–{job.seed + job.count - 1}",
                    f"imgbot-{job.seed}-sheet",
                    None,
                    claim=claim,
                )
            if not isinstance(ready, NotSent):
                await self.poster.post(pending, ready)
        return sent, refusal

    async def _post_in_order(self, pending: Pending, job, preparing: list) -> tuple:
        """Post each prepared picture in order once the room's earlier answers are sent;
        (how many arrived, why one did not, what was lost)."""
        sent, refusal, lost = 0, None, []
        await pending.my_turn()
        for index, task in enumerate(preparing):
            ready = await task
            if pending.withdrawn:
                break
            problem = (
                ready if isinstance(ready, NotSent) else await self.poster.post(pending, ready)
            )
            if problem is not None and problem.withheld:  # its notice was the answer
                refusal = refusal or problem  # and it is not counted as sent
                continue
            sent += problem is None
            if problem is not None:
                lost.append(f"picture {index + 1} (seed {job.seed + index}): {problem}")
                if refusal is None or refusal.withheld:
                    refusal = problem  # a failure of its own outranks a withheld one
        return sent, refusal, lost
