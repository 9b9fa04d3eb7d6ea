"""The matrix-js-sdk test client (tests/helpers/e2ee_client.py) on its own, against the local Synapse:
two cross-signed devices talk in an encrypted room; a device that is not cross-signed is
shut out both ways, as a bot without cross-signing will be."""

from __future__ import annotations

import asyncio
import io
import secrets

import pytest
from PIL import Image

from tests.conftest import PASSWORD
from tests.helpers.e2ee_client import JsClient, JsClientError

pytestmark = pytest.mark.synapse


def new_user(homeserver, role: str) -> str:
    """A user of this test's own: cross-signing identities outlive a test on the shared server."""
    localpart = f"js-{role}-{secrets.token_hex(4)}"
    homeserver.register(localpart, PASSWORD)
    return localpart


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 90)).save(buf, "PNG")
    return buf.getvalue()


async def logins(homeserver, *specs):
    """Log in several clients at once: specs are (role, keyword arguments)."""
    return await asyncio.gather(*(
        JsClient.login(homeserver, new_user(homeserver, role), PASSWORD, **kwargs)
        for role, kwargs in specs
    ))  # fmt: skip


async def test_cross_signed_clients_exchange_text_and_picture(homeserver, tmp_path):
    a, b = await logins(homeserver, ("a", {}), ("b", {}))
    async with a, b:
        assert a.cross_signed and b.cross_signed
        room, joined = await asyncio.gather(a.create_room([b.user_id]), b.join())
        assert room == joined

        seen = await a.device_status(b.user_id, b.device_id)
        assert seen["has_cross_signing"] and seen["device_known"]
        assert seen["signed_by_owner"] and not seen["cross_signing_verified"]
        assert b.device_id in seen["devices"]

        text_id = await a.send_text(room, "!img a cat --size 64x64")
        picture = tmp_path / "cat.png"
        picture.write_bytes(png_bytes())
        image_id = await a.send_image(room, picture, reply_to=text_id)

        text, image = await b.wait_events(room, sender=a.user_id, count=2, timeout=20)
        assert (text["event_id"], image["event_id"]) == (text_id, image_id)
        for event in (text, image):
            assert event["encrypted"] and event["decrypted"], event
            assert event["wire_type"] == "m.room.encrypted" and event["type"] == "m.room.message"
            assert event["decryption_failure"] is None
            # cross-signed by its owner, owner not verified by b: no warning shield
            assert event["shield"] == {"colour": "NONE", "reason": None}, event
        assert text["content"]["body"] == "!img a cat --size 64x64"

        content = image["content"]
        assert content["msgtype"] == "m.image" and "url" not in content
        assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": text_id}}
        assert content["info"]["w"] == 64 and content["info"]["h"] == 48
        assert content["file"]["v"] == "v2" and content["file"]["url"].startswith("mxc://")
        # (the picture doubles as its own thumbnail, to cover info.thumbnail_file too)
        info = dict(content["info"], thumbnail_file=content["file"])
        got = await b.download_image(dict(image, content=dict(content, info=info)), tmp_path)
        for part in ("file", "thumbnail"):
            assert got[part]["hash_ok"] and got[part]["problems"] == [], got
            assert (tmp_path / part).read_bytes() == picture.read_bytes()

        # a tampered ciphertext hash is caught
        bad = dict(content["file"], hashes={"sha256": "A" * 43})
        assert not (await b.download(bad, tmp_path / "bad"))["hash_ok"]

        # filters: decrypted type, since (an index), and a wait that finds nothing
        [again] = await b.wait_events(
            room, types=["m.room.message"], since=text["index"] + 1, sender=a.user_id, timeout=1
        )
        assert again["event_id"] == image_id
        after = image["index"] + 1
        none = await b.wait_events(room, types=["m.reaction"], timeout=0.5, allow_timeout=True)
        assert none == []
        assert await b.wait_events(room, since=after, timeout=0.5, allow_timeout=True) == []
        with pytest.raises(JsClientError, match="only"):
            await b.wait_events(room, since=after, timeout=0.5)
        sent = [e["event_id"] for e in await b.events(room, sender=a.user_id)]
        assert sent == [text_id, image_id]


async def test_refuses_to_send_in_clear(homeserver):
    async with await JsClient.login(homeserver, new_user(homeserver, "c"), PASSWORD) as c:
        room = await c.create_room(encrypted=False)
        with pytest.raises(JsClientError, match="refusing to send in clear"):
            await c.send_text(room, "!img a cat")


async def test_device_not_cross_signed_is_shut_out(homeserver):
    # (in OnlySignedDevicesIsolationMode an unsigned device cannot even send: js-sdk throws
    # "Encryption failed because cross-signing is not set up on your account")
    a, lax, unsigned = await logins(
        homeserver,
        ("a", {}),
        ("lax", {"isolation": "all"}),
        ("unsigned", {"cross_sign": False, "isolation": "all"}),
    )
    async with a, lax, unsigned:
        assert not unsigned.cross_signed
        seen = await a.device_status(unsigned.user_id, unsigned.device_id)
        assert seen["device_known"] and not seen["has_cross_signing"]
        assert not seen["signed_by_owner"] and not seen["cross_signing_verified"]

        room = (await asyncio.gather(
            a.create_room([lax.user_id, unsigned.user_id]), lax.join(), unsigned.join()
        ))[0]  # fmt: skip

        # From the unsigned device: a (only signed devices) refuses to decrypt it; a client
        # in AllDevicesIsolationMode decrypts it under a red "unsigned device" shield.
        sent = await unsigned.send_text(room, "!img a cat")
        [refused] = await a.wait_events(room, sender=unsigned.user_id, timeout=15)
        assert refused["event_id"] == sent
        assert not refused["decrypted"] and refused["settled"]
        assert refused["decryption_failure"] == "UNSIGNED_SENDER_DEVICE"
        assert refused["type"] == "m.room.message"
        assert refused["content"]["msgtype"] == "m.bad.encrypted"
        [shown] = await lax.wait_events(room, sender=unsigned.user_id, timeout=15)
        assert shown["decrypted"] and shown["content"]["body"] == "!img a cat"
        assert shown["shield"] == {"colour": "RED", "reason": "UNSIGNED_DEVICE"}

        # To the unsigned device: a withholds the room key (m.room_key.withheld, m.unverified),
        # so it cannot read a's message; lax, cross-signed, can.
        sent = await a.send_text(room, "secret")
        [read] = await lax.wait_events(room, sender=a.user_id, timeout=15)
        assert read["event_id"] == sent and read["content"]["body"] == "secret"
        [locked] = await unsigned.wait_events(room, sender=a.user_id, timeout=15)
        assert locked["event_id"] == sent and not locked["decrypted"]
        assert locked["decryption_failure"] == "MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE"
