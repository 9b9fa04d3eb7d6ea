"""A reaction through a crash, against the real homeserver: the bot, run as a process, is
killed with SIGKILL after it took a reaction in (the job written down, its status notice
sent) and before its picture; the next start makes that picture, once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bot.store import db as database
from bot.store import usage
from tests.cli.test_cli import start_bot, write_config
from tests.helpers.chatting import Chat

pytestmark = pytest.mark.synapse

BOT = "@imgbot:localhost"


async def rows_in(state: Path) -> list[dict]:
    """The usage log of the bot whose state folder is `state` (it may be running)."""
    db = await database.connect(state / "imgbot.sqlite3")
    try:
        return await usage.query(db)
    finally:
        await db.close()


async def stopped(bot: asyncio.subprocess.Process, how: signal.Signals) -> int:
    bot.send_signal(how)
    return await asyncio.wait_for(bot.wait(), 60)


async def test_a_reaction_taken_in_before_a_sigkill_is_answered_once_after_the_restart(
    homeserver, test_model, tmp_path, alice: Chat
):
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "config.yaml", homeserver, test_model, state, admins=[alice.user_id]
    )
    log = tmp_path / "bot.log"
    bot = await start_bot(config, log)
    try:
        room = await alice.room_with(BOT)
        asked = await alice.send(room, "!img a red fox --seed 5")
        (picture,) = await alice.wait_reply(room, asked, "m.image", timeout=120)
        pid = picture["event_id"]
        pause = await alice.send(room, "!img pause")  # kept in the database through the kill
        await alice.wait_reply(room, pause, "m.notice")
        reaction = await alice.react(room, pid, "🔁")
        # Taken in: its status notice ("queued, paused") answers at the picture, and its
        # usage row is written.
        (status,) = await alice.wait_reply(room, pid, "m.notice")
        assert [r["status"] for r in await rows_in(state) if r["event_id"] == reaction] == [
            "queued"
        ]
    finally:
        code = await stopped(bot, signal.SIGKILL)
    assert code == -signal.SIGKILL, log.read_text()
    await alice.sync(0)
    assert alice.replies(room, pid, "m.image") == []  # no picture before the kill

    bot = await start_bot(config, log)
    try:
        resume = await alice.send(room, "!img resume")
        (again,) = await alice.wait_reply(room, pid, "m.image", timeout=120)
        await alice.wait_reply(room, resume, "m.notice")
        await asyncio.sleep(2)  # a second answer, if one were coming, would be here by now
        await alice.sync(0)
    finally:
        code = await stopped(bot, signal.SIGTERM)
    assert code == 0, log.read_text()
    assert again["content"]["body"].startswith("🔁 for @alice:localhost"), again
    assert len(alice.replies(room, pid, "m.image")) == 1
    # Nothing else said about it: the status notice from before the kill, and no error.
    assert [e["event_id"] for e in alice.replies(room, pid, "m.notice")] == [status["event_id"]]
    mine = [r for r in await rows_in(state) if r["event_id"] == reaction]
    assert [(r["status"], r["images"], r["user_id"]) for r in mine] == [("ok", 1, alice.user_id)]
