"""The queue's sense of speed: seconds per unit of work (`cost`), measured as jobs run, and
the wait it gives a job behind others."""

from __future__ import annotations

import math
import time

from ..job import Job
from .ticket import Ticket


def cost(job: Job) -> float:
    """How much work a job is, in the unit the speed is measured in: each step runs over
    every pixel of every picture, and text encoding plus decoding cost about one step more.
    Image-to-image runs only its strength's share of the steps; an upscale counts its passes
    over the result's pixels (a rough match, but the same unit)."""
    steps = job.steps
    if job.kind == "img2img":
        steps = max(1, math.ceil(job.steps * job.strength))
    return job.width * job.height * job.count * (steps + 1)


class Pace:
    def __init__(self):
        # Seconds per unit of `cost`, measured (a moving mean); None until something ran.
        self.seconds_per_cost: float | None = None

    def observe_batch(self, jobs: list[Job], seconds: float) -> None:
        rate = seconds / sum(cost(job) for job in jobs)
        # A moving mean, so the estimate follows the current load and sizes.
        self.seconds_per_cost = (
            rate if self.seconds_per_cost is None else (0.7 * self.seconds_per_cost + 0.3 * rate)
        )

    def eta(self, workers: list, waiting_ahead: list[Ticket]) -> float | None:
        """Seconds until a job behind `waiting_ahead` (and the running ones) starts."""
        rate = self.seconds_per_cost
        if rate is None:
            return None
        running = 0.0
        now = time.monotonic()
        for worker in workers:
            if worker.running:
                left = sum(cost(t.job) for t in worker.running) * rate - (now - worker.since)
                running += max(0.0, left)
        # The workers share the work ahead: a rough split, as good as the speed estimate.
        # With none up (a cluster whose workers are all away) nobody can say.
        up = sum(1 for worker in workers if worker.up)
        if not up:
            return None
        return (running + sum(cost(t.job) for t in waiting_ahead) * rate) / up
