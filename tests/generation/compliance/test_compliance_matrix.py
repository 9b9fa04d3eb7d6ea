"""Compliance as users see it, against the real Synapse and the tiny real model: pictures
downloaded from the room are marked and signed, and a copy of a reference is withheld."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from bot.cli import main
from generation.compliance.marking import TRAINED_ALGORITHMIC_MEDIA, source_type_of
from generation.compliance.verify import INVALID, TRUSTED, verify
from tests.helpers.chatting import bot_running, usage_rows
from tests.helpers.pki import make_ca
from tests.helpers.tsa import TimeStampAuthority

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


def _changed(data: bytes) -> bytes:
    at = data.index(b"IDAT") + 40  # one byte of the pixels, after signing
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


async def test_downloaded_picture_is_marked_and_signed(
    make_settings, engine, alice, tmp_path, capsys
):
    ca = make_ca(tmp_path / "ca")
    with TimeStampAuthority() as tsa:
        settings = make_settings(
            compliance={
                "c2pa": {"cert": ca["cert"], "key": ca["key"], "tsa_url": tsa.url},
                "embed_prompt": False,
            }
        )
        async with bot_running(settings, engine):
            room = await alice.room_with(BOT)
            command = await alice.send(room, "!img a lighthouse at dusk --seed 5 --size 128x96")
            (image,) = await alice.wait_reply(room, command, "m.image")
    data = await alice.download(image["content"]["url"])
    assert source_type_of(data) == TRAINED_ALGORITHMIC_MEDIA
    root = ca["root"].read_text() + tsa.root_pem
    (tmp_path / "roots.pem").write_text(root)
    report = verify(data, root, watermark=False)
    assert report.c2pa == TRUSTED, report.problems
    assert report.timestamp == f"{tsa.times[-1].isoformat()} by Example TSA"
    assert verify(_changed(data), root, watermark=False).c2pa == INVALID
    # embed_prompt false: no prompt anywhere in the file, the other parameters still there.
    assert b"lighthouse" not in data and b'"seed": 5' in data

    (tmp_path / "room.png").write_bytes(data)
    (tmp_path / "changed.png").write_bytes(_changed(data))
    capsys.readouterr()
    roots = str(tmp_path / "roots.pem")
    assert main(["verify", str(tmp_path / "room.png"), "--trust", roots]) == 0
    said = capsys.readouterr().out
    assert "C2PA: Trusted" in said and "time-stamped at" in said
    assert main(["verify", str(tmp_path / "changed.png"), "--trust", roots]) == 1
    assert "C2PA: Invalid" in capsys.readouterr().out


async def test_copy_of_a_reference_is_withheld_with_a_notice(
    make_settings, engine, alice, tmp_path
):
    references = tmp_path / "references"
    references.mkdir()
    ask = "!img a red apple --seed 11 --size 256x256"
    # 1. A picture made with a fixed seed becomes a reference ...
    # (and another, made smaller and saved as a JPEG).
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        first = await alice.send(room, ask)
        (image,) = await alice.wait_reply(room, first, "m.image")
        pear = await alice.send(room, "!img a pear --seed 13 --size 256x256")
        (pear_image,) = await alice.wait_reply(room, pear, "m.image")
    (references / "red-apple.png").write_bytes(await alice.download(image["content"]["url"]))
    small = Image.open(io.BytesIO(await alice.download(pear_image["content"]["url"])))
    small.convert("RGB").resize((160, 160)).save(references / "pear-small.jpg", quality=70)

    # 2. ... and the same command made again is blocked, naming it; an unrelated one is not.
    settings = make_settings(compliance={"references": references, "on_match": "block"})
    async with bot_running(settings, engine):
        again = await alice.send(room, ask)
        (notice,) = await alice.wait_reply(room, again, "m.notice")
        other = await alice.send(room, "!img a red apple --seed 12 --size 256x256")
        await alice.wait_reply(room, other, "m.image")
        pear_again = await alice.send(room, "!img a pear --seed 13 --size 256x256")
        (pear_notice,) = await alice.wait_reply(room, pear_again, "m.notice")
    assert "'pear-small.jpg'" in pear_notice["content"]["body"]
    assert alice.replies(room, pear_again, "m.image") == []
    body = notice["content"]["body"]
    assert "is not sent" in body and "'red-apple.png'" in body and "PDQ distance 0" in body
    assert alice.replies(room, again, "m.image") == []
    rows = {row["event_id"]: row for row in await usage_rows(settings)}
    (verdict,) = json.loads(rows[again]["compliance"])
    assert verdict["action"] == "block"
    assert verdict["copy"]["reference"] == "red-apple.png" and verdict["copy"]["tier"] == "pdq"
    (clear,) = json.loads(rows[other]["compliance"])
    assert clear["action"] == "send" and not clear["copy"]["matched"]
    assert (settings.state_dir / "references.json").is_file()

    # 3. With on_match warn, the notice and the picture both arrive.
    warned = make_settings(compliance={"references": references, "on_match": "warn"})
    async with bot_running(warned, engine):
        third = await alice.send(room, ask)
        (picture,) = await alice.wait_reply(room, third, "m.image")
        (warning,) = await alice.wait_reply(room, third, "m.notice")
    assert "red-apple.png" in warning["content"]["body"]
    assert "sent anyway" in warning["content"]["body"]


async def test_blocked_prompt_gets_a_notice_and_no_picture(make_settings, engine, alice):
    # The last pattern backtracks without end on a long run of a's (issue 28, finding 8).
    settings = make_settings(
        compliance={
            "blocklist": {"words": ["banknote"], "patterns": [r"forg(e|ed|ing)\b", r"(a|aa)+$"]}
        }
    )
    disguised = [
        "!img one ｂａｎｋｎｏｔｅ --seed 1",  # fullwidth letters
        "!img one bank\u200bnote --seed 1",  # a zero-width space inside the word
        "!img " + "a" * 60 + " b",
    ]  # a long time to find no match
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        blocked = await alice.send(room, "!img a forged passport --seed 1")
        (notice,) = await alice.wait_reply(room, blocked, "m.notice")
        others = [await alice.send(room, text) for text in disguised]
        for event_id in others:
            (refused,) = await alice.wait_reply(room, event_id, "m.notice")
            assert "blocked term" in refused["content"]["body"]
        allowed = await alice.send(room, "!img a blacksmith in a village --seed 1")
        await alice.wait_reply(room, allowed, "m.image")
    assert "blocked term" in notice["content"]["body"]
    assert "nothing was made" in notice["content"]["body"]  # refused before the GPU
    assert [alice.replies(room, e, "m.image") for e in (blocked, *others)] == [[]] * 4


async def test_a_picture_that_cannot_be_signed_is_not_sent(make_settings, engine, alice, tmp_path):
    ca = make_ca(tmp_path / "ca")
    with TimeStampAuthority() as tsa:
        settings = make_settings(
            compliance={"c2pa": {"cert": ca["cert"], "key": ca["key"], "tsa_url": tsa.url}}
        )
        async with bot_running(settings, engine):
            room = await alice.room_with(BOT)
            tsa.status = 2  # the authority refuses from now on: no time-stamp, no picture
            command = await alice.send(room, "!img a lighthouse --seed 5")
            (notice,) = await alice.wait_reply(room, command, "m.notice")
    body = notice["content"]["body"]
    assert "could not be signed" in body and "not sent" in body
    assert "homeserver" not in body
    assert alice.replies(room, command, "m.image") == []
    (row,) = [r for r in await usage_rows(settings) if r["event_id"] == command]
    assert row["status"] == "error" and "could not be signed" in row["error"]


async def test_pictures_claim_what_the_bot_did_to_them(
    make_settings, engine, alice, tmp_path, capsys
):
    """Issue 28, findings 5 and 9, as a room sees it: the bot's own picture and a vary of it
    are made by AI; a person's photo resized (no AI upscaler) claims no AI, and painted over
    is an edit with AI; by default no picture names its worker or the photo's address."""
    from generation.compliance.marking import COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    from generation.postprocess.png import read_parameters

    ca = make_ca(tmp_path / "ca")
    photo = io.BytesIO()
    Image.linear_gradient("L").resize((96, 64)).convert("RGB").save(photo, format="PNG")
    settings = make_settings(compliance={"c2pa": {"cert": ca["cert"], "key": ca["key"]}})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img a lighthouse --seed 5 --size 64x64")
        (made,) = await alice.wait_reply(room, first, "m.image")
        vary = await alice.reply(room, made["event_id"], "!img vary 0.4")
        (varied,) = await alice.wait_reply(room, vary, "m.image")
        posted = await alice.send_picture(room, photo.getvalue(), "image/png", 96, 64)
        upscale = await alice.reply(room, posted, "!img upscale 2")
        (resized,) = await alice.wait_reply(room, upscale, "m.image", timeout=120)
        paint = await alice.reply(room, posted, "!img a watercolour --strength 0.05")
        (painted,) = await alice.wait_reply(room, paint, "m.image")
    claims = {}
    for name, event in (
        ("made", made),
        ("varied", varied),
        ("resized", resized),
        ("painted", painted),
    ):
        data = await alice.download(event["content"]["url"])
        params = read_parameters(data)
        assert {"worker", "source", "references"}.isdisjoint(params), (name, params)
        assert b"mxc://" not in data
        (tmp_path / f"{name}.png").write_bytes(data)
        claims[name] = source_type_of(data)
    assert claims == {
        "made": TRAINED_ALGORITHMIC_MEDIA,
        "varied": TRAINED_ALGORITHMIC_MEDIA,
        "resized": None,
        "painted": COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    }
    capsys.readouterr()
    assert (
        main(
            [
                "verify",
                *(str(tmp_path / f"{n}.png") for n in claims),
                "--trust",
                str(ca["root"]),
                "--no-watermark",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out.split("\n  claims: ")[1:]
    assert [line.split("\n")[0] for line in said] == [
        "made by AI from a prompt (signed C2PA manifest)",
        "made by AI from a prompt (signed C2PA manifest)",
        "resized, no AI claim (signed C2PA manifest)",
        "edited with AI from another picture (signed C2PA manifest)",
    ]
