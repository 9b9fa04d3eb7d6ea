"""The first-word rule as a room sees it: each mistake gets one notice and no job, through
the bot's own intake, with a recording fake client, a fake queue and a real SQLite file."""

from __future__ import annotations

import itertools

import pytest
from nio import RoomSendResponse

from bot.chat.bot import Bot
from bot.config import Settings
from bot.matrix import messages
from bot.ops.tasks import TaskOwner
from bot.store import db as database
from tests.chat.language.test_first_word import NOT_TAKEN
from tests.helpers.runners import StubRunner

ROOM = "!room:example.org"
ADMIN, PERSON = "@admin:example.org", "@person:example.org"
EVENT_IDS = (f"$command{n}" for n in itertools.count())


class RecordingClient:
    user_id = "@imgbot:example.org"
    olm = None

    def __init__(self):
        self.rooms: dict = {}
        self.encrypted_rooms: set = set()
        self.sent: list[dict] = []

    async def room_send(self, room_id, event_type, content, tx_id=None, **kwargs):
        self.sent.append(content)
        return RoomSendResponse(f"$sent{len(self.sent)}", room_id)


class RecordingQueue:
    """Any job that reached it would be a picture made; none may."""

    runner = StubRunner(name="m", models=["m"], native_size=lambda name="": (512, 512))
    paused = False
    workers_up = 1

    def __init__(self):
        self.jobs: list = []

    def admit(self, owner):
        self.jobs.append(("admit", owner))

    def submit(self, job, **kwargs):
        self.jobs.append(("submit", job))
        raise AssertionError("a job was queued")


@pytest.fixture
async def bot(tmp_path):
    settings = Settings(
        matrix={
            "homeserver_url": "http://127.0.0.1:1",
            "user_id": RecordingClient.user_id,
            "admins": [ADMIN],
        }
    )
    db = await database.connect(tmp_path / "imgbot.sqlite3")
    made = Bot(RecordingClient(), settings, db=db, queue=RecordingQueue(), tasks=TaskOwner())
    yield made
    await db.close()


async def say(bot, body: str, sender: str = PERSON, replying_to: str | None = None) -> list:
    content = {"msgtype": "m.text", "body": body}
    if replying_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": replying_to}}
    await bot.on_event(
        ROOM,
        {
            "type": "m.room.message",
            "sender": sender,
            "event_id": next(EVENT_IDS),
            "content": content,
        },
    )
    return bot.client.sent


async def one_notice(bot, body: str, **kwargs) -> str:
    sent = await say(bot, body, **kwargs)
    assert [c["msgtype"] for c in sent] == ["m.notice"], sent
    assert bot.queue.jobs == [] and not bot.pending
    return sent[0]["body"]


@pytest.mark.parametrize(
    "text", [pytest.param(text, id=text) for cases in NOT_TAKEN.values() for text, _ in cases]
)
@pytest.mark.parametrize("sender", [PERSON, ADMIN])
async def test_what_a_subcommand_does_not_take_is_one_notice_and_no_job(bot, text, sender):
    await one_notice(bot, f"!img {text}", sender=sender)


@pytest.mark.parametrize("sender", [PERSON, ADMIN])
async def test_the_issues_examples(bot, sender):
    assert "up to 99999" in await one_notice(bot, "!img usage 99999999999999999999d", sender=sender)
    bot.client.sent.clear()
    assert "not an option" in await one_notice(bot, "!img --", sender=sender)
    bot.client.sent.clear()
    assert "The prompt is empty" in await one_notice(bot, "!img \u202e\u202e", sender=sender)
    bot.client.sent.clear()
    assert "!img edit <what to change>" in await one_notice(bot, "!img edit", sender=sender)


async def test_edit_with_no_reply_says_to_reply_to_a_picture(bot):
    text = await one_notice(bot, "!img edit make it night")
    assert "Reply to a picture with `!img edit <what to change>`" in text


async def test_edit_of_a_picture_says_no_editing_model_is_configured(bot):
    text = await one_notice(bot, "!img edit make it night", replying_to="$picture")
    assert "generation.edit_model" in text and "generation.models" in text


async def test_help_does_not_offer_edit_while_the_bot_cannot_edit(bot):
    sent = await say(bot, "!img help")
    assert len(sent) == 1 and "!img edit" not in sent[0]["body"]
    sent = await say(bot, "!img help options")
    assert len(sent) == 2 and "!img edit" not in sent[1]["body"]
    assert '"cancel" culture' in sent[1]["body"]


async def test_an_answer_target_sent_from_outside_is_dropped(bot):
    """Where answers go is the bot's to say: a command event that carries the key the bot
    uses for a reaction's target is answered in reply to itself all the same."""
    await bot.on_event(
        ROOM,
        {
            "type": "m.room.message",
            "sender": PERSON,
            "event_id": "$mine",
            "content": {"msgtype": "m.text", "body": "!img styles"},
            messages.ANSWER_TO: {"event_id": "$elsewhere", "sender": "@victim:example.org"},
        },
    )
    (sent,) = bot.client.sent
    assert sent["m.relates_to"] == {"m.in_reply_to": {"event_id": "$mine"}}
    assert sent["m.mentions"] == {"user_ids": [PERSON]}
