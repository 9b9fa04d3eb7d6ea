"""A remote worker as the queue's workers see it: the runner a worker thread drives, in
place of a local engine. The models' names, families, sizes and batch keys come from the
configs of the same folders on the bot's host (nothing is loaded here); the pictures come
from the Ray actor in this worker's slot, and are read as PNG only, each of its job's own
size (a member of the cluster can make a worker return anything)."""

from __future__ import annotations

from PIL import Image

from ..families.known import Family
from ..job import GenerationError, Job
from ..scheduling import progress
from ..scheduling.runner import Runner
from . import messages
from .link import Link, log


class RemoteRunner(Runner):
    # Its host wraps the engine in a finishing runner; nothing of it is placed here.
    finishing = True
    placement = None

    def __init__(self, link: Link, slot: int, catalogue: Runner):
        self.link = link
        self.slot = slot
        self.catalogue = catalogue  # a FinishingRunner around the engine(s), not loaded
        self.made_by = ""  # the worker that made the last batch, in its own words

    # ---- what the chat side and the queue read -------------------------------------------------

    @property
    def name(self) -> str:
        return self.catalogue.name

    @property
    def models(self) -> list[str]:
        return self.catalogue.models

    def native_size(self, name: str = "") -> tuple[int, int]:
        return self.catalogue.native_size(name)

    def family_of(self, name: str = "") -> Family:
        return self.catalogue.family_of(name)

    def batch_key(self, job: Job):
        return self.catalogue.batch_key(job)

    @property
    def upscaler_name(self) -> str:
        return self.catalogue.upscaler_name

    @property
    def ai_upscaler(self) -> bool:
        return self.catalogue.ai_upscaler

    # ---- the worker's own ------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.link.up(self.slot)

    @property
    def worker_name(self) -> str:
        """The actor in the slot; the one that made the last batch when the slot is down."""
        return (
            self.link.slots[self.slot].info.get("worker")
            or self.made_by
            or f"ray worker #{self.slot}"
        )

    def wait_ready(self, closing) -> bool:
        return self.link.wait_up(self.slot, closing)

    def generate(self, job: Job) -> list:
        return self.generate_batch([job])[0]

    def generate_batch(self, jobs: list[Job]) -> list[list]:
        """The pictures of each job, made by the actor (WorkerLost when it went away;
        GenerationError when what came back is not a valid answer)."""
        payload = self._made(jobs)
        self.made_by = payload["worker"]
        return [
            [_picture(data, job) for data in pictures]
            for job, pictures in zip(jobs, payload["images"], strict=True)
        ]

    def _made(self, jobs: list[Job]) -> dict:
        def told(value: progress.Progress) -> None:
            progress.report(value.done, value.total, value.unit, value.part, value.parts)

        return self.link.run(self.slot, jobs, told)


def _picture(data: bytes, job: Job) -> Image.Image:
    """A worker's picture: a PNG of exactly the job's width×height (an upscale's too: its
    width and height are the result's), so that the pixels read are never more than the
    job's own size, in RGB, as the workers make them; GenerationError (NOT_VALID) for
    anything else. Only its pixels are kept: a fresh picture without the PNG's extras
    (ICC profile, transparency colour, gamma, text), so that what the bot checks (the
    safety classifier sees RGB) and signs is what a viewer shows. An alpha channel, or a
    palette, could show something else over another background, a profile remap colours:
    such a picture is refused, not converted."""
    try:
        image = messages.picture(data, (job.width, job.height))
        if image.mode != "RGB":
            raise messages.Invalid(f"a picture is in mode {image.mode}, not RGB")
    except messages.Invalid as exc:
        log.warning("a worker's picture was refused: %s", exc)
        raise GenerationError(messages.NOT_VALID) from None
    return Image.frombytes("RGB", image.size, image.tobytes())
