"""A submitted job as the queue and its workers hand it to each other: the ticket, its
place in the line, and the answer of its future."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ..job import Job, Result
from .progress import Progress


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
    # Set (on the event loop) to the time.monotonic() at which a worker took it; never set
    # for one that was cancelled or shut out before it ran.
    started: asyncio.Future | None = field(default=None, repr=False)
    # How far its batch is, the newest value only: written by the worker thread (one
    # reference replaced whole), read on the event loop when the chat side wants it.
    progress: Progress | None = None
    lost: int = 0  # how often a worker was lost while it made this job


@dataclass(frozen=True)
class Place:
    """A ticket's place in the queue: 0 is the running job."""

    position: int
    ticket: Ticket
    eta_seconds: float | None  # until it starts (0 for the running one)


def resolve(future: asyncio.Future | None, result: Result | float) -> None:
    if future is not None and not future.done():  # the waiter may have been cancelled
        future.set_result(result)
