"""The bounded job queue and the worker thread that owns the GPU.

Handlers on the event loop call `submit` and await the returned ticket; exactly one worker
thread takes jobs in order and runs them on the engine. Every crossing from the worker
thread back to the event loop goes through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from .job import GenerationError, Job, Result

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the worker drives: the engine or the model pool, or a fake in unit tests."""

    name: str  # the default model's name
    models: list[str]  # every model a job may name, the default first

    def native_size(self, name: str = "") -> tuple[int, int]: ...

    def generate(self, job: Job) -> list: ...


class QueueFull(Exception):
    """The queue, or this person's share of it, is full; the message says which."""


@dataclass
class Ticket:
    """A submitted job: where it stands now, and the future of its result."""

    id: int
    job: Job
    owner: str
    ahead: int  # jobs ahead of this one when it was submitted, the running one included
    eta_seconds: float | None  # estimated wait before it starts, from the measured speed
    result: asyncio.Future = field(repr=False)
    tag: str | None = None  # what the caller knows it by (the command's event ID)
    submitted: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Place:
    """A ticket's place in the queue: 0 is the running job."""

    position: int
    ticket: Ticket
    eta_seconds: float | None  # until it starts (0 for the running one)


def cost(job: Job) -> float:
    """How much work a job is, in the unit the speed is measured in: each step runs over
    every pixel of every picture, and text encoding plus decoding cost about one step more.
    Image-to-image runs only its strength's share of the steps; an upscale counts its passes
    over the result's pixels (a rough match, but the same unit)."""
    steps = job.steps
    if job.kind == "img2img":
        steps = max(1, math.ceil(job.steps * job.strength))
    return job.width * job.height * job.count * (steps + 1)


class GenerationQueue:
    def __init__(self, runner: Runner, *, max_size: int, per_user: int):
        self.runner = runner
        self.max_size = max_size
        self.per_user = per_user
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._running: Ticket | None = None
        self._running_since = 0.0
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._closing = False
        self._paused = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Seconds per unit of `cost`, measured (a moving mean); None until something ran.
        self.seconds_per_cost: float | None = None
        self.restarts = 0  # how often the worker died and was started again
        # Set when a job hit a fault that leaves the device unusable (a CUDA error): the
        # worker stops and the owner should end the process, so that a new one starts.
        self.device_fault: BaseException | None = None
        self.failed = asyncio.Event()

    # ---- event-loop side ---------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start_worker()

    def _start_worker(self) -> None:
        self._thread = threading.Thread(target=self._work_guarded, name="gpu-worker",
                                        daemon=True)
        self._thread.start()

    @property
    def worker_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def admit(self, owner: str) -> None:
        """Raise QueueFull when a job of `owner` would be refused now."""
        with self._cond:
            if self._closing:
                raise QueueFull("The bot is shutting down; try again in a minute.")
            if len(self._waiting) >= self.max_size:
                raise QueueFull(f"The queue is full ({self.max_size} waiting); try again soon.")
            mine = sum(1 for t in self._all() if t.owner == owner)
            if mine >= self.per_user:
                raise QueueFull(f"You already have {mine} jobs queued (the limit is "
                                f"{self.per_user}); wait for one to finish.")

    def submit(self, job: Job, owner: str, tag: str | None = None,
               check_limits: bool = True) -> Ticket:
        """Queue a job; raises QueueFull. Call from the event loop.

        Without `check_limits` (the caller called `admit` before it wrote the job down, or
        the job was accepted before a restart) it is never refused."""
        assert self._loop is not None, "start() the queue first"
        if check_limits:
            self.admit(owner)
        with self._cond:
            ahead = len(self._waiting) + (self._running is not None)
            ticket = Ticket(next(self._ids), job, owner, ahead,
                            self._eta(list(self._waiting)), self._loop.create_future(), tag)
            self._waiting.append(ticket)
            self._cond.notify()
        return ticket

    @property
    def depth(self) -> int:
        """Jobs waiting or running."""
        with self._cond:
            return len(self._waiting) + (self._running is not None)

    def places(self) -> list[Place]:
        """The running job (position 0) and the waiting ones in order, with their waits."""
        with self._cond:
            places = [Place(0, self._running, 0.0)] if self._running else []
            waiting = list(self._waiting)
            for index, ticket in enumerate(waiting):
                places.append(Place(index + 1, ticket, self._eta(waiting[:index])))
        return places

    def cancel(self, predicate) -> list[Ticket]:
        """Take the waiting tickets that match out of the queue (the running job goes on);
        their results say `cancelled`."""
        with self._cond:
            taken = [t for t in self._waiting if predicate(t)]
            for ticket in taken:
                self._waiting.remove(ticket)
        for ticket in taken:
            _resolve(ticket.result, self._result(ticket, error="cancelled", cancelled=True))
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
        rate = seconds / cost(job)
        # A moving mean, so the estimate follows the current load and sizes.
        self.seconds_per_cost = rate if self.seconds_per_cost is None else (
            0.7 * self.seconds_per_cost + 0.3 * rate)

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs and let the running one finish; the waiting ones come back as
        `interrupted` (their owner keeps them for the next start)."""
        with self._cond:
            self._closing = True
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for ticket in left:
            _resolve(ticket.result, self._result(ticket, error="interrupted", interrupted=True))
        if self._thread is not None:
            # Bounded: a job that never ends must not keep the service from stopping.
            await asyncio.to_thread(self._thread.join, timeout)

    # ---- worker thread -------------------------------------------------------------------

    def _all(self):
        yield from self._waiting
        if self._running is not None:
            yield self._running

    def _eta(self, waiting_ahead: list[Ticket]) -> float | None:
        """Seconds until a job behind `waiting_ahead` (and the running one) starts."""
        rate = self.seconds_per_cost
        if rate is None or self._paused:
            return None
        running = 0.0
        if self._running is not None:
            elapsed = time.monotonic() - self._running_since
            running = max(0.0, cost(self._running.job) * rate - elapsed)
        return running + sum(cost(t.job) for t in waiting_ahead) * rate

    def _result(self, ticket: Ticket, **fields) -> Result:
        fields.setdefault("queue_seconds", time.monotonic() - ticket.submitted)
        return Result(ticket.job, ticket.job.model or self.runner.name, **fields)

    def _work_guarded(self) -> None:
        """The worker, restarted when something escapes it (a job's ordinary exceptions are
        caught in `_run`; this is for what is not an Exception, like SystemExit from a
        library, or a fault in this loop itself)."""
        try:
            self._work()
        except BaseException as exc:
            with self._cond:
                ticket, self._running = self._running, None
                closing = self._closing
            log.critical("the GPU worker died (%s: %s)%s", type(exc).__name__, exc,
                         "" if closing else "; starting a new one", exc_info=True)
            if ticket is not None:
                result = self._result(ticket, error=f"generation failed: the GPU worker "
                                                    f"stopped ({type(exc).__name__})")
                self._loop.call_soon_threadsafe(_resolve, ticket.result, result)
            if not closing:
                self.restarts += 1
                self._loop.call_soon_threadsafe(self._start_worker)

    def _work(self) -> None:
        while True:
            with self._cond:
                while (not self._waiting or self._paused) and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                ticket = self._waiting.popleft()
                self._running, self._running_since = ticket, time.monotonic()
            result = self._run(ticket)
            with self._cond:
                self._running = None
            self._loop.call_soon_threadsafe(_resolve, ticket.result, result)
            if self.device_fault is not None:
                self._loop.call_soon_threadsafe(self.failed.set)
                return

    def _run(self, ticket: Ticket) -> Result:
        started = time.monotonic()
        waited = started - ticket.submitted
        try:
            images = self.runner.generate(ticket.job)
        except GenerationError as exc:
            return self._result(ticket, error=str(exc), queue_seconds=waited)
        except Exception as exc:  # the worker must survive any one job
            if is_device_fault(exc):
                # The device is now unusable for every job: this one is handed back (to
                # be made again after a restart), and the worker takes no more.
                log.critical("job %d hit a device fault; the GPU needs a fresh process: %s",
                             ticket.id, exc)
                with self._cond:
                    self.device_fault = exc
                    self._closing = True
                return self._result(ticket, error=str(exc), interrupted=True,
                                    queue_seconds=waited)
            log.exception("job %d failed", ticket.id)
            return self._result(ticket, queue_seconds=waited,
                                error=f"generation failed: {type(exc).__name__}: {exc}")
        seconds = time.monotonic() - started
        if ticket.job.kind != "upscale":
            # An upscale's speed says nothing about the diffusion model's (a Lanczos resize
            # is a hundred times faster per pixel): it would spoil every later estimate.
            self.observe(ticket.job, seconds)
        return self._result(ticket, images=tuple(images), queue_seconds=waited, generation_seconds=seconds)


def is_device_fault(exc: BaseException) -> bool:
    """A fault after which the CUDA context is unusable (an illegal memory access, a device
    assert, ECC): every later call fails too, and only a new process recovers. Out of
    memory is not one (it is a GenerationError, or torch.cuda.OutOfMemoryError)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return False
    return type(exc).__name__ == "AcceleratorError" or "CUDA error" in str(exc)


def _resolve(future: asyncio.Future, result: Result) -> None:
    if not future.done():  # the waiter may have been cancelled meanwhile
        future.set_result(result)
