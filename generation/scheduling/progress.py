"""Progress of the batch a worker is making, as plain values through the seam: the engine's
step callback and the upscaler's tiles `report`, the worker hands each value to the tickets
of its batch, and the chat side reads the newest when it wants to.

A ticket keeps only the newest value (one reference, replaced whole), so the GPU never waits
for the chat side: what the chat side did not read in time is dropped, not queued.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_local = threading.local()  # the sink of the batch this worker thread is making


@dataclass(frozen=True)
class Progress:
    """`done` of `total` units (diffusion steps, or the upscaler's tiles) of part `part` of
    `parts` (picture i of a set made one after the other, or pass i of an upscale; 0 of 0
    when the job is made in one go)."""

    done: int
    total: int
    unit: str = "step"  # "step" or "tile"
    part: int = 0
    parts: int = 0
    at: float = field(default_factory=time.monotonic)

    @property
    def fraction(self) -> float:
        """How much of the job is done, 0..1."""
        within = self.done / self.total if self.total else 0.0
        if self.parts > 1:
            return min(1.0, ((self.part - 1) + within) / self.parts)
        return min(1.0, within)


@contextmanager
def reporting(sink: Callable[[Progress], None]) -> Iterator[None]:
    """While the block runs on this thread, what is reported goes to `sink`."""
    previous = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = previous


def report(done: int, total: int, unit: str = "step", part: int = 0, parts: int = 0) -> None:
    """Say how far the work of this thread's batch is; nothing when nobody listens."""
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink(Progress(done, total, unit, part, parts))


def step_callback(total: int, part: int = 0, parts: int = 0):
    """A diffusers `callback_on_step_end` that reports each finished step; None when
    nobody listens (the pipeline then calls nothing)."""
    if getattr(_local, "sink", None) is None:
        return None

    def on_step_end(pipe, index: int, timestep, tensors: dict) -> dict:
        # The pipeline knows how many steps it runs (img2img runs only its strength's share).
        steps = getattr(pipe, "_num_timesteps", None) or total
        report(index + 1, steps, "step", part, parts)
        return {}  # no tensor is changed

    return on_step_end
