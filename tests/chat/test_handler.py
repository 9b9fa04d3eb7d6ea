"""The handler's own guarantees, with a recording fake client (no homeserver needed)."""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
from nio import InviteMemberEvent

from bot.config import Settings
from bot.chat.bot import Bot
from bot.ops.tasks import TaskOwner
from tests.helpers.runners import StubRunner


class FlakyClient:
    """Joins fail for rooms in `broken`; every call is recorded."""

    user_id = "@imgbot:example.org"

    def __init__(self, broken: set[str]):
        self.broken = broken
        self.calls: list[tuple[str, str]] = []

    async def join(self, room_id):
        self.calls.append(("join", room_id))
        if room_id in self.broken:
            raise aiohttp.ClientConnectionError("connection reset")
        return SimpleNamespace(room_id=room_id)

    async def room_leave(self, room_id):
        self.calls.append(("leave", room_id))


# What the handler asks of the runner at start: the models there are.
RUNNER = StubRunner(name="m", models=["m"], native_size=lambda name="": (512, 512))


def invite(room_id: str, inviter: str):
    event = InviteMemberEvent.from_dict(
        {
            "type": "m.room.member",
            "sender": inviter,
            "state_key": FlakyClient.user_id,
            "content": {"membership": "invite"},
        }
    )
    return room_id, SimpleNamespace(invite_state=[event])


async def test_one_failing_event_does_not_stop_the_others():
    settings = Settings(
        matrix={"homeserver_url": "http://127.0.0.1:1", "user_id": FlakyClient.user_id}
    )
    client = FlakyClient(broken={"!first:example.org"})
    bot = Bot(client, settings, db=None, queue=SimpleNamespace(runner=RUNNER), tasks=TaskOwner())
    response = SimpleNamespace(
        rooms=SimpleNamespace(
            invite=dict(
                [
                    invite("!first:example.org", "@alice:example.org"),
                    invite("!second:example.org", "@bob:example.org"),
                    invite("!third:example.org", "@mallory:elsewhere.org"),
                ]
            ),
            join={},
            leave={},
        )
    )
    handled = await bot.on_sync(response, first=False)
    await handled  # in the rooms' own lanes: the sync loop did not wait for them
    assert sorted(client.calls) == [
        ("join", "!first:example.org"),
        ("join", "!second:example.org"),
        ("leave", "!third:example.org"),
    ]


async def test_malformed_content_is_ignored_not_fatal():
    settings = Settings(
        matrix={"homeserver_url": "http://127.0.0.1:1", "user_id": FlakyClient.user_id}
    )
    bot = Bot(
        FlakyClient(set()),
        settings,
        db=None,
        queue=SimpleNamespace(runner=RUNNER),
        tasks=TaskOwner(),
    )
    for body in ("hello", "!img a cat"):
        # Any room member can send this; a string where an object belongs must not raise.
        await bot.on_event(
            "!room:example.org",
            {
                "type": "m.room.message",
                "sender": "@mallory:elsewhere.org",
                "event_id": "$x",
                "content": {"msgtype": "m.text", "body": body, "m.relates_to": "oops"},
            },
        )
