"""A picture a moderator removed (redacted) has no card: `!img info` in its thread gets the
notice, not the prompt, who asked and the command that makes it again; and a moderator's
redaction of one of the bot's pictures makes the bot forget it."""

from __future__ import annotations

from types import SimpleNamespace

from nio import RoomGetEventResponse, RoomGetStateResponse, RoomSendResponse

from bot.chat.bot import Bot
from bot.config import Settings
from bot.ops.tasks import TaskOwner
from bot.store import db as database
from bot.store import gallery, usage
from generation.job import Job
from tests.helpers.runners import StubRunner

BOT, ROOM, MOD = "@imgbot:example.org", "!room:example.org", "@mod:example.org"
RUNNER = StubRunner(name="m", models=["m"], native_size=lambda name="": (512, 512))
SECRET = "something the moderator removed"


class Client:
    user_id = BOT
    olm = None

    def __init__(self, redacted: bool):
        self.rooms = {ROOM: SimpleNamespace(encrypted=False)}
        self.encrypted_rooms: set = set()
        self.sent: list[dict] = []
        self.redacted = redacted

    async def room_get_event(self, room_id, event_id):
        content = (
            {} if self.redacted else {"msgtype": "m.image", "body": "a picture", "url": "mxc://x/y"}
        )
        return RoomGetEventResponse.from_dict(
            {
                "type": "m.room.message",
                "event_id": event_id,
                "sender": BOT,
                "room_id": room_id,
                "origin_server_ts": 1,
                "content": content,
            }
        )

    async def room_get_state(self, room_id):
        levels = {"users": {MOD: 50}, "redact": 50}
        return RoomGetStateResponse(
            [{"type": "m.room.power_levels", "state_key": "", "content": levels}], room_id
        )

    async def room_send(self, room_id, event_type, content, tx_id=None, **kwargs):
        self.sent.append(content)
        return RoomSendResponse(f"$sent{len(self.sent)}", room_id)


async def bot_with_a_picture(tmp_path, redacted: bool):
    db = await database.connect(tmp_path / "imgbot.sqlite3")
    job = Job(prompt=SECRET, seed=5, steps=2, width=64, height=64)
    row = await usage.record_job(
        db, usage.NewJob("$cmd", ROOM, "@alice:example.org", SECRET, job.record(), 5, "m")
    )
    await gallery.remember(db, "$pic", ROOM, row, job.record(), SECRET, 0)
    settings = Settings(matrix={"homeserver_url": "http://127.0.0.1:1", "user_id": BOT})
    queue = SimpleNamespace(runner=RUNNER)
    return Bot(Client(redacted), settings, db=db, queue=queue, tasks=TaskOwner()), db


def info_in_the_thread_of(picture: str) -> dict:
    thread = {"rel_type": "m.thread", "event_id": picture, "is_falling_back": True}
    return {
        "type": "m.room.message",
        "sender": "@bob:example.org",
        "event_id": "$info",
        "content": {"msgtype": "m.text", "body": "!img info", "m.relates_to": thread},
    }


async def test_a_picture_still_there_has_its_card(tmp_path):
    bot, db = await bot_with_a_picture(tmp_path, redacted=False)
    await bot.on_event(ROOM, info_in_the_thread_of("$pic"))
    assert SECRET in bot.client.sent[-1]["body"]
    await db.close()


async def test_a_redacted_picture_has_no_card(tmp_path):
    bot, db = await bot_with_a_picture(tmp_path, redacted=True)
    await bot.on_event(ROOM, info_in_the_thread_of("$pic"))
    (said,) = bot.client.sent
    assert SECRET not in said["body"] and "info` works in reply to a picture" in said["body"]
    await db.close()


async def test_a_moderators_redaction_makes_the_bot_forget_its_picture(tmp_path):
    bot, db = await bot_with_a_picture(tmp_path, redacted=False)
    someone = {"type": "m.room.redaction", "sender": "@bob:example.org", "event_id": "$r1"}
    await bot.on_event(ROOM, {**someone, "redacts": "$pic"})  # no power: not applied
    assert await gallery.find(db, "$pic", ROOM) is not None
    await bot.on_event(ROOM, {**someone, "sender": MOD, "event_id": "$r2", "redacts": "$pic"})
    assert await gallery.find(db, "$pic", ROOM) is None
    await db.close()
