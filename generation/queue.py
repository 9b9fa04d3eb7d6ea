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
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from .job import GenerationError, Job, Result

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the worker drives: the engine or the model pool, or a fake in unit tests."""

    name: str  # the default model's name

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
    submitted: float = field(default_factory=time.monotonic)


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
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Mean seconds per job, measured; None until the first job finished.
        self.mean_seconds: float | None = None

    # ---- event-loop side ---------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="gpu-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job, owner: str) -> Ticket:
        """Queue a job; raises QueueFull. Call from the event loop."""
        assert self._loop is not None, "start() the queue first"
        with self._cond:
            if self._closing:
                raise QueueFull("The bot is shutting down; try again in a minute.")
            if len(self._waiting) >= self.max_size:
                raise QueueFull(f"The queue is full ({self.max_size} waiting); try again soon.")
            mine = sum(1 for t in self._all() if t.owner == owner)
            if mine >= self.per_user:
                raise QueueFull(f"You already have {mine} jobs queued (the limit is "
                                f"{self.per_user}); wait for one to finish.")
            ahead = len(self._waiting) + (self._running is not None)
            ticket = Ticket(next(self._ids), job, owner, ahead, self._eta(ahead),
                            self._loop.create_future())
            self._waiting.append(ticket)
            self._cond.notify()
        return ticket

    @property
    def depth(self) -> int:
        """Jobs waiting or running."""
        with self._cond:
            return len(self._waiting) + (self._running is not None)

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, let the running one finish, fail the waiting ones."""
        with self._cond:
            self._closing = True
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for ticket in left:
            if not ticket.result.done():
                ticket.result.set_result(self._failed(ticket, "The bot shut down before this job ran."))
        if self._thread is not None:
            # Bounded: a job that never ends must not keep the service from stopping.
            await asyncio.to_thread(self._thread.join, timeout)

    # ---- worker thread -------------------------------------------------------------------

    def _all(self):
        yield from self._waiting
        if self._running is not None:
            yield self._running

    def _eta(self, ahead: int) -> float | None:
        if self.mean_seconds is None:
            return None
        elapsed = time.monotonic() - self._running_since if self._running else 0.0
        return max(0.0, ahead * self.mean_seconds - elapsed)

    def _failed(self, ticket: Ticket, error: str) -> Result:
        return Result(ticket.job, self.runner.name, error=error,
                      queue_seconds=time.monotonic() - ticket.submitted)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                ticket = self._waiting.popleft()
                self._running, self._running_since = ticket, time.monotonic()
            result = self._run(ticket)
            with self._cond:
                self._running = None
            self._loop.call_soon_threadsafe(_resolve, ticket.result, result)

    def _run(self, ticket: Ticket) -> Result:
        started = time.monotonic()
        waited = started - ticket.submitted
        try:
            images = self.runner.generate(ticket.job)
        except GenerationError as exc:
            return Result(ticket.job, self.runner.name, error=str(exc), queue_seconds=waited)
        except Exception as exc:  # the worker must survive any one job
            log.exception("job %d failed", ticket.id)
            return Result(ticket.job, self.runner.name, queue_seconds=waited,
                          error=f"generation failed: {type(exc).__name__}: {exc}")
        seconds = time.monotonic() - started
        # A moving mean, so the ETA follows the current model and sizes.
        self.mean_seconds = seconds if self.mean_seconds is None else (
            0.7 * self.mean_seconds + 0.3 * seconds)
        return Result(ticket.job, self.runner.name, images=tuple(images),
                      queue_seconds=waited, generation_seconds=seconds)


def _resolve(future: asyncio.Future, result: Result) -> None:
    if not future.done():  # the waiter may have been cancelled meanwhile
        future.set_result(result)
