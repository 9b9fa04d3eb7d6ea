"""The runner a worker drives (the engine, the model pool, the finishing runner around them,
a remote worker, or a fake in unit tests), and the ways a worker can be lost while it
drives one."""

from __future__ import annotations

from typing import Protocol

from ..errors import ImgbotError
from ..job import Job


class Runner(Protocol):
    """What the worker drives: the engine or the model pool, or a fake in unit tests."""

    name: str  # the default model's name
    models: list[str]  # every model a job may name, the default first

    def native_size(self, name: str = "") -> tuple[int, int]: ...

    def generate(self, job: Job) -> list: ...


class WorkerLost(ImgbotError):
    """The worker went away while it made a batch (a Ray actor whose node died, its process
    killed, a device fault there): its jobs go back to the front of the queue, to be made
    by another worker (or this one once it is back); the message says what happened."""


class WorkerNotReady(WorkerLost):
    """The worker was down before the batch was sent to it: nothing was made, so its jobs
    go back without counting as a worker lost while making them."""
