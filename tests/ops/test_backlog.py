"""Writes a full disk put off (`bot/ops/backlog.py`): made in the order they came once the
space is back, none lost while the bot runs, and none landing ahead of an earlier one.
The disk is a faked statvfs and the writes fail as SQLite fails; a real full disk is in
tests/ops/test_disk_full_chat.py."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from bot.config import DiskSettings
from bot.ops.backlog import Backlog
from bot.ops.disk import SQLITE_FULL_HOLD_SECONDS, DiskWatch
from bot.ops.tasks import TaskOwner
from tests.ops.test_disk import FakeDisk


class Store:
    """Writes that fail as SQLite fails while `full` is set."""

    def __init__(self):
        self.full = False
        self.rows: list[str] = []
        self.tries = 0

    def write(self, row: str):
        async def step() -> None:
            self.tries += 1
            if self.full:
                raise sqlite3.OperationalError("database or disk is full")
            self.rows.append(row)

        return step


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def parts(tmp_path):
    disk = FakeDisk(free_mib=1024)
    disk.clock = Clock()
    watch = DiskWatch(
        tmp_path,
        DiskSettings(warn_free_mib=64, full_free_mib=16),
        statvfs=disk,
        every=0.05,
        clock=disk.clock,
    )
    tasks = TaskOwner()
    yield Backlog(watch, tasks), Store(), disk, tasks
    await tasks.cancel_all()


async def until(condition, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


async def test_a_write_with_space_is_made_at_once(parts):
    backlog, store, _, tasks = parts
    await backlog.write("a row", store.write("a"))
    assert store.rows == ["a"] and len(backlog) == 0 and len(tasks) == 0


async def test_writes_the_full_disk_refused_are_made_in_order_once_space_is_back(parts, caplog):
    backlog, store, disk, _ = parts
    caplog.set_level(logging.INFO, logger="bot.ops.backlog")
    await backlog.write("row a", store.write("a"))
    store.full, disk.free_mib = True, 2
    for row in "bcd":
        await backlog.write(f"row {row}", store.write(row))  # returns: the caller goes on
    assert len(backlog) == 3 and store.rows == ["a"]
    await asyncio.sleep(0.3)  # several readings while full: nothing is written, or lost
    assert len(backlog) == 3 and store.rows == ["a"]

    # The space comes back, but the first write after it fails once more (a quota, a
    # burst): the backlog waits again, for more space or the end of the hold after
    # SQLite's last "disk is full", and keeps the order.
    disk.free_mib = 1024
    await until(lambda: store.tries >= 3)
    store.full = False
    await asyncio.sleep(0.3)
    assert len(backlog) == 3
    disk.clock.now += SQLITE_FULL_HOLD_SECONDS + 1
    await until(lambda: len(backlog) == 0)
    assert store.rows == ["a", "b", "c", "d"]
    said = [r.getMessage() for r in caplog.records if r.name == "bot.ops.backlog"]
    assert said == [
        "the disk is full: row b is written once space is back",
        "the writes the full disk had put off are made",
    ]


async def test_a_write_waits_behind_those_put_off_even_when_it_could_be_made(parts):
    # A job's outcome must not land before the record of its posted reply.
    backlog, store, disk, _ = parts
    store.full, disk.free_mib = True, 2
    await backlog.write("the reply", store.write("reply"))
    store.full = False  # SQLite could write now, but the watch has not seen space yet
    await backlog.write("the outcome", store.write("outcome"))
    await asyncio.sleep(0.3)
    assert store.rows == [] and len(backlog) == 2
    disk.free_mib = 1024
    await until(lambda: len(backlog) == 0)
    assert store.rows == ["reply", "outcome"]


async def test_any_other_failure_is_raised_to_the_caller(parts):
    backlog, _, _, _ = parts

    async def broken() -> None:
        raise sqlite3.OperationalError("no such table: usage")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await backlog.write("a row", broken)
    assert len(backlog) == 0


async def test_a_stop_while_full_says_what_is_lost_and_where_it_comes_back(parts, caplog):
    backlog, store, disk, tasks = parts
    store.full, disk.free_mib = True, 2
    await backlog.write("row a", store.write("a"))
    await backlog.write("row b", store.write("b"))
    await asyncio.sleep(0.1)  # it waits for space
    await tasks.cancel_all()
    assert (
        "2 writes put off by the full disk are lost with this stop; the jobs they "
        "belong to are still stored and made again at the next start (their replies "
        "are not posted twice)"
    ) in caplog.text
