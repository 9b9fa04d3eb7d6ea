"""What the queue and its workers hand each other: the runner they drive, a ticket and its
place, the cost of a job, and the refusal of a full queue."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from .job import Job, Result
from .progress import Progress


class Runner(Protocol):
    """What the worker drives: the engine or the model pool, or a fake in unit tests."""

    name: str  # the default model's name
    models: list[str]  # every model a job may name, the default first

    def native_size(self, name: str = "") -> tuple[int, int]: ...

    def generate(self, job: Job) -> list: ...

class WorkerLost(Exception):
    """The worker went away while it made a batch (a Ray actor whose node died, its process
    killed, a device fault there): its jobs go back to the front of the queue, to be made
    by another worker (or this one once it is back); the message says what happened."""


class WorkerNotReady(WorkerLost):
    """The worker was down before the batch was sent to it: nothing was made, so its jobs
    go back without counting as a worker lost while making them."""


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

def cost(job: Job) -> float:
    """How much work a job is, in the unit the speed is measured in: each step runs over
    every pixel of every picture, and text encoding plus decoding cost about one step more.
    Image-to-image runs only its strength's share of the steps; an upscale counts its passes
    over the result's pixels (a rough match, but the same unit)."""
    steps = job.steps
    if job.kind == "img2img":
        steps = max(1, math.ceil(job.steps * job.strength))
    return job.width * job.height * job.count * (steps + 1)


def resolve(future: asyncio.Future | None, result: Result | float) -> None:
    if future is not None and not future.done():  # the waiter may have been cancelled
        future.set_result(result)
