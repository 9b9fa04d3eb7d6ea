"""`imgbot bench --backend ray`: the workload made by GPU workers on a Ray cluster through
the bot's own queue (its batching, one worker per slot), to show how the pictures per second
grow with the workers, and what the remote call costs a batch beside the worker's own time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from ..job import Job
from ..scheduling.queue import GenerationQueue
from .link import Link
from .remote import RemoteRunner
from .spec import ClusterSpec

READY_SECONDS = 600.0  # for every worker to load its model (real models load for minutes)


@dataclass(frozen=True)
class ClusterFigures:
    workers: int
    pictures: int
    wall_seconds: float  # first job submitted to last result
    # Per batch: the round trip seen by the bot's worker thread, and the actor's own time.
    round_trips: list[float]
    remote_seconds: list[float]

    @property
    def pictures_per_second(self) -> float:
        return self.pictures / self.wall_seconds

    @property
    def overheads(self) -> list[float]:
        return [trip - own for trip, own in zip(self.round_trips, self.remote_seconds)]

    def table(self) -> str:
        over = sorted(self.overheads)
        return "\n".join(
            [
                f"on the Ray cluster, {self.workers} worker(s):",
                f"  pictures per second      {self.pictures_per_second:8.3f}  "
                f"({self.pictures} in {self.wall_seconds:.2f} s, first job to last picture)",
                f"  remote call per batch    median {statistics.median(over) * 1000:.0f} ms, "
                f"max {over[-1] * 1000:.0f} ms (the bot's round trip minus the worker's own "
                f"time: pickling, the bridge, Ray, PNG there and back; {len(over)} batches)",
            ]
        )


def run(
    spec: ClusterSpec,
    catalogue,
    *,
    count: int,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    max_batch: int,
    say=print,
) -> ClusterFigures:
    """Connect, wait for every worker, then time `count` one-picture jobs."""
    link = Link(spec)
    link.start(120)
    try:
        runners = [_Timed(link, slot, catalogue) for slot in range(spec.workers)]
        say(f"waiting for {spec.workers} worker(s) to load the model…")
        deadline = time.monotonic() + READY_SECONDS
        while sum(link.up(slot) for slot in range(spec.workers)) < spec.workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers were not all up within {READY_SECONDS:.0f} s")
            time.sleep(0.5)
        return asyncio.run(_measure(runners, count, width, height, steps, guidance, max_batch))
    finally:
        link.stop()


async def _measure(
    runners: list, count: int, width: int, height: int, steps: int, guidance: float, max_batch: int
) -> ClusterFigures:
    queue = GenerationQueue(runners, max_size=count + 1, per_user=count + 1, max_batch=max_batch)
    queue.start()
    started = time.monotonic()
    tickets = [
        queue.submit(
            Job(
                prompt=f"bench picture {i}",
                seed=i,
                steps=steps,
                width=width,
                height=height,
                guidance=guidance,
            ),
            "bench",
        )
        for i in range(count)
    ]
    results = [await ticket.result for ticket in tickets]
    wall = time.monotonic() - started
    await queue.close(30)
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} pictures failed: {failed[0]}")
    trips = [trip for runner in runners for trip, _ in runner.calls]
    own = [seconds for runner in runners for _, seconds in runner.calls]
    return ClusterFigures(len(runners), count, wall, trips, own)


class _Timed(RemoteRunner):
    """A remote runner that notes each batch's round trip and the actor's own seconds."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls: list[tuple[float, float]] = []

    def _made(self, jobs: list[Job]) -> dict:
        started = time.monotonic()
        payload = super()._made(jobs)
        self.calls.append((time.monotonic() - started, payload.get("seconds", 0.0)))
        return payload
