"""The queue's runner once pictures can be iterated on: diffusion jobs go to the engine (or
the model pool), upscale jobs to the upscaler, and either result may be enhanced.

An upscale job never touches a diffusion model: it neither loads one nor waits for one to
load, so `!img upscale` works with the pool's models all unloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..families.known import Family
from ..job import GenerationError, Job
from ..runtime.device import Placement
from ..scheduling.runner import LocalRunner
from .enhance import enhance
from .upscale import Upscaler, UpscalerError

log = logging.getLogger(__name__)


class FinishingRunner(LocalRunner):
    """Runs every kind of job on the worker thread; wraps `runner` (an Engine or a
    ModelPool) and `upscaler`.

    The whole Runner protocol is written out here, each member the wrapped runner's where
    it has one, and `load`, `warm_up` and `unload`, which the app calls at start and stop;
    nothing else is read through it."""

    finishing = True

    def __init__(self, runner: LocalRunner, upscaler: Upscaler | None = None):
        self.runner = runner
        self.upscaler = upscaler or Upscaler(None)

    # ---- the Runner protocol ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def models(self) -> list[str]:
        return self.runner.models

    def native_size(self, name: str = "") -> tuple[int, int]:
        return self.runner.native_size(name)

    def family_of(self, name: str = "") -> Family:
        return self.runner.family_of(name)

    def generate(self, job: Job) -> list:
        """The job's pictures: upscaled, or made by the diffusion runner; then enhanced
        when the job asks for it."""
        if job.kind == "upscale":
            images = [self._upscale(job)]
        else:
            images = self.runner.generate(job)
        if job.enhance:
            images = [enhance(image) for image in images]
        return images

    def batch_key(self, job: Job):
        """What jobs must share to be made in one call (None: this one is made alone)."""
        if job.kind != "txt2img":
            return None
        return self.runner.batch_key(job)

    def generate_batch(self, jobs: list[Job]) -> list[list]:
        """Several jobs of one `batch_key` in one pipeline call; their pictures, per job."""
        made = self.runner.generate_batch(jobs)
        return [
            [enhance(image) for image in images] if job.enhance else images
            for job, images in zip(jobs, made)
        ]

    # ---- what the app calls at start and stop ------------------------------------------------

    def load(self, *args) -> None:
        """Load the diffusion runner (`args` as its own `load` takes them) and the upscaler,
        so that a broken upscaler file is found at start (UpscalerError names the file)."""
        self.runner.load(*args)
        self.upscaler.load()

    def warm_up(self, width: int, height: int, steps: int = 1) -> float:
        """Warm up the diffusion runner (its seconds are returned) and the upscaler, on a
        small picture: the first `!img upscale` should not pay for kernel setup either."""
        seconds = self.runner.warm_up(width, height, steps)
        self.upscaler.warm_up()
        return seconds

    def unload(self) -> None:
        self.runner.unload()

    # ---- the worker's own: the wrapped runner's ---------------------------------------------

    @property
    def placement(self) -> Placement | None:
        return self.runner.placement

    @property
    def worker_name(self) -> str:
        return self.runner.worker_name

    @property
    def up(self) -> bool:
        return self.runner.up

    def wait_ready(self, closing: Callable[[], bool]) -> bool:
        return self.runner.wait_ready(closing)

    # ---- for captions -----------------------------------------------------------------------

    @property
    def upscaler_name(self) -> str:
        """The upscaler's file name, or "Lanczos" when none is configured."""
        return self.upscaler.name

    @property
    def ai_upscaler(self) -> bool:
        """Whether upscaling uses a model (False: a Lanczos resize, which adds no detail)."""
        return self.upscaler.path is not None

    # ---- upscaling ----------------------------------------------------------------------------

    def _upscale(self, job: Job):
        if job.image is None:
            raise GenerationError("An upscale job needs a source picture.")
        expected = (job.image.width * job.factor, job.image.height * job.factor)
        if (job.width, job.height) != expected:
            # The job's size is what the bot promised (and checked against its limits).
            raise GenerationError(
                f"An upscale by {job.factor} of {job.image.width}x"
                f"{job.image.height} is {expected[0]}x{expected[1]}, not "
                f"{job.width}x{job.height}."
            )
        if job.factor == 1:  # ✨ on a picture: the picture itself, only finished (enhanced)
            return job.image.convert("RGB")
        try:
            return self.upscaler.upscale(job.image, job.factor)
        except UpscalerError:
            log.exception("the upscaler %s cannot be used", self.upscaler.path)
            raise GenerationError(
                "The upscaler could not be loaded; the bot's log says why."
            ) from None
