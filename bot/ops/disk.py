"""The free space of state_dir's filesystem: warned about before it runs out, and shown
(/healthz, /metrics, `imgbot check`) while it is out.

A full disk is one of the commonest faults of a real server (logs or backups fill the
partition), and the bot keeps everything it must not lose in SQLite in state_dir: its login,
its sync position, the jobs and the usage log. `space` is the verdict over one statvfs
reading, pure; `DiskWatch` takes a reading every CHECK_SECONDS and logs a change of level
once, not at every reading. It also learns from SQLite itself: a "database or disk is full"
that the bot logs anywhere marks the disk full, because a quota, or a burst that filled and
emptied between two readings, can fail a write while statvfs shows space. What cannot be
written meanwhile waits in `space_back` (a command not yet taken, bot/chat/intake.py; the
writes of a job already delivered, backlog.py) and goes on once the space is back.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.config import DiskSettings
from bot.store.db import SQLITE_IOERR, causes, is_disk_full

log = logging.getLogger(__name__)

MIB = 1024 * 1024
CHECK_SECONDS = 10.0
# After SQLite said the disk was full, the watch says so too until the free space has grown
# since, or this long has passed without SQLite saying it again (a transient burst).
SQLITE_FULL_HOLD_SECONDS = 60.0
# How often what waits for space looks at the last reading (a memory read, not a statvfs).
WAIT_POLL_SECONDS = 0.5

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
        return Space(
            Level.FULL, free, f"{said} but no free inodes (of {stat.f_files}): no file can be made"
        )
    if free < full_free_mib * MIB:
        return Space(Level.FULL, free, f"{said} (limit {full_free_mib} MiB)")
    if free < warn_free_mib * MIB:
        return Space(Level.LOW, free, f"{said} (warning below {warn_free_mib} MiB)")
    return Space(Level.OK, free, said)


def _sqlite_io_error(exc: BaseException | None) -> bool:
    """SQLite's "disk I/O error" (SQLITE_IOERR and its extended codes), in a chain."""
    return any(
        isinstance(cause, sqlite3.OperationalError)
        and (
            (getattr(cause, "sqlite_errorcode", None) or 0) & 0xFF == SQLITE_IOERR
            or "disk I/O error" in str(cause)
        )
        for cause in causes(exc)
    )


def refused_for_space(exc: BaseException, reading: Space | None) -> bool:
    """Whether a write failed for want of space: the words of SQLite or of the filesystem
    say so, or SQLite's "disk I/O error" while `reading` (taken after the failure) shows the
    disk full: SQLite says that when it cannot make or grow its -shm file."""
    return is_disk_full(exc) or (_sqlite_io_error(exc) and reading is not None and reading.full)


class DiskWatch:
    """state_dir's free space, read every `every` seconds by `run`; `current()` is what
    /healthz and the metrics show."""

    def __init__(
        self,
        state_dir: Path,
        settings: DiskSettings,
        *,
        statvfs: Statvfs = os.statvfs,
        clock: Callable[[], float] = time.monotonic,
        every: float = CHECK_SECONDS,
    ):
        self.state_dir = state_dir
        self.every = every  # seconds between readings
        self.settings = settings
        self._statvfs = statvfs
        self._clock = clock
        self._reading: Space | None = None
        self._unreadable: str | None = None
        # (when, free bytes then) of the last "database or disk is full" from SQLite; the
        # free bytes are None until the next check reads them
        self._sqlite_full: tuple[float, int | None] | None = None
        self._said = Level.OK  # the level the log last told of
        self._running = False  # `run` takes the readings; else `space_back` does
        # `run`'s loop, and the event that has it read at once (set from any thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def current(self) -> Space | None:
        """The last reading, full while SQLite's last "disk is full" holds; None before the
        first reading or while statvfs fails."""
        reading, note = self._reading, self._sqlite_full
        if note is None or (reading is not None and reading.full):
            return reading
        free = reading.free_bytes if reading is not None else (note[1] or 0)
        return Space(
            Level.FULL,
            free,
            f"SQLite could not write in state_dir: database or disk "
            f"is full (statvfs shows {mib(free)} MiB free)",
        )

    def check(self) -> Space | None:
        """Read the free space now (blocking: a statvfs), log a change, return the verdict."""
        try:
            stat = self._statvfs(self.state_dir)
        except OSError as exc:
            error = exc.strerror or str(exc)
            if error != self._unreadable:
                log.warning("cannot read the free space of state_dir %s: %s", self.state_dir, error)
            self._unreadable, self._reading = error, None
            note = self._sqlite_full
            if note is not None and self._clock() - note[0] > SQLITE_FULL_HOLD_SECONDS:
                self._sqlite_full = None  # no reading can show the space grow: the hold ends
            return self.current()
        self._unreadable = None
        reading = space(stat, self.settings.warn_free_mib, self.settings.full_free_mib)
        note = self._sqlite_full
        if note is not None and note[1] is None:  # heard of since the last check
            self._sqlite_full = (note[0], reading.free_bytes)
        elif note is not None and (
            reading.free_bytes > note[1] or self._clock() - note[0] > SQLITE_FULL_HOLD_SECONDS
        ):
            self._sqlite_full = None
        self._reading = reading
        self._tell(self.current())
        return self.current()

    def sqlite_full(self) -> None:
        """SQLite said "database or disk is full": the disk counts as full from now on, until
        the free space grows or SQLITE_FULL_HOLD_SECONDS pass without it being said again.
        Called from any thread (a logging handler), the event loop's included: it only
        notes the time, and wakes `run` to read the space now (statvfs may block) and log."""
        self._sqlite_full = (self._clock(), None)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def refused(self, exc: BaseException) -> bool:
        """Whether `exc` is a write the disk refused for want of space (see
        `refused_for_space`; the reading is taken now, only where it is needed)."""
        if is_disk_full(exc):
            return True
        return _sqlite_io_error(exc) and refused_for_space(exc, await asyncio.to_thread(self.check))

    async def space_back(self) -> None:
        """Wait, after a write failed for want of space, until the disk no longer counts as
        full. The failure itself marks it full (SQLite may fail where statvfs shows space),
        so the wait ends when the free space has grown or the hold has passed. The
        readings are `run`'s, every `every` seconds; a watch that does not run (a bot built
        without bot.app) reads for itself."""
        self.sqlite_full()
        while True:
            if not self._running:
                await asyncio.to_thread(self.check)
            now = self.current()
            if now is None or not now.full:
                return
            await asyncio.sleep(WAIT_POLL_SECONDS if self._running else self.every)

    def _tell(self, now: Space | None) -> None:
        """Log a change of level once: the way down as a warning or an error, the way back
        as info."""
        level = now.level if now is not None else Level.OK
        if now is None or level is self._said:
            return
        if level is Level.FULL:
            log.error(
                "%s: the disk counts as full (/healthz answers 503); commands sent "
                "meanwhile wait, and are taken once space is freed",
                now.reason,
            )
        elif level is Level.LOW:
            if self._said is Level.FULL:
                log.warning("%s: no longer full, but still low", now.reason)
            else:
                log.warning(
                    "%s: free some space before it runs out (below %d MiB it counts as full)",
                    now.reason,
                    self.settings.full_free_mib,
                )
        else:
            log.info(
                "%s again, above disk.warn_free_mib (%d MiB)",
                now.reason,
                self.settings.warn_free_mib,
            )
        self._said = level

    async def run(self, stop: asyncio.Event) -> None:
        """Read every `every` seconds until `stop` is set, and meanwhile listen to the logs
        for SQLite's "disk is full" (wherever the bot catches and logs it)."""
        listener = _SqliteFullListener(self)
        root = logging.getLogger()
        root.addHandler(listener)
        self._running = True
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        try:
            while not stop.is_set():
                self._wake.clear()
                await asyncio.to_thread(self.check)  # statvfs can block on a network mount
                # The next reading when it is due, or at once when SQLite said "full".
                stopped, woken = (asyncio.ensure_future(e.wait()) for e in (stop, self._wake))
                await asyncio.wait(
                    {stopped, woken}, timeout=self.every, return_when=asyncio.FIRST_COMPLETED
                )
                stopped.cancel()
                woken.cancel()
        finally:
            self._running = False
            self._loop = self._wake = None
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
