"""Commands that arrive while the disk is full (bot/chat/intake.py): one the bot could not
store waits in its room's lane and is taken once space is back, answered once; one taken
whose change could not be saved gets one notice that says so. A real SQLite log and a
real paused queue; the claim's write fails the way SQLite fails on a full disk, and the
watch reads a faked statvfs. The whole bot on a real full filesystem is in
tests/ops/test_disk_full_chat.py."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from generation.scheduling.queue import GenerationQueue

from bot.chat import intake

from bot.chat.jobs import accepting
from bot.chat.bot import Bot
from bot.config import DiskSettings, Settings
from bot.ops.disk import DiskWatch
from bot.ops.tasks import TaskOwner
from bot.store import db as database
from tests.chat.jobs.test_accepting import BOT, NoticeClient, Runner
from tests.ops.test_disk import FakeDisk

ROOM = "!room:example.org"
ALICE = "@alice:example.org"


class FullDisk:
    """The disk as the bot sees it: statvfs, and SQLite's writes that fail while full."""

    def __init__(self, monkeypatch):
        self.statvfs = FakeDisk(free_mib=1024)
        self.full = False
        for module, name in ((database, "insert_claim"), (database, "set_state")):
            real = getattr(module, name)

            async def failing(*args, _real=real, **kwargs):
                if self.full:
                    raise sqlite3.OperationalError("database or disk is full")
                return await _real(*args, **kwargs)

            monkeypatch.setattr(module, name, failing)

    def fill(self) -> None:
        self.full, self.statvfs.free_mib = True, 1

    def free(self) -> None:
        self.full, self.statvfs.free_mib = False, 1024


@pytest.fixture
async def bot(tmp_path, monkeypatch):
    disk = FullDisk(monkeypatch)
    db = await database.connect(tmp_path / "imgbot.sqlite3")
    queue = GenerationQueue(Runner(), max_size=100, per_user=5)
    queue.start()
    queue.pause()
    tasks = TaskOwner()
    settings = Settings(
        matrix={"homeserver_url": "http://127.0.0.1:1", "user_id": BOT, "admins": [ALICE]},
        progress={"interval_seconds": 60},
        state_dir=tmp_path,
    )
    watch = DiskWatch(
        tmp_path, DiskSettings(warn_free_mib=64, full_free_mib=16), statvfs=disk.statvfs, every=0.05
    )
    made = Bot(NoticeClient(), settings, db, queue, tasks, disk=watch)
    made.disk = disk
    yield made
    await tasks.cancel_all()
    await queue.close(timeout=5)
    await db.close()


def command(n: int, body: str) -> dict:
    return {
        "type": "m.room.message",
        "sender": ALICE,
        "event_id": f"$cmd{n}",
        "content": {"msgtype": "m.text", "body": body},
    }


async def test_a_command_the_full_disk_refused_is_taken_once_space_is_back(bot):
    bot.disk.fill()
    first, second = command(1, "!img a cat"), command(2, "!img a dog")
    # The room's lane, as a sync hands it on: the second waits behind the first.
    handled = [
        bot.intake.lanes.hand(ROOM, lambda e=e: bot.on_event(ROOM, e)) for e in (first, second)
    ]
    await asyncio.sleep(0.5)  # readings while full: nothing taken, nothing sent
    assert not any(h.done() for h in handled)
    assert bot.client.sent == [] and len(bot.pending) == 0
    assert bot.when_stored.waiting == 1
    assert not await database.was_handled(bot.db, "$cmd1")

    bot.disk.free()
    await asyncio.wait_for(asyncio.gather(*handled), 10)
    assert {p.stored.event_id for p in bot.pending} == {
        "$cmd1",
        "$cmd2",
    }  # taken, in the room's order
    assert [p.ticket.id for p in bot.pending] == sorted(p.ticket.id for p in bot.pending)
    assert await database.was_handled(bot.db, "$cmd1")
    assert bot.when_stored.waiting == 0
    # Handled again (the sync that brought it, fetched again after a restart): nothing more.
    await bot.on_event(ROOM, first)
    assert len(bot.pending) == 2 and bot.queue.depth == 2


async def test_a_refusal_the_full_disk_refused_is_sent_once_space_is_back(bot):
    bot.disk.fill()
    waiting = asyncio.ensure_future(bot.on_event(ROOM, command(1, "!img a cat --steps 0")))
    await asyncio.sleep(0.3)
    assert not waiting.done() and bot.client.sent == []
    bot.disk.free()
    await asyncio.wait_for(waiting, 10)
    answers = bot.client.replies_to("$cmd1")
    assert len(answers) == 1 and "steps" in answers[0], answers


async def test_a_change_taken_but_not_saved_gets_one_notice_that_says_so(bot, monkeypatch):
    # The claim is stored; the pause itself is not: the one answer says so, and the queue
    # is not paused behind the admin's back.
    real_claim = database.claim_event

    async def claim_then_fill(*args, **kwargs):
        claimed = await real_claim(*args, **kwargs)
        bot.disk.fill()
        return claimed

    monkeypatch.setattr(intake.database, "claim_event", claim_then_fill)
    bot.queue.resume()
    await bot.on_event(ROOM, command(1, "!img pause"))
    assert bot.client.replies_to("$cmd1") == [intake.NOT_SAVED]
    assert not bot.queue.paused
    assert await database.was_handled(bot.db, "$cmd1")


async def test_any_other_failure_of_a_claim_is_not_waited_on(bot, monkeypatch):
    async def broken(*args, **kwargs):
        raise sqlite3.OperationalError("no such table: handled_events")

    monkeypatch.setattr(accepting.database, "insert_claim", broken)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await asyncio.wait_for(bot.on_event(ROOM, command(1, "!img a cat")), 5)
    assert bot.when_stored.waiting == 0
