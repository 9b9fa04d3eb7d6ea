"""What the queue does when a worker fails (GenerationQueue takes these methods): a lost
remote worker's batch goes back to the front of the line, a device fault stops the taking,
a worker that died is started again. They run on the workers' threads, under the queue's
lock; each crossing to the event loop goes through `call_soon_threadsafe`."""

from __future__ import annotations

import asyncio
import logging
import time

from .tickets import Ticket, WorkerNotReady, resolve

log = logging.getLogger("generation.queue")

# A job whose making loses this many workers fails instead of going back again: it may be
# what ends them (a fault it causes on every device).
MAX_LOST = 3


class WorkerFaults:
    def give_back(self, worker, batch: list[Ticket], exc: BaseException) -> None:
        """The worker was lost while it made `batch` (WorkerLost): its jobs go back to the
        front of the queue, in their order, and wait to be started again, to be made by
        another worker (or this one once it is back) and answered once."""
        sent = not isinstance(exc, WorkerNotReady)  # else nothing was made: no loss counts
        failed, kept = [], []
        with self._cond:
            worker.running = []
            self.busy_seconds += time.monotonic() - worker.since
            closing = self._closing
            for ticket in reversed(batch):
                ticket.lost += sent
                if closing:  # kept in the job store, for the next start
                    kept.append(ticket)
                elif ticket.lost >= MAX_LOST:  # the job itself may be what ends workers
                    failed.append(ticket)
                else:
                    # The chat side reads `started` anew: the job shows as waiting again.
                    ticket.started = asyncio.Future(loop=self._loop)
                    ticket.progress = None
                    self._waiting.appendleft(ticket)
            if sent:
                self.given_back += len(batch) - len(failed) - len(kept)
            self._cond.notify_all()
        ids = ", ".join(str(t.id) for t in batch)
        if sent:
            log.warning("%s was lost while making job(s) %s (%s); they go back to the front "
                        "of the queue", worker.name, ids, exc)
        for ticket in failed:
            error = (f"generation failed: {MAX_LOST} GPU workers were lost while making it "
                     f"(the last: {exc})")
            self._loop.call_soon_threadsafe(resolve, ticket.result,
                                            self.result(ticket, error=error))
        for ticket in kept:
            self._loop.call_soon_threadsafe(resolve, ticket.result, self.result(
                ticket, error="interrupted", interrupted=True))

    def device_failed(self, exc: BaseException) -> None:
        """The device is unusable (a CUDA error): take no more jobs; the owner ends the
        process, so that a new one starts."""
        with self._cond:
            self.device_fault = exc
            self._closing = True

    def died(self, worker, exc: BaseException) -> None:
        """Something escaped the worker: its batch fails, and a new worker starts."""
        with self._cond:
            batch, worker.running = worker.running, []
            closing = self._closing
        log.critical("the GPU worker died (%s: %s)%s", type(exc).__name__, exc,
                     "" if closing else "; starting a new one", exc_info=True)
        for ticket in batch:
            result = self.result(ticket, error=f"generation failed: the GPU worker "
                                               f"stopped ({type(exc).__name__})")
            self._loop.call_soon_threadsafe(resolve, ticket.result, result)
        if not closing:
            self.restarts += 1
            self._loop.call_soon_threadsafe(self._start_worker, worker)

