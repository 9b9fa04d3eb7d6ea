"""Accepting commands sent at once from several rooms: each room's lane handles its own, so
without one lock a person the limits would be checked for every command before any was
counted. A real SQLite usage log and a real (paused) generation queue; the client records
the notices, and writing a job down is slowed the way a busy disk slows it."""

from __future__ import annotations

import asyncio

import pytest
from nio import RoomSendResponse
from PIL import Image

from generation.scheduling import runner
from generation.scheduling.queue import GenerationQueue

from bot.chat.jobs import accepting
from bot.chat.bot import Bot
from bot.chat.language.parser import parse
from bot.config import Settings
from bot.ops.tasks import TaskOwner
from bot.store import db as database

BOT = "@imgbot:example.org"
ALICE = "@alice:example.org"
ROOMS = [f"!room{i}:example.org" for i in range(6)]


class Runner(runner.Runner):
    """Never asked to make anything: the queue stays paused."""

    name = "m"
    models = ["m"]

    def native_size(self, name: str = "") -> tuple[int, int]:
        return 512, 512

    def generate(self, job) -> list[Image.Image]:
        raise AssertionError("the queue is paused")


class NoticeClient:
    user_id = BOT
    olm = None

    def __init__(self):
        self.rooms: dict = {}
        self.encrypted_rooms: set = set()
        self.sent: list[tuple[str, dict]] = []

    async def room_send(self, room_id, message_type, content, tx_id=None, **_):
        self.sent.append((room_id, content))
        return RoomSendResponse(f"$sent{len(self.sent)}", room_id)

    async def room_typing(self, *args, **kwargs):
        return None

    def replies_to(self, event_id: str) -> list[str]:
        return [
            content.get("body", "")
            for _, content in self.sent
            if (content.get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
            == event_id
        ]


@pytest.fixture
async def bot(tmp_path, monkeypatch):
    slow_accept = accepting.jobs.accept

    async def accept(*args, **kwargs):
        await asyncio.sleep(0.05)  # the other rooms' lanes run meanwhile
        return await slow_accept(*args, **kwargs)

    monkeypatch.setattr(accepting.jobs, "accept", accept)
    db = await database.connect(tmp_path / "imgbot.sqlite3")
    queue = GenerationQueue(Runner(), max_size=100, per_user=2)
    queue.start()
    queue.pause()
    tasks = TaskOwner()

    def make(**sections) -> Bot:
        settings = Settings(
            matrix={"homeserver_url": "http://127.0.0.1:1", "user_id": BOT},
            progress={"interval_seconds": 60},
            **sections,
        )
        queue.per_user = settings.limits.per_user_queued
        return Bot(NoticeClient(), settings, db, queue, tasks)

    yield make
    await tasks.cancel_all()
    await queue.close(timeout=5)
    await db.close()


async def commands_at_once(bot: Bot, body: str) -> list[str]:
    """The same person's command in every room at once; the event IDs."""
    events = [
        {
            "type": "m.room.message",
            "sender": ALICE,
            "event_id": f"$cmd{i}",
            "content": {"msgtype": "m.text", "body": body},
        }
        for i, _ in enumerate(ROOMS)
    ]
    prefix, limits = bot.settings.matrix.command_prefix, bot.settings.limits
    await asyncio.gather(
        *(
            bot.acceptor.on_generate(room, event, parse(body, prefix, limits))
            for room, event in zip(ROOMS, events)
        )
    )
    return [event["event_id"] for event in events]


async def test_commands_from_several_rooms_at_once_keep_the_per_user_queue_limit(bot):
    made = bot(limits={"per_user_queued": 2})
    commands = await commands_at_once(made, "!img a cat")
    assert made.queue.depth == len(made.pending) == 2
    refused = [
        c
        for c in commands
        if any(
            "You already have 2 jobs queued (the limit is 2)" in text
            for text in made.client.replies_to(c)
        )
    ]
    assert len(refused) == len(ROOMS) - 2


async def test_commands_from_several_rooms_at_once_keep_the_hourly_quota(bot):
    made = bot(limits={"per_user_queued": 10}, quotas={"pictures_per_hour": 5})
    commands = await commands_at_once(made, "!img a cat --n 2")
    assert made.queue.depth == len(made.pending) == 2  # a third job: 6 pictures
    refused = [
        c
        for c in commands
        if any("the limit is 5 per hour" in text for text in made.client.replies_to(c))
    ]
    assert len(refused) == len(ROOMS) - 2
    assert len(made.acceptor._people) == 0  # no lock is kept once nobody holds it
