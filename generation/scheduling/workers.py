"""The workers: one thread per runner (a device), each taking batches from the queue and
making them, so that exactly one thread drives each GPU.

A worker knows the queue only as its `source` (take a batch, hand results back, report a
fault or its own death), so that another kind of worker can take batches the same way.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from ..job import GenerationError, Result
from ..runtime.device import make_current
from . import progress
from .runner import Runner, WorkerLost
from .ticket import Ticket

log = logging.getLogger(__name__)

# How far a worker on a CPU steps below the chat side's priority (in nice levels, 0 to 19).
CPU_NICENESS = 10


@dataclass
class Worker:
    """One worker thread and the runner (the device) it owns."""

    index: int
    runner: Runner
    source: object = field(repr=False)  # the GenerationQueue it takes batches from
    thread: threading.Thread | None = None
    running: list[Ticket] = field(default_factory=list)  # the batch being made
    since: float = 0.0
    # When the last batch ended with jobs still waiting (for the queue's idle figure).
    finished_with_work_left: float | None = None
    jobs: int = 0  # jobs it made (their results handed back)
    busy_seconds: float = 0.0

    def start(self, name: str) -> None:
        self.thread = threading.Thread(target=self._work_guarded, name=name, daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _work_guarded(self) -> None:
        """The worker, restarted by its source when something escapes it (a job's ordinary
        exceptions are caught in `_run`; this is for what is not an Exception, like
        SystemExit from a library, or a fault in this loop itself)."""
        try:
            # torch's current CUDA device is per thread and 0 in a new one: the workers of
            # cuda:1 and above make their own current before anything runs on them.
            if self.device is not None:
                make_current(self.device)
            self._yield_to_chat()
            self._work()
        except BaseException as exc:
            self.source.died(self, exc)

    @property
    def device(self) -> str | None:
        """The device its runner makes pictures on ("cpu", "cuda:0"); None for a remote one."""
        placement = self.runner.placement
        return str(placement.device) if placement is not None else None

    @property
    def name(self) -> str:
        """What made a picture, for its record: the device, or a remote worker's host."""
        return self.runner.worker_name or self.device or f"worker {self.index}"

    def _yield_to_chat(self) -> None:
        """On a CPU, run this thread (and the threads torch starts from it, which inherit
        its priority) below the bot's chat side (its event loop, encoding and uploads),
        which shares the cores: a picture that is made then waits for nothing but its own
        upload and send, not for the next batch's arithmetic. The CPU is busy either way,
        so the pictures per second stay. A GPU worker keeps its priority: the GPU must
        never wait for a kernel launch."""
        if self.device != "cpu" or not sys.platform.startswith("linux"):
            return  # elsewhere a thread's ID is not a target of setpriority
        try:
            thread = threading.get_native_id()
            now = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(19, now + CPU_NICENESS))
        except OSError as exc:  # not allowed here: it runs as before
            log.debug("the CPU worker keeps its priority: %s", exc)

    @property
    def up(self) -> bool:
        """Whether it can take a batch now (a remote worker may be down for a while)."""
        return self.alive and self.runner.up

    def _work(self) -> None:
        self.finished_with_work_left = None
        while True:
            # A remote worker takes nothing while it is down: the jobs wait for another.
            if not self.runner.wait_ready(self.source.closing):
                return
            batch = self.source.take(self)
            if batch is None:
                return
            try:
                results = self._run(batch)
            except WorkerLost as exc:
                self.source.give_back(self, batch, exc)
                continue
            if not self.source.finished(self, batch, results):
                return

    def _run(self, batch: list[Ticket]) -> list[Result]:
        runner, source = self.runner, self.source
        started = time.monotonic()

        def told(value: progress.Progress) -> None:
            for ticket in batch:
                ticket.progress = value

        try:
            with progress.reporting(told):
                if len(batch) == 1:
                    made = [runner.generate(batch[0].job)]
                else:
                    made = runner.generate_batch([t.job for t in batch])
        except WorkerLost:
            raise  # the whole batch goes back to the queue (`_work`)
        except Exception as exc:  # the worker must survive any one job
            ids = ", ".join(str(t.id) for t in batch)
            if len(batch) > 1 and not is_device_fault(exc):
                # One job's fault (or a batch too large for the memory) must not fail the
                # jobs beside it: each is made again on its own.
                log.warning(
                    "the batch of jobs %s failed (%s: %s); making each alone",
                    ids,
                    type(exc).__name__,
                    exc,
                )
                return [result for ticket in batch for result in self._run([ticket])]
            if isinstance(exc, GenerationError):
                return [
                    source.result(t, error=str(exc), queue_seconds=started - t.submitted)
                    for t in batch
                ]
            if is_device_fault(exc):
                # The device is now unusable for every job: these are handed back (to be
                # made again after a restart), and the worker takes no more.
                log.critical(
                    "job %s hit a device fault; the GPU needs a fresh process: %s", ids, exc
                )
                source.device_failed(exc)
                return [
                    source.result(
                        t, error=str(exc), interrupted=True, queue_seconds=started - t.submitted
                    )
                    for t in batch
                ]
            log.exception("job %s failed", ids)
            return [
                source.result(
                    t,
                    queue_seconds=started - t.submitted,
                    error=f"generation failed: {type(exc).__name__}: {exc}",
                )
                for t in batch
            ]
        seconds = time.monotonic() - started
        if batch[0].job.kind != "upscale":
            # An upscale's speed says nothing about the diffusion model's (a Lanczos resize
            # is a hundred times faster per pixel): it would spoil every later estimate.
            source.observe_batch([t.job for t in batch], seconds)
        pictures = sum(t.job.count for t in batch)
        extra = {"worker": self.name, **({"batch_pictures": pictures} if len(batch) > 1 else {})}
        return [
            source.result(
                t,
                images=tuple(images),
                queue_seconds=started - t.submitted,
                generation_seconds=seconds,
                extra=dict(extra),
            )
            for t, images in zip(batch, made)
        ]


def is_device_fault(exc: BaseException) -> bool:
    """A fault after which the CUDA context is unusable (an illegal memory access, a device
    assert, ECC): every later call fails too, and only a new process recovers. Out of
    memory is not one (it is a GenerationError, or torch.cuda.OutOfMemoryError)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return False
    return type(exc).__name__ == "AcceleratorError" or "CUDA error" in str(exc)
