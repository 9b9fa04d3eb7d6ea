"""The bot in an encrypted room, as today's clients see it: a matrix-js-sdk user with Rust
crypto in OnlySignedDevicesIsolationMode ("exclude insecure devices", Element's model),
its own cross-signing set up, against the real Synapse."""

from __future__ import annotations

import io
import json
import secrets

import aiohttp
import pytest
from PIL import Image

from bot.matrix import encryption
from tests.helpers.chatting import bot_running
from tests.conftest import PASSWORD
from tests.helpers.e2ee_client import JsClient

pytestmark = pytest.mark.synapse


def new_user(homeserver, role: str) -> str:
    """A user of the test's own: a cross-signing identity outlives a test on the server."""
    localpart = f"{role}-{secrets.token_hex(4)}"
    homeserver.register(localpart, PASSWORD)
    return f"@{localpart}:{homeserver.server_name}"


def bot_settings(make_settings, homeserver, **matrix):
    return make_settings(
        matrix={
            "user_id": new_user(homeserver, "imgbot"),
            "allowed_users": ["@*:localhost"],
            **matrix,
        }
    )


def device_of(settings) -> str:
    return json.loads((settings.state_dir / "credentials.json").read_text())["device_id"]


async def master_key(homeserver, token: str, user_id: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{homeserver.url}/_matrix/client/v3/keys/query",
            json={"device_keys": {user_id: []}},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            keys = await response.json()
    (master,) = keys["master_keys"][user_id]["keys"].values()
    return master


async def test_a_js_sdk_user_gets_an_encrypted_picture_and_the_bot_stays_trusted(
    make_settings, engine, homeserver, tmp_path
):
    settings = bot_settings(make_settings, homeserver)
    bot = settings.matrix.user_id
    async with await JsClient.login(homeserver, new_user(homeserver, "js"), PASSWORD) as user:
        async with bot_running(settings, engine):
            device = device_of(settings)
            status = await user.device_status(bot, device)
            assert status["has_cross_signing"] and status["signed_by_owner"], status
            room = await user.create_room([bot])
            command = await user.send_text(room, "!img a lighthouse at dusk --size 64x72 --seed 11")
            (picture,) = await user.wait_events(
                room, sender=bot, types=["m.room.message"], timeout=60
            )
            asked = await user.send_text(room, "!img help")
            # Its messages: the bot's buttons under the picture are reactions, which go
            # in the clear as Element sends them (tests/chat/test_reactions_e2ee_matrix.py).
            (notice,) = await user.wait_events(
                room, sender=bot, since=picture["index"] + 1, types=["m.room.message"], timeout=30
            )
        for event in (picture, notice):
            # Sent encrypted, decrypted, and from a device its owner signed: no warning.
            assert event["wire_type"] == "m.room.encrypted" and event["decrypted"], event
            assert event["shield"] == {"colour": "NONE", "reason": None}, event
        content = picture["content"]
        assert content["msgtype"] == "m.image" and "url" not in content
        assert content["m.relates_to"]["m.in_reply_to"]["event_id"] == command
        assert "seed 11" in content["body"] and " s (waited " in content["body"]  # timing
        got = await user.download(content["file"], tmp_path / "picture.png")
        assert got["hash_ok"] and got["problems"] == [], got
        with Image.open(io.BytesIO((tmp_path / "picture.png").read_bytes())) as image:
            assert image.format == "PNG" and image.size == (64, 72)
        assert notice["content"]["msgtype"] == "m.notice"
        assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == asked

        # A restart keeps the device and the identity, and the room goes on working.
        master = await master_key(homeserver, user.access_token, bot)
        async with bot_running(settings, engine):
            assert device_of(settings) == device
            assert (await user.device_status(bot, device))["signed_by_owner"]
            again = await user.send_text(room, "!img a second lighthouse --size 64x64")
            (after,) = await user.wait_events(
                room, sender=bot, since=notice["index"] + 1, timeout=60
            )
        assert await master_key(homeserver, user.access_token, bot) == master
        assert after["decrypted"] and after["content"]["msgtype"] == "m.image", after
        assert after["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == again


async def test_without_cross_signing_the_bot_is_shut_out(
    make_settings, engine, homeserver, monkeypatch
):
    """The test that shows the others could fail: the same bot with cross_signing off."""
    monkeypatch.setattr(encryption, "KEY_WAIT", 2.0)
    settings = bot_settings(make_settings, homeserver, cross_signing=False)
    bot = settings.matrix.user_id
    async with await JsClient.login(homeserver, new_user(homeserver, "js"), PASSWORD) as user:
        async with bot_running(settings, engine):
            status = await user.device_status(bot, device_of(settings))
            assert status["device_known"] and not status["signed_by_owner"], status
            room = await user.create_room([bot])
            await user.send_text(room, "!img a cat")
            # The room key was withheld from the bot's device: it cannot read the command,
            # and says so; and its notice is refused by the client, as from an insecure
            # device.
            (answer,) = await user.wait_events(room, sender=bot, timeout=30)
        assert not answer["decrypted"], answer
        assert answer["decryption_failure"] == "UNSIGNED_SENDER_DEVICE"


async def test_a_js_sdk_user_sees_the_status_and_its_edits_decrypted(
    make_settings, engine, homeserver
):
    """A slow job in an encrypted room: its status notice and each edit arrive encrypted,
    decrypt under no warning, and the edits name the notice they replace in the clear (so
    that the homeserver and clients can put them together)."""
    import re
    import time

    settings = bot_settings(make_settings, homeserver)
    settings.progress.interval_seconds = 1
    bot = settings.matrix.user_id
    handle = engine.pipe.unet.register_forward_hook(lambda *_: time.sleep(0.4))
    try:
        async with await JsClient.login(homeserver, new_user(homeserver, "js"), PASSWORD) as user:
            async with bot_running(settings, engine):
                room = await user.create_room([bot])
                await user.send_text(room, "!img a lighthouse at dusk --steps 8")
                # The status, at least two edits, the picture, the final edit.
                events = await user.wait_events(
                    room, sender=bot, types=["m.room.message"], count=5, timeout=90
                )
                while not any(
                    e["content"].get("m.new_content", {}).get("body", "").startswith("Done")
                    for e in events
                ):
                    events = await user.wait_events(
                        room,
                        sender=bot,
                        count=len(events) + 1,
                        types=["m.room.message"],
                        timeout=30,
                    )
    finally:
        handle.remove()
    status = events[0]
    assert status["content"]["msgtype"] == "m.notice", status
    edits = [e for e in events if "m.new_content" in e["content"]]
    for event in [status, *edits]:
        assert event["wire_type"] == "m.room.encrypted" and event["decrypted"], event
        assert event["shield"] == {"colour": "NONE", "reason": None}, event
    assert all(
        e["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": status["event_id"]}
        for e in edits
    )
    steps = [
        int(m.group(1))
        for e in edits
        if (m := re.search(r"step (\d+) of 8", e["content"]["m.new_content"]["body"]))
    ]
    assert len(steps) >= 2 and steps == sorted(steps), [e["content"] for e in edits]
