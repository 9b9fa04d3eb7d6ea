"""What a person sees while their job waits and runs: one status notice in reply to the
command, edited in place as the job moves (its place and wait, then its steps or tiles),
and a short final line once the answer is posted; or, for a job that is made at once and
quickly, only the bot typing in the room.

The status reads the job's newest progress when it is time for an edit (the worker only
replaces a value, never waits): at most one edit per job per interval, and an edit the
homeserver holds back (a 429, waited out by the client) only pushes the next one later.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nio import AsyncClient

from generation.job import Job
from generation.scheduling.progress import Progress
from generation.scheduling.queue import GenerationQueue

from bot.chat.jobs.pending import Pending
from bot.chat.jobs.slots import Slots
from bot.chat.language.rich import as_rich
from bot.config import ProgressSettings
from bot.matrix import edits, messages
from bot.ops.backlog import Backlog
from bot.ops.tasks import TaskOwner
from bot.store import usage
from bot.text import plural

log = logging.getLogger(__name__)

QUIET_WAIT = 60  # seconds a final line waits at most for the room's pictures to be posted


NO_WORKER = "no GPU worker is available right now"


def waiting_text(ahead: int, eta: float | None, paused: bool, no_worker: bool = False) -> str:
    if paused:
        return f"Queued: the queue is paused by a bot admin; {plural(ahead, 'job')} ahead of yours."
    if no_worker:
        return (
            f"Queued: {NO_WORKER}; {plural(ahead, 'job')} ahead of yours. It starts "
            "when one is back."
        )
    wait = f", about {_seconds(eta)}" if eta is not None else ""
    return f"Queued: {plural(ahead, 'job')} ahead of yours{wait}."


def running_text(job: Job, progress: Progress | None, elapsed: float) -> str:
    """ "Making your picture: step 12 of 30, about 6 s left." and the like."""
    what = {
        "upscale": f"Upscaling {job.factor}×",
        "edit": "Editing your picture",
        "img2img": "Repainting your picture",
    }.get(job.kind, "Making your picture")
    if job.count > 1:
        what = f"Making your {job.count} pictures"
    if progress is None:
        return f"{what}: started {_seconds(elapsed)} ago."
    part = ""
    if progress.parts > 1:
        part = (
            f"pass {progress.part} of {progress.parts}, "
            if progress.unit == "tile"
            else f"picture {progress.part} of {progress.parts}, "
        )
    done = f"{part}{progress.unit} {progress.done} of {progress.total}"
    left = time_left(progress, elapsed)
    if left is None or progress.fraction >= 1:
        return f"{what}: {done}."
    return f"{what}: {done}, about {_seconds(left)} left."


def time_left(progress: Progress | None, elapsed: float) -> float | None:
    """Seconds a running job has left by its own progress, `elapsed` seconds after it
    started; None before its first step."""
    if progress is None or progress.fraction <= 0:
        return None
    # Time so far scaled to what is left: text encoding and decoding count as steps.
    return elapsed * (1 - progress.fraction) / progress.fraction


def told_at_once(paused: bool, ahead: int, eta: float | None, interval: float) -> bool:
    """Whether a job is told its place as soon as it is queued: the queue is paused (or no
    worker is up to take it), or its wait is known to be longer than the interval. A
    shorter wait (or one not known yet, before anything ran) looks like a quick job:
    typing, and a status once the interval is over if it is still unanswered, so that a
    burst of quick jobs costs no notices (each is an event the homeserver puts in the
    room's order, ahead of the pictures)."""
    return paused or (ahead > 0 and eta is not None and eta >= interval)


def nearly_done(progress: Progress | None, elapsed: float, interval: float) -> bool:
    """Whether a running job's own progress says it ends within half an interval: its
    status would come just before its picture, two events (the line, then its final
    words) that tell nobody anything. Its status waits an interval more instead."""
    left = time_left(progress, elapsed)
    return left is not None and left < interval / 2


NEAR_THE_FRONT = 3  # a waiting job at this place or nearer is told each move


def worth_editing(shown: object, said: object, since: float, interval: float) -> bool:
    """Whether the status is edited from `shown` to `said`, `since` seconds after it last
    changed. A job far back in a long queue moves up one place at every job made ahead of
    it: its place is edited at most every third interval (each edit is an event the
    homeserver orders ahead of the room's pictures), and each interval once it is near the
    front, paused or resumed, or running."""
    if said == shown:
        return False
    waiting = isinstance(said, tuple) and said[0] == "waiting"
    if (
        waiting
        and isinstance(shown, tuple)
        and shown[0] == "waiting"
        and said[2:] == shown[2:]
        and said[1] > NEAR_THE_FRONT
    ):
        return since >= 3 * interval
    return True


def _seconds(seconds: float) -> str:
    seconds = max(1, round(seconds))
    return f"{seconds} s" if seconds < 120 else f"{round(seconds / 60)} minutes"


class Statuses:
    """What the status notices of all jobs share: the room each is in, the queue they read,
    the rooms the bot types in, and whether the homeserver holds the bot back."""

    def __init__(
        self,
        client: AsyncClient,
        db,
        queue: GenerationQueue,
        settings: ProgressSettings,
        slots: Slots,
        pressure: edits.Pressure,
        backlog: Backlog,
        tasks: TaskOwner,
    ):
        self.client, self.db, self.queue, self.settings = client, db, queue, settings
        self.slots = slots  # a room's pictures being posted go first
        self.pressure = pressure  # whether the homeserver holds the bot back
        self.backlog = backlog  # where a notice's record waits when the disk is full
        self.tasks = tasks
        self.typing = edits.Typing(client)  # the rooms the bot shows itself typing in

    def of(self, pending: Pending, tell_waiting: bool = True) -> Status:
        """The job's status, followed in a task of its own until it ends."""
        status = Status(self, pending, tell_waiting)
        self.tasks.spawn(status.follow(), name=f"status-{pending.ticket.id}")
        return status


class Status:
    """The status of one accepted job, followed in a task of its own until `end`."""

    def __init__(self, statuses: Statuses, pending: Pending, tell_waiting: bool = True):
        self.statuses = statuses
        self.pending = pending
        self.typing = statuses.typing
        self.tell_waiting = tell_waiting  # False for a job resumed after a restart
        self.event_id: str | None = None  # the status notice, once sent
        self.shown: object = None  # what the notice says now (see `_text`)
        self.edits = 0
        self._said_at = 0.0  # the loop's time of the last post or edit
        self._ended = asyncio.get_running_loop().create_future()
        self._final: str | None = None
        self._typing = False
        self._held_back = False  # the first status waited once for a job about to end

    def end(self, final: str | None) -> None:
        """The answer is posted (or will never be): `final` is the status's last words."""
        self._final = final
        if not self._ended.done():
            self._ended.set_result(None)

    async def follow(self) -> None:
        settings = self.statuses.settings
        ticket, loop = self.pending.ticket, asyncio.get_running_loop()
        interval = settings.interval_seconds
        try:
            queue = self.statuses.queue
            held = queue.paused or not queue.workers_up  # nothing will start it soon
            if self.tell_waiting and told_at_once(held, ticket.ahead, ticket.eta_seconds, interval):
                await self._after_pictures(interval)
                if not self._ended.done() and not ticket.result.done():
                    said, text = self._text()
                    await self._post(said, text)
            next_at = loop.time() + interval
            while not self._ended.done():
                if self._started() and not self._typing:
                    self._typing = True  # the bot types while the job is at work
                    await self.typing.start(self.pending.room_id)
                wake = {self._ended} | (
                    {ticket.started} if not self._typing and ticket.started is not None else set()
                )
                await asyncio.wait(
                    wake,
                    timeout=max(0.0, next_at - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if self._ended.done() or loop.time() < next_at:
                    continue  # ended, or it started: typing, then the same wait
                next_at = loop.time() + interval
                if self._typing:
                    await self.typing.keep(self.pending.room_id)
                if not settings.edits or self._make_way():
                    continue  # the room's pictures go first
                said, text = self._text()
                if self.event_id is None:
                    if not ticket.result.done() and not self._held_back_once(interval):
                        await self._post(said, text)  # still at work after an interval
                elif worth_editing(self.shown, said, loop.time() - self._said_at, interval):
                    await self._edit(said, text)
                next_at = loop.time() + interval  # an edit that was held up counts
            if self.event_id is not None and settings.edits and self._final:
                await self._after_pictures(QUIET_WAIT, ended=True)  # the final line after them
                await self._edit(self._final, self._final)
        finally:
            if self._typing:
                await self.typing.stop(self.pending.room_id)

    def _held_back_once(self, interval: float) -> bool:
        """Whether the first status of a running job waits one interval more because the
        job is about to end; only once, since a last step can take long (a large decode
        on a CPU) with the progress already at its end."""
        if self._held_back or not self._started():
            return False
        started = self.pending.ticket.started.result()
        self._held_back = nearly_done(
            self.pending.ticket.progress, time.monotonic() - started, interval
        )
        return self._held_back

    async def _after_pictures(self, limit: float, ended: bool = False) -> None:
        """Wait (`limit` seconds at most) while the room's pictures are being posted; until
        the job ends, too, unless `ended` (then its final line waits for them)."""
        for _ in range(round(limit * 5)):
            if not self._make_way() or (self._ended.done() and not ended):
                return
            await asyncio.sleep(0.2)

    def _make_way(self) -> bool:
        """Whether updates wait: while the homeserver holds the bot back (a 429), and while
        the room's pictures are being posted (each edit is an event the homeserver puts in
        the room's order, and a picture should not queue behind a status line)."""
        return self.statuses.pressure.limited or self.statuses.slots.busy(self.pending.room_id)

    def _started(self) -> bool:
        started = self.pending.ticket.started
        return started is not None and started.done()

    def _text(self) -> tuple[object, str]:
        """What the status says now, and in what words. A waiting job's words change with
        its wait each second; it is edited only when its place (or the pause) changes, so
        that a long queue does not spend the homeserver's rate limit on estimates."""
        ticket = self.pending.ticket
        job = ticket.job
        if ticket.result.done():
            text = f"Made; posting {'them' if job.count > 1 else 'it'} now."
            return text, text
        if not self._started():
            queue = self.statuses.queue
            standing, paused, up = queue.standing(ticket), queue.paused, queue.workers_up
            if standing is None:
                return "Starting.", "Starting."
            return (
                ("waiting", standing[0], paused, bool(up)),
                waiting_text(*standing, paused, not up),
            )
        text = running_text(job, ticket.progress, time.monotonic() - ticket.started.result())
        return text, text

    async def _post(self, said: object, text: str) -> None:
        self.event_id = event_id = await messages.send_notice(
            self.statuses.client,
            self.pending.room_id,
            as_rich(text),
            reply_to=self.pending.stored.command,
            txn_id=self.pending.txn("queued"),
        )
        if event_id is not None:  # kept, so that 🗑️ on its picture removes it too
            stored = self.pending.stored
            await self.statuses.backlog.write(
                f"the status notice of job {self.pending.ticket.id}",
                lambda: usage.set_status_event(self.statuses.db, stored.usage_id, event_id),
            )
        self.shown = said
        self._said_at = asyncio.get_running_loop().time()

    async def _edit(self, said: object, text: str) -> None:
        if await edits.edit_notice(
            self.statuses.client, self.pending.room_id, self.event_id, as_rich(text)
        ):
            self.shown = said
            self.edits += 1
            self._said_at = asyncio.get_running_loop().time()
