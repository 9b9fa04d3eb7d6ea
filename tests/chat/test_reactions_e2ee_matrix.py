"""Reactions in an encrypted room, from a matrix-js-sdk user with Rust crypto (Element's
model: it trusts only cross-signed devices), on a real Synapse with the tiny model: the
bot's buttons show under its encrypted picture, a tap on 🔁 (sent in the clear, as Element
and js-sdk send reactions) makes one new picture, encrypted, in reply; so does a 🔁 sent
encrypted, as some other clients send it."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from tests.conftest import PASSWORD
from tests.helpers.chatting import bot_running
from tests.helpers.e2ee_client import JsClient
from tests.matrix.test_e2ee_js import bot_settings, new_user

pytestmark = pytest.mark.synapse


async def poll(what: str, check, timeout: float = 60):
    """Ask `check` (async) until it returns something truthy; that."""
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s: {what}"
        await asyncio.sleep(0.2)
    return found


async def at_least(keys, count: int) -> list[str] | None:
    """The keys (awaited) when there are `count` or more."""
    got = await keys
    return got if len(got) >= count else None


async def picture_in_reply(user: JsClient, room: str, bot: str, to: str) -> dict:
    """The bot's picture in reply to `to`, once it is decrypted."""

    async def found():
        for event in await user.events(room, sender=bot, types=["m.room.message"]):
            content = event["content"]
            replies_to = (content.get("m.relates_to") or {}).get("m.in_reply_to") or {}
            if event["settled"] and content.get("msgtype") == "m.image":
                if replies_to.get("event_id") == to:
                    return event
        return None

    return await poll(f"a picture in reply to {to}", found)


async def test_a_js_sdk_user_taps_the_buttons_in_an_encrypted_room(
    make_settings, engine, homeserver, tmp_path
):
    settings = bot_settings(make_settings, homeserver)
    bot = settings.matrix.user_id
    async with await JsClient.login(homeserver, new_user(homeserver, "js"), PASSWORD) as user:
        async with bot_running(settings, engine):
            room = await user.create_room([bot])
            command = await user.send_text(room, "!img a lighthouse at dusk --seed 11")
            first = await picture_in_reply(user, room, bot, command)
            pid = first["event_id"]
            buttons = await poll(
                "the bot's buttons",
                lambda: at_least(user.reactions(room, pid, bot), 3),
            )
            assert buttons == ["🔁", "🎲", "🔍"]
            # Sent as Element sends reactions in an encrypted room: in the clear.
            pills = await user.events(room, sender=bot, types=["m.reaction"])
            assert pills and not any(e["encrypted"] for e in pills), pills

            tapped = await user.react(room, pid, "🔁")  # in the clear, as Element sends it
            again = await picture_in_reply(user, room, bot, pid)

            # Sent encrypted instead, as some clients do: the same command.
            hidden = await user.react(room, again["event_id"], "🔁", encrypted=True)
            third = await picture_in_reply(user, room, bot, again["event_id"])
            mine = {e["event_id"]: e for e in await user.events(room, sender=user.user_id)}
            await asyncio.sleep(2)  # a second answer, if one were coming, would be here by now
            after = await user.events(room, sender=bot, types=["m.room.message"])

        assert mine[tapped]["wire_type"] == "m.reaction" and not mine[tapped]["encrypted"]
        assert mine[hidden]["wire_type"] == "m.room.encrypted" and mine[hidden]["decrypted"]
        for event in (again, third):
            # Encrypted, decrypted, from the bot's cross-signed device: no warning.
            assert event["wire_type"] == "m.room.encrypted" and event["decrypted"], event
            assert event["shield"] == {"colour": "NONE", "reason": None}, event
            assert event["content"]["body"].startswith(f"🔁 for {user.user_id}"), event
            assert "url" not in event["content"]
            got = await user.download(event["content"]["file"], tmp_path / "picture.png")
            assert got["hash_ok"] and got["problems"] == [], got
            with Image.open(io.BytesIO((tmp_path / "picture.png").read_bytes())) as image:
                assert image.format == "PNG" and image.size == (64, 64)
        images = [e for e in after if e["content"].get("msgtype") == "m.image"]
        assert [e["event_id"] for e in images] == [pid, again["event_id"], third["event_id"]]
