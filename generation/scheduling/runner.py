"""The runner a worker drives (the engine, the model pool, the finishing runner around them,
a remote worker, or a fake in unit tests), and the ways a worker can be lost while it
drives one."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

from ..errors import ImgbotError
from ..families.known import SD, Family
from ..job import Job
from ..runtime.device import Placement


class Runner(Protocol):
    """Everything a worker, the queue and the chat side may ask of a runner: the engine, the
    model pool, the finishing runner around either, a remote worker, or a fake in tests.

    Every runner has every member, so that nothing asks whether it has one. Where a member
    has a body or a value here, that is the neutral answer of a runner with nothing to say
    (a local runner is always up; one without an upscaler names none); a runner subclasses
    this protocol (`class Engine(Runner)`) to take those answers, and writes out the rest."""

    name: str  # the default model's name
    models: list[str]  # every model a job may name, the default first

    # ---- the models, read before a job is made -------------------------------------------

    def native_size(self, name: str = "") -> tuple[int, int]: ...

    def family_of(self, name: str = "") -> Family:
        """What the model can do (families/known.py); SD's abilities for a runner that has
        no families (a test's fake)."""
        return SD

    # ---- making pictures -------------------------------------------------------------------

    def generate(self, job: Job) -> list: ...

    def batch_key(self, job: Job) -> Hashable | None:
        """What jobs must share to be made in one `generate_batch` call; None: this one is
        made alone (every job, for a runner that makes one at a time)."""
        return None

    def generate_batch(self, jobs: list[Job]) -> list[list]:
        """The pictures of each of several jobs of one `batch_key`, in one call where the
        runner can; the queue gives it more than one only where `batch_key` says so."""
        return [self.generate(job) for job in jobs]

    # ---- finishing: upscale jobs, enhancing, and what a caption says of them ----------------

    # It makes upscale jobs and enhances itself (a FinishingRunner; a remote worker, whose
    # host runs one); False: `bot.app.with_tools` puts a FinishingRunner around it.
    finishing: bool = False
    upscaler_name: str = ""  # the upscaler a caption names; "": none
    ai_upscaler: bool = False  # an upscale uses a model; False: a Lanczos resize, or none

    # ---- the worker's own: where it runs, whether it can take a batch now --------------------

    # The device and precision it makes pictures with; None for a remote worker, a model
    # not loaded yet, or a fake.
    placement: Placement | None = None
    # What made a picture, for its record: a remote worker's host; "": the worker names
    # itself by its device.
    worker_name: str = ""
    up: bool = True  # it can take a batch now (a remote worker may be down a while)

    def wait_ready(self, closing: Callable[[], bool]) -> bool:
        """Block until it can take a batch (True), or until `closing()` (False); a local
        runner is ready at once."""
        return True


class LocalRunner(Runner, Protocol):
    """A runner whose models load in this process (the engine, the model pool, the
    finishing runner around either), as the app, the actor and the bench start and stop
    it; a remote worker's host does that for it."""

    def load(self, *args) -> None:
        """Load the model (a pool: the one named, or its default), so that a wrong folder
        or setting fails the start rather than the first job."""
        ...

    def warm_up(self, width: int, height: int, steps: int = 1) -> float:
        """Make a small picture once, so the first job pays for no setup; its seconds."""
        ...

    def unload(self) -> None:
        """Give the device's memory back; a later job loads again."""
        ...


class WorkerLost(ImgbotError):
    """The worker went away while it made a batch (a Ray actor whose node died, its process
    killed, a device fault there): its jobs go back to the front of the queue, to be made
    by another worker (or this one once it is back); the message says what happened."""


class WorkerNotReady(WorkerLost):
    """The worker was down before the batch was sent to it: nothing was made, so its jobs
    go back without counting as a worker lost while making them."""
