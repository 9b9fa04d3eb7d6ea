"""The watchdog: ends the process when the sync loop stops making progress.

A thread, not a task: a task cannot notice that the event loop itself is stuck. The exit
is deliberately abrupt (os._exit, non-zero) so that the service manager (systemd's
Restart=on-failure) starts imgbot again; nothing is lost by it, because every accepted
job is in SQLite and is resumed at the next start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

EXIT_STALLED = 3


def _exit_stalled() -> None:
    logging.shutdown()
    os._exit(EXIT_STALLED)


class Watchdog:
    def __init__(self, limit_seconds: float, on_stall: Callable[[], None] = _exit_stalled):
        self.limit = limit_seconds
        self.on_stall = on_stall
        self.last_beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Progress: a sync attempt ended, or an event was handled."""
        self.last_beat = time.monotonic()

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(10.0, self.limit / 4)):
            idle = time.monotonic() - self.last_beat
            if idle > self.limit:
                log.critical(
                    "the sync loop made no progress for %.0f s (watchdog_seconds is "
                    "%.0f); exiting so that the service manager restarts imgbot",
                    idle,
                    self.limit,
                )
                self.on_stall()
                return
