"""Encrypted rooms: the bot's cross-signing identity, and commands and pictures in an
encrypted room, against the real Synapse with a nio user (the matrix-js-sdk user, which
checks what Element checks, is in test_e2ee_js.py)."""

from __future__ import annotations

import base64
import io
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nio.crypto.attachments import encrypt_attachment
from PIL import Image

from bot.matrix import encryption, sources
from bot.ops.check import check_encryption
from bot.matrix.cross_signing import CrossSigningFailed, Identity, canonical_json, signable
from tests.helpers.chatting import Chat, bot_running

BOT = "@imgbot:localhost"


def _b64(text: str) -> bytes:
    assert "=" not in text, f"padded base64: {text}"  # the Rust SDK ignores padded ones
    return base64.b64decode(text + "=" * (-len(text) % 4))


def signed_by(value: dict, user_id: str, public: str) -> bool:
    """Checked with another Ed25519 implementation than the one that signed."""
    signature = value.get("signatures", {}).get(user_id, {}).get(f"ed25519:{public}")
    if signature is None:
        return False
    Ed25519PublicKey.from_public_bytes(_b64(public)).verify(
        _b64(signature), canonical_json(signable(value))
    )
    return True


# ---- without a homeserver ----------------------------------------------------------------


def test_identity_keys_are_signed_by_the_master_key_in_unpadded_base64(tmp_path):
    identity = Identity.create()
    body = identity.public_keys("@bot:example.org")
    master = body["master_key"]["keys"][identity.master.key_id]
    assert body["master_key"]["usage"] == ["master"]
    for name in ("self_signing_key", "user_signing_key"):
        assert signed_by(body[name], "@bot:example.org", master)
    identity.save(tmp_path / "seeds.json")
    assert stat.S_IMODE(os.stat(tmp_path / "seeds.json").st_mode) == 0o600
    assert Identity.load(tmp_path / "seeds.json") == identity


def test_a_damaged_seeds_file_stops_the_start_instead_of_replacing_the_identity(tmp_path):
    path = tmp_path / "seeds.json"
    Identity.create().save(path)
    saved = json.loads(path.read_text())
    for damaged in (
        {**saved, "master": saved["master"][:-4]},  # 29 bytes
        {**saved, "self_signing": "not base64!"},
        {k: v for k, v in saved.items() if k != "user_signing"},
    ):
        path.write_text(json.dumps(damaged))
        with pytest.raises(CrossSigningFailed, match="damaged"):
            Identity.load(path)


def test_canonical_json_is_sorted_compact_utf8():
    assert (
        canonical_json({"b": 1, "a": {"d": "é", "c": [1, 2]}})
        == '{"a":{"c":[1,2],"d":"é"},"b":1}'.encode()
    )


def _png(size=(64, 48), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_encrypted_picture_is_found_checked_and_decrypted():
    data = _png()
    ciphertext, keys = encrypt_attachment(data)
    content = {"msgtype": "m.image", "file": {"url": "mxc://hs/abc", **keys}}
    where = sources.locator(content)
    assert where.startswith("mxc://hs/abc#")
    address, _, fragment = where.partition("#")
    assert sources._decrypted(ciphertext, fragment) == data
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(sources.SourceError, match="does not match"):
        sources._decrypted(tampered, fragment)
    for broken in (
        {"url": "mxc://hs/abc"},
        {**keys, "url": "mxc://hs/abc", "key": "k"},
        {**keys, "url": "mxc://hs/abc", "hashes": ["x"]},
    ):
        # Any room member can send content of any shape: a refusal, never a crash.
        with pytest.raises(sources.SourceError, match="no file"):
            sources.locator({"msgtype": "m.image", "file": broken})


# ---- against the homeserver --------------------------------------------------------------


async def _published(chat: Chat, user_id: str) -> dict:
    response = await chat.client.send(
        "POST",
        "/_matrix/client/v3/keys/query",
        json.dumps({"device_keys": {user_id: []}}),
        headers={
            "Authorization": f"Bearer {chat.client.access_token}",
            "Content-Type": "application/json",
        },
    )
    return await response.json()


def _device_is_cross_signed(keys: dict, user_id: str, device_id: str) -> str:
    """The master key, after checking master -> self-signing -> device."""
    (master,) = keys["master_keys"][user_id]["keys"].values()
    self_signing_key = keys["self_signing_keys"][user_id]
    assert signed_by(self_signing_key, user_id, master)
    (self_signing,) = self_signing_key["keys"].values()
    assert signed_by(keys["device_keys"][user_id][device_id], user_id, self_signing)
    return master


async def test_the_bot_device_is_cross_signed_and_keeps_its_identity(
    make_settings, engine, alice, tmp_path
):
    settings = make_settings(state_dir=tmp_path / "kept")
    credentials = settings.state_dir / "credentials.json"
    async with bot_running(settings, engine):
        pass
    device = json.loads(credentials.read_text())["device_id"]
    master = _device_is_cross_signed(await _published(alice, BOT), BOT, device)
    seeds = settings.state_dir / "cross-signing.json"
    assert stat.S_IMODE(os.stat(seeds).st_mode) == 0o600
    assert master in check_encryption(settings.matrix, settings.state_dir).detail  # `check`

    async with bot_running(settings, engine):  # a restart changes nothing
        pass
    assert json.loads(credentials.read_text())["device_id"] == device
    assert _device_is_cross_signed(await _published(alice, BOT), BOT, device) == master

    # The crypto store is lost: a new device, signed by the same identity.
    for path in (settings.state_dir / encryption.STORE_DIR).iterdir():
        path.unlink()
    async with bot_running(settings, engine):
        pass
    new_device = json.loads(credentials.read_text())["device_id"]
    assert new_device != device
    assert _device_is_cross_signed(await _published(alice, BOT), BOT, new_device) == master


async def test_commands_and_pictures_in_an_encrypted_room(make_settings, engine, alice_e2e):
    alice = alice_e2e
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT, encrypted=True)
        command = await alice.send(room, "!img a red fox --seed 7 --size 64x72")
        (image,) = await alice.wait_reply(room, command, "m.image")
        content = image["content"]
        # The file is encrypted too: no plain URL, a key and an unpadded iv instead.
        assert "url" not in content
        assert content["file"]["v"] == "v2" and "=" not in content["file"]["iv"]
        png = await alice.picture(content)
        with Image.open(io.BytesIO(png)) as picture:
            assert picture.format == "PNG" and picture.size == (64, 72)

        # Larger pictures: each with an encrypted thumbnail; then the contact sheet.
        several = await alice.send(room, "!img a red fox --ar 16:9 --n 2 --seed 5")
        *pictures, sheet = await alice.wait_reply(room, several, "m.image", count=3, timeout=120)
        for event in pictures:
            info = event["content"]["info"]
            assert "thumbnail_url" not in info and (info["w"], info["h"]) == (704, 384)
            thumbnail = await alice.picture({"file": info["thumbnail_file"]})
            assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"
        assert Image.open(io.BytesIO(await alice.picture(sheet["content"]))).format == "PNG"

        # Image-to-image from a picture alice posts in the room (an encrypted file).
        posted = await alice.send_picture(room, _png((64, 64)), "image/png", 64, 64)
        follow = await alice.reply(room, posted, "!img as a watercolour --strength 0.5")
        (again,) = await alice.wait_reply(room, follow, "m.image")
        with Image.open(io.BytesIO(await alice.picture(again["content"]))) as picture:
            assert picture.format == "PNG"
        assert "strength 0.5" in again["content"]["body"]

        help_event = await alice.send(room, "!img help")
        (notice,) = await alice.wait_reply(room, help_event, "m.notice")
        assert "!img" in notice["content"]["body"]
    for event_id in (image["event_id"], notice["event_id"]):  # as the homeserver has them
        assert (await _raw_event(alice, room, event_id))["type"] == "m.room.encrypted"


async def _raw_event(chat: Chat, room_id: str, event_id: str) -> dict:
    response = await chat.client.send(
        "GET",
        f"/_matrix/client/v3/rooms/{room_id}/event/{event_id}",
        headers={"Authorization": f"Bearer {chat.client.access_token}"},
    )
    return await response.json()


async def test_with_encryption_off_the_bot_says_why_and_leaves(make_settings, engine, alice_e2e):
    alice = alice_e2e
    settings = make_settings(matrix={"encryption": False})
    async with bot_running(settings, engine):
        created = await alice.client.room_create(
            invite=[BOT],
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        room = created.room_id
        notice = await alice.wait_for(
            room,
            lambda events: next(
                (
                    e
                    for e in events
                    if e.get("sender") == BOT and e.get("content", {}).get("msgtype") == "m.notice"
                ),
                None,
            ),
        )
        assert "encryption turned off" in notice["content"]["body"]
        await alice.wait_for(
            room,
            lambda events: any(
                e["type"] == "m.room.member"
                and e.get("state_key") == BOT
                and e["content"].get("membership") == "leave"
                for e in events
            ),
        )
        command = await alice.send(room, "!img a cat")
    assert not alice.replies(room, command)


async def test_a_command_without_its_room_key_gets_one_notice(
    make_settings, engine, alice_e2e, monkeypatch
):
    alice = alice_e2e
    monkeypatch.setattr(encryption, "KEY_WAIT", 2.0)
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT, encrypted=True)
        # Alice's client withholds its room key from the bot's device.
        await alice.client.joined_members(room)
        if alice.client.should_query_keys:
            await alice.client.keys_query()
        assert alice.client.device_store.active_user_devices(BOT)
        for device in alice.client.device_store.active_user_devices(BOT):
            alice.client.blacklist_device(device)
        first = await alice.send(room, "!img a cat")
        second = await alice.send(room, "!img a dog")
        (notice,) = await alice.wait_reply(room, first, "m.notice", timeout=30)
        assert "could not decrypt" in notice["content"]["body"]
        await alice.sync(3000)
    # Told once for the session, not once for every message.
    assert not alice.replies(room, second)
    assert not alice.replies(room, first, "m.image")
