"""The bounded job queue: order, positions and waits, pause, cancel, batching, and what
happens to the line when a worker fails (its workers, one thread per GPU, are in workers.py).

Handlers on the event loop call `submit` and await the returned ticket; exactly one worker
thread takes jobs in order and runs them on the engine. Every crossing from the worker
thread back to the event loop goes through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time

from ..errors import ImgbotError
from ..job import Job, Result
from .batching import ahead_in, next_batch
from .pace import Pace
from .runner import Runner, WorkerNotReady
from .ticket import Place, Ticket, resolve
from .workers import Worker

log = logging.getLogger(__name__)

# A job whose making loses this many workers fails instead of going back again: it may be
# what ends them (a fault it causes on every device).
MAX_LOST = 3


class QueueFull(ImgbotError):
    """The queue, or this person's share of it, is full; the message says which."""


class GenerationQueue:
    """One queue, and one worker per runner: several GPUs take jobs from the same queue."""

    def __init__(
        self, runners: Runner | list[Runner], *, max_size: int, per_user: int, max_batch: int = 1
    ):
        runners = runners if isinstance(runners, list) else [runners]
        self.runner = runners[0]  # they all offer the same models
        self.workers = [Worker(i, runner, self) for i, runner in enumerate(runners)]
        self.max_size = max_size
        self.per_user = per_user
        # Pictures in one pipeline call, for jobs of one `batch_key` (a runner that makes one
        # job at a time says None for each, and gets each alone).
        self.max_batch = max_batch
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._closing = False
        self._paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pace = Pace()  # the measured speed, and the waits it gives
        self.restarts = 0  # how often the worker died and was started again
        self.given_back = 0  # jobs handed back by a worker lost while making them
        # For the bench: seconds the worker spent on jobs, and seconds it sat idle while
        # jobs were waiting (between one batch and the next; should be next to nothing).
        self.busy_seconds = 0.0
        self.idle_while_waiting_seconds = 0.0
        # Set when a job hit a fault that leaves the device unusable (a CUDA error): the
        # worker stops and the owner should end the process, so that a new one starts.
        self.device_fault: BaseException | None = None
        self.failed = asyncio.Event()

    # ---- event-loop side ---------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for worker in self.workers:
            self._start_worker(worker)

    def _start_worker(self, worker: Worker) -> None:
        worker.start("gpu-worker" if len(self.workers) == 1 else f"gpu-worker-{worker.index}")

    @property
    def worker_alive(self) -> bool:
        return all(w.alive for w in self.workers)

    @property
    def workers_up(self) -> int:
        """Workers that can take a batch now (a remote one may be down, or not started)."""
        return sum(1 for w in self.workers if w.up)

    def closing(self) -> bool:
        return self._closing

    def worker_stats(self) -> list[tuple[str, bool, int, float]]:
        """Each worker's name, whether it is up, its jobs made and its busy seconds (the
        same name over a remote worker's restarts adds up under its new name)."""
        with self._cond:
            return [
                (worker.name, worker.up, worker.jobs, worker.busy_seconds)
                for worker in self.workers
            ]

    def _running(self) -> list[Ticket]:
        return [ticket for worker in self.workers for ticket in worker.running]

    def admit(self, owner: str) -> None:
        """Raise QueueFull when a job of `owner` would be refused now."""
        with self._cond:
            if self._closing:
                raise QueueFull("The bot is shutting down; try again in a minute.")
            if len(self._waiting) >= self.max_size:
                raise QueueFull(f"The queue is full ({self.max_size} waiting); try again soon.")
            mine = sum(1 for t in self._all() if t.owner == owner)
            if mine >= self.per_user:
                raise QueueFull(
                    f"You already have {mine} jobs queued (the limit is "
                    f"{self.per_user}); wait for one to finish."
                )

    def submit(
        self, job: Job, owner: str, tag: str | None = None, check_limits: bool = True
    ) -> Ticket:
        """Queue a job; raises QueueFull. Call from the event loop.

        Without `check_limits` (the caller called `admit` before it wrote the job down, or
        the job was accepted before a restart) it is never refused."""
        assert self._loop is not None, "start() the queue first"
        if check_limits:
            self.admit(owner)
        with self._cond:
            # Jobs it will be made with in one batch are not ahead of it.
            waiting_ahead = self._ahead_of(job)
            ticket = Ticket(
                next(self._ids),
                job,
                owner,
                len(waiting_ahead) + len(self._running()),
                self._eta(waiting_ahead),
                self._loop.create_future(),
                tag,
                started=self._loop.create_future(),
            )
            self._waiting.append(ticket)
            self._cond.notify()
        return ticket

    @property
    def depth(self) -> int:  # jobs waiting or running
        with self._cond:
            return len(self._waiting) + len(self._running())

    def places(self) -> list[Place]:
        """The running job (position 0) and the waiting ones in order, with their waits."""
        with self._cond:
            places = [Place(0, ticket, 0.0) for ticket in self._running()]
            waiting = list(self._waiting)
            for index, ticket in enumerate(waiting):
                places.append(Place(index + 1, ticket, self._eta(waiting[:index])))
        return places

    def standing(self, ticket: Ticket) -> tuple[int, float | None] | None:
        """A waiting ticket's jobs ahead now (the running ones included; not those that
        will share its batch) and its estimated wait; None once it is no longer waiting."""
        with self._cond:
            if not any(waiting is ticket for waiting in self._waiting):
                return None
            ahead = self._ahead_in(list(self._waiting), ticket)
            return len(ahead) + len(self._running()), self._eta(ahead)

    def cancel(self, predicate) -> list[Ticket]:
        """Take the waiting tickets that match out of the queue (the running job goes on);
        their results say `cancelled`."""
        with self._cond:
            taken = [t for t in self._waiting if predicate(t)]
            for ticket in taken:
                self._waiting.remove(ticket)
        for ticket in taken:
            resolve(ticket.result, self.result(ticket, error="cancelled", cancelled=True))
        return taken

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Hold the queue after the running job; jobs are still taken and wait."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def observe(self, job: Job, seconds: float) -> None:
        """Learn the speed from a run (the warm-up too), so waits can be estimated."""
        self.observe_batch([job], seconds)

    def observe_batch(self, jobs: list[Job], seconds: float) -> None:
        self.pace.observe_batch(jobs, seconds)

    @property
    def seconds_per_cost(self) -> float | None:
        return self.pace.seconds_per_cost

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs and let the running one finish; the waiting ones come back as
        `interrupted` (their owner keeps them for the next start)."""
        with self._cond:
            self._closing = True
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for ticket in left:
            resolve(ticket.result, self.result(ticket, error="interrupted", interrupted=True))
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self.workers:
            if worker.thread is not None:
                # Bounded: a job that never ends must not keep the service from stopping.
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                await asyncio.to_thread(worker.thread.join, left)

    # ---- what the workers call, from their threads ----------------------------------------

    def take(self, worker: Worker) -> list[Ticket] | None:
        """Wait for the next batch for `worker` (None: the queue is closing) and mark it
        running."""
        with self._cond:
            while (not self._waiting or self._paused) and not self._closing:
                worker.finished_with_work_left = None
                self._cond.wait()
            if self._closing:
                return None
            batch = self._take_batch(worker.runner)
            now = time.monotonic()
            if worker.finished_with_work_left is not None:
                self.idle_while_waiting_seconds += now - worker.finished_with_work_left
            worker.running, worker.since = batch, now
        for ticket in batch:  # before its result: the loop runs callbacks in order
            self._loop.call_soon_threadsafe(resolve, ticket.started, now)
        return batch

    def finished(self, worker: Worker, batch: list[Ticket], results: list[Result]) -> bool:
        """Hand a batch's results to their waiters; False: the worker is to stop."""
        with self._cond:
            worker.running = []
            now = time.monotonic()
            self.busy_seconds += now - worker.since
            worker.busy_seconds += now - worker.since
            worker.jobs += len(batch)
            worker.finished_with_work_left = now if self._waiting else None
        for ticket, result in zip(batch, results):
            self._loop.call_soon_threadsafe(resolve, ticket.result, result)
        if self.device_fault is not None:
            self._loop.call_soon_threadsafe(self.failed.set)
            return False
        return True

    # ---- when a worker fails, from its thread, under the lock; each crossing to the event
    # loop goes through `call_soon_threadsafe` ---------------------------------------------

    def give_back(self, worker, batch: list[Ticket], exc: BaseException) -> None:
        """The worker was lost while it made `batch` (WorkerLost): its jobs go back to the
        front of the queue, in their order, and wait to be started again, to be made by
        another worker (or this one once it is back) and answered once."""
        sent = not isinstance(exc, WorkerNotReady)  # else nothing was made: no loss counts
        failed, kept = [], []
        with self._cond:
            worker.running = []
            self.busy_seconds += time.monotonic() - worker.since
            closing = self._closing
            for ticket in reversed(batch):
                ticket.lost += sent
                if closing:  # kept in the job store, for the next start
                    kept.append(ticket)
                elif ticket.lost >= MAX_LOST:  # the job itself may be what ends workers
                    failed.append(ticket)
                else:
                    # The chat side reads `started` anew: the job shows as waiting again.
                    ticket.started = asyncio.Future(loop=self._loop)
                    ticket.progress = None
                    self._waiting.appendleft(ticket)
            if sent:
                self.given_back += len(batch) - len(failed) - len(kept)
            self._cond.notify_all()
        ids = ", ".join(str(t.id) for t in batch)
        if sent:
            log.warning(
                "%s was lost while making job(s) %s (%s); they go back to the front of the queue",
                worker.name,
                ids,
                exc,
            )
        for ticket in failed:
            error = (
                f"generation failed: {MAX_LOST} GPU workers were lost while making it "
                f"(the last: {exc})"
            )
            self._loop.call_soon_threadsafe(
                resolve, ticket.result, self.result(ticket, error=error)
            )
        for ticket in kept:
            self._loop.call_soon_threadsafe(
                resolve, ticket.result, self.result(ticket, error="interrupted", interrupted=True)
            )

    def device_failed(self, exc: BaseException) -> None:
        """The device is unusable (a CUDA error): take no more jobs; the owner ends the
        process, so that a new one starts."""
        with self._cond:
            self.device_fault = exc
            self._closing = True

    def died(self, worker, exc: BaseException) -> None:
        """Something escaped the worker: its batch fails, and a new worker starts."""
        with self._cond:
            batch, worker.running = worker.running, []
            closing = self._closing
        log.critical(
            "the GPU worker died (%s: %s)%s",
            type(exc).__name__,
            exc,
            "" if closing else "; starting a new one",
            exc_info=True,
        )
        for ticket in batch:
            result = self.result(
                ticket, error=f"generation failed: the GPU worker stopped ({type(exc).__name__})"
            )
            self._loop.call_soon_threadsafe(resolve, ticket.result, result)
        if not closing:
            self.restarts += 1
            self._loop.call_soon_threadsafe(self._start_worker, worker)

    # ---- inside the queue ----------------------------------------------------------------

    def _all(self):
        yield from self._waiting
        yield from self._running()

    def _eta(self, waiting_ahead: list[Ticket]) -> float | None:
        return None if self._paused else self.pace.eta(self.workers, waiting_ahead)

    def result(self, ticket: Ticket, **fields) -> Result:
        fields.setdefault("queue_seconds", time.monotonic() - ticket.submitted)
        return Result(ticket.job, ticket.job.model or self.runner.name, **fields)

    def _take_batch(self, runner: Runner) -> list[Ticket]:
        """The next batch (batching.py), taken out of the line."""
        batch = next_batch(self.max_batch, runner, list(self._waiting), _job)
        for ticket in batch:
            self._waiting.remove(ticket)
        return batch

    def _ahead_of(self, job: Job) -> list[Ticket]:
        """The waiting tickets made before `job` if it joined the queue now."""
        return ahead_in(
            self.max_batch,
            self.runner,
            [*self._waiting, None],
            None,
            lambda ticket: job if ticket is None else ticket.job,
        )

    def _ahead_in(self, line: list, target) -> list:
        return ahead_in(self.max_batch, self.runner, line, target, _job)


def _job(ticket: Ticket) -> Job:
    return ticket.job
