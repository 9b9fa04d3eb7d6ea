"""The free space of state_dir's filesystem: warned about before it runs out, and shown
(/healthz, /metrics, `imgbot check`) while it is out.

A full disk is one of the commonest faults of a real server (logs or backups fill the
partition), and the bot keeps everything it must not lose in SQLite in state_dir: its login,
its sync position, the jobs and the usage log. `space` is the verdict over one statvfs
reading, pure; `DiskWatch` takes a reading every CHECK_SECONDS and logs a change of level
once, not at every reading. It also learns from SQLite itself: a "database or disk is full"
that the bot logs anywhere marks the disk full, because a quota, or a burst that filled and
emptied between two readings, can fail a write while statvfs shows space.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from bot.config import DiskSettings

log = logging.getLogger(__name__)

MIB = 1024 * 1024
CHECK_SECONDS = 10.0
# After SQLite said the disk was full, the watch says so too until the free space has grown
# since, or this long has passed without SQLite saying it again (a transient burst).
SQLITE_FULL_HOLD_SECONDS = 60.0

Statvfs = Callable[[Path], os.statvfs_result]


class Level(enum.Enum):
    OK = "ok"
    LOW = "low"  # below disk.warn_free_mib: works, but say so
    FULL = "full"  # below disk.full_free_mib, out of inodes, or SQLite said so


@dataclass(frozen=True)
class Space:
    level: Level
    free_bytes: int  # what the bot (not root) may still write
    reason: str  # one line for the operator

    @property
    def full(self) -> bool:
        return self.level is Level.FULL


def mib(size: int) -> str:
    """A size in MiB as an operator reads it: 0.4 MiB near the end, whole MiB above 10."""
    value = size / MIB
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def space(stat: os.statvfs_result, warn_free_mib: int, full_free_mib: int) -> Space:
    """The verdict on one statvfs reading of state_dir's filesystem."""
    # f_bavail, not f_bfree: the blocks ext4 keeps for root are no use to the bot's user.
    free = stat.f_bavail * stat.f_frsize
    said = f"state_dir's filesystem has {mib(free)} MiB free"
    # f_files is 0 where the filesystem makes inodes as it goes (btrfs): none to run out of.
    if stat.f_files and not stat.f_favail:
        return Space(Level.FULL, free, f"{said} but no free inodes (of {stat.f_files}): "
                                       "no file can be made")
    if free < full_free_mib * MIB:
        return Space(Level.FULL, free, f"{said} (limit {full_free_mib} MiB)")
    if free < warn_free_mib * MIB:
        return Space(Level.LOW, free, f"{said} (warning below {warn_free_mib} MiB)")
    return Space(Level.OK, free, said)


def is_disk_full(exc: BaseException | None) -> bool:
    """SQLite's "database or disk is full", also as the cause of another exception."""
    seen = 0
    while exc is not None and seen < 8:  # a chain is short; a cycle must not hang us
        if isinstance(exc, sqlite3.OperationalError) and (
                getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                or "database or disk is full" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class DiskWatch:
    """state_dir's free space, read every CHECK_SECONDS by `run`; `current()` is what
    /healthz and the metrics show."""

    def __init__(self, state_dir: Path, settings: DiskSettings, *,
                 statvfs: Statvfs = os.statvfs, clock: Callable[[], float] = time.monotonic):
        self.state_dir = state_dir
        self.settings = settings
        self._statvfs = statvfs
        self._clock = clock
        self._reading: Space | None = None
        self._unreadable: str | None = None
        # (when, free bytes then) of the last "database or disk is full" from SQLite; the
        # free bytes are None until the next check reads them
        self._sqlite_full: tuple[float, int | None] | None = None
        self._said = Level.OK  # the level the log last told of

    def current(self) -> Space | None:
        """The last reading, full while SQLite's last "disk is full" holds; None before the
        first reading or while statvfs fails."""
        reading, note = self._reading, self._sqlite_full
        if note is None or (reading is not None and reading.full):
            return reading
        free = reading.free_bytes if reading is not None else (note[1] or 0)
        return Space(Level.FULL, free, f"SQLite could not write in state_dir: database or disk "
                                       f"is full (statvfs shows {mib(free)} MiB free)")

    def check(self) -> Space | None:
        """Read the free space now (blocking: a statvfs), log a change, return the verdict."""
        try:
            stat = self._statvfs(self.state_dir)
        except OSError as exc:
            error = exc.strerror or str(exc)
            if error != self._unreadable:
                log.warning("cannot read the free space of state_dir %s: %s", self.state_dir,
                            error)
            self._unreadable, self._reading = error, None
            return self.current()
        self._unreadable = None
        reading = space(stat, self.settings.warn_free_mib, self.settings.full_free_mib)
        note = self._sqlite_full
        if note is not None and note[1] is None:  # heard of since the last check
            self._sqlite_full = (note[0], reading.free_bytes)
        elif note is not None and (reading.free_bytes > note[1]
                                   or self._clock() - note[0] > SQLITE_FULL_HOLD_SECONDS):
            self._sqlite_full = None
        self._reading = reading
        self._tell(self.current())
        return self.current()

    def sqlite_full(self) -> None:
        """SQLite said "database or disk is full": the disk counts as full from now on, until
        the free space grows or SQLITE_FULL_HOLD_SECONDS pass without it being said again.
        Called from any thread (a logging handler), the event loop's included: it only
        notes the time, and the next check reads the space (statvfs may block) and logs."""
        self._sqlite_full = (self._clock(), None)

    def _tell(self, now: Space | None) -> None:
        """Log a change of level once: the way down as a warning or an error, the way back
        as info."""
        level = now.level if now is not None else Level.OK
        if now is None or level is self._said:
            return
        if level is Level.FULL:
            log.error("%s: the disk counts as full (/healthz answers 503); the bot cannot "
                      "store what it is sent until space is freed", now.reason)
        elif level is Level.LOW:
            if self._said is Level.FULL:
                log.warning("%s: no longer full, but still low", now.reason)
            else:
                log.warning("%s: free some space before it runs out (below %d MiB it counts "
                            "as full)", now.reason, self.settings.full_free_mib)
        else:
            log.info("%s again, above disk.warn_free_mib (%d MiB)", now.reason,
                     self.settings.warn_free_mib)
        self._said = level

    async def run(self, stop: asyncio.Event) -> None:
        """Read every CHECK_SECONDS until `stop` is set, and meanwhile listen to the logs
        for SQLite's "disk is full" (wherever the bot catches and logs it)."""
        listener = _SqliteFullListener(self)
        root = logging.getLogger()
        root.addHandler(listener)
        try:
            while not stop.is_set():
                await asyncio.to_thread(self.check)  # statvfs can block on a network mount
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=CHECK_SECONDS)
        finally:
            root.removeHandler(listener)


class _SqliteFullListener(logging.Handler):
    """The seam through which the watch hears of SQLite's "database or disk is full": every
    place that catches a failed write logs it with its exception (the sync token's save,
    an event's handling, a background task, the retention), so the log is where they meet."""

    def __init__(self, watch: DiskWatch):
        super().__init__(logging.WARNING)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.exc_info and is_disk_full(record.exc_info[1]):
                self.watch.sqlite_full()
        except Exception:  # noqa: BLE001 - never raise into the code that was logging
            self.handleError(record)
