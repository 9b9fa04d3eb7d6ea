"""The full command set, as users see it in a room on a real Synapse with the tiny model:
prompt options, styles, room defaults, queue control, admin usage and quotas."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.store import db as database
from bot.store import room_defaults
from bot.chat.language.styles import BUILTIN
from generation.postprocess.png import read_parameters
from tests.helpers.chatting import bot_running, usage_rows

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


async def picture(chat, image_event) -> tuple[Image.Image, dict]:
    png = await chat.download(image_event["content"]["url"])
    return Image.open(io.BytesIO(png)), read_parameters(png)


async def notice(chat, room: str, text: str) -> str:
    """Send a command and return the body of the bot's one notice in reply."""
    asked = await chat.send(room, text)
    (answer,) = await chat.wait_reply(room, asked, "m.notice")
    return answer["content"]["body"]


async def shared_room(alice, bob) -> str:
    """A room alice made (power level 100) with the bot and bob (power level 0) in it."""
    room = await alice.room_with(BOT)
    await alice.client.room_invite(room, bob.user_id)
    await bob.client.join(room)
    await bob.sync(0)
    return room


# ---- prompt options ---------------------------------------------------------------------------


async def test_n_ar_style_and_no_in_one_command(make_settings, engine, alice):
    settings = make_settings(compliance={"embed_prompt": True})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        command = await alice.send(
            room,
            "!img a red fox --ar 16:9 --n 3 --seed 5 --style oil painting --no rain --guidance 5",
        )
        images = await alice.wait_reply(room, command, "m.image", count=4, timeout=120)

    *pictures, sheet = images  # each picture as its own reply, then the contact sheet
    style = BUILTIN["oil-painting"]
    seeds = []
    for index, event in enumerate(pictures):
        image, params = await picture(alice, event)
        # The tiny SD model is 512² native, so 16:9 is 704x384 (multiples of 64).
        assert image.size == (704, 384)
        info = event["content"]["info"]
        assert (info["w"], info["h"]) == (704, 384)
        # Wider than 640: a JPEG thumbnail goes with it.
        assert (info["thumbnail_info"]["w"], info["thumbnail_info"]["h"]) == (640, 349)
        thumbnail = await alice.download(info["thumbnail_url"])
        assert info["thumbnail_info"]["size"] == len(thumbnail)
        assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"
        assert params["prompt"] == style.prompt.replace("{prompt}", "a red fox")
        assert params["negative_prompt"] == "rain, " + style.negative
        assert params["style"] == "oil-painting"
        seeds.append(params["seed"])
        caption = event["content"]["body"]
        assert caption.startswith("a red fox — ")  # the prompt as typed, not the template
        assert f"picture {index + 1} of 3" in caption and "style oil-painting" in caption
    assert seeds == [5, 6, 7]
    sheet_image, _ = await picture(alice, sheet)
    assert sheet_image.width > 3 * 300  # three cells side by side
    assert "all 3 pictures" in sheet["content"]["body"] and "5–7" in sheet["content"]["body"]
    (row,) = await usage_rows(settings)
    assert (row["status"], row["images"], row["prompt"]) == ("ok", 3, "a red fox")


async def test_styles_models_and_help_list_what_there_is(make_settings, engine, alice):
    settings = make_settings(
        compliance={"embed_prompt": True}, styles={"acme": {"prompt": "{prompt}, in ACME blue"}}
    )
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        styles = await notice(alice, room, "!img styles")
        models = await notice(alice, room, "!img models")
        helped = "\n".join(
            [
                await notice(alice, room, f"!img help {topic}")
                for topic in ("", "options", "rooms", "admin")
            ]
        )
        unknown = await notice(alice, room, "!img a fox --style vaporwave")
        acme = await alice.send(room, "!img a logo --style acme")
        (image,) = await alice.wait_reply(room, acme, "m.image")
    for name in (
        "photo",
        "cinematic",
        "oil-painting",
        "watercolor",
        "black-and-white",
        "anime",
        "pixel-art",
        "3d-render",
        "line-art",
        "comic",
        "isometric",
        "analog-film",
        "acme",
    ):
        assert f"• `{name}` — " in styles
    assert engine.name in models and "512×512" in models
    for word in (
        "--ar",
        "--n",
        "--style",
        "--model",
        "styles",
        "queue",
        "cancel",
        "room set",
        "usage",
        "pause",
    ):
        assert word in helped
    assert "no style 'vaporwave'" in unknown and "oil-painting" in unknown
    _, params = await picture(alice, image)
    assert params["prompt"] == "a logo, in ACME blue"


# ---- room defaults ----------------------------------------------------------------------------


async def test_moderators_set_room_defaults_and_others_may_not(make_settings, engine, alice, bob):
    async with bot_running(make_settings(compliance={"embed_prompt": True}), engine):
        room = await shared_room(alice, bob)
        refused = await notice(bob, room, "!img room set style anime")
        assert "power level 50" in refused and "yours is 0" in refused
        assert "is now watercolor" in await notice(alice, room, "!img room set style Watercolor")
        assert "is now 128x64" in await notice(alice, room, "!img room set size 128x64")
        assert "is now 3" in await notice(alice, room, "!img room set steps 3")
        assert "is now 5" in await notice(alice, room, "!img room set guidance 5")
        assert "is now people" in await notice(alice, room, "!img room set negative people")
        bad = await notice(alice, room, "!img room set model huge")
        assert "no model 'huge'" in bad and engine.name in bad
        assert "1 to 50" in await notice(alice, room, "!img room set steps 99")
        shown = await notice(bob, room, "!img room")  # anyone may look
        assert "style: watercolor (set by @alice:localhost" in shown
        assert "model: " + engine.name + " (the bot's default)" in shown

        asked = await bob.send(room, "!img a lighthouse")
        (styled,) = await bob.wait_reply(room, asked, "m.image")
        image, params = await picture(bob, styled)
        assert image.size == (128, 64)
        assert (params["steps"], params["style"]) == (3, "watercolor")
        assert params["negative_prompt"].startswith("people, ")
        # The command's own options beat the room's.
        asked = await bob.send(room, "!img a lighthouse --size 64x64 --style none")
        (plain,) = await bob.wait_reply(room, asked, "m.image")
        image, params = await picture(bob, plain)
        assert image.size == (64, 64) and params["style"] == ""

        assert "bot's again (5 settings removed)" in await notice(alice, room, "!img room reset")
        asked = await bob.send(room, "!img a lighthouse")
        (default,) = await bob.wait_reply(room, asked, "m.image")
        image, params = await picture(bob, default)
        assert image.size == (64, 64) and (params["steps"], params["style"]) == (2, "")
    jobs = [
        (r["user_id"], r["status"])
        for r in await usage_rows(make_settings())
        if r["status"] != "rejected"
    ]
    assert jobs == [(bob.user_id, "ok")] * 3  # settings commands are not jobs


async def test_bot_admin_may_set_defaults_without_power(make_settings, engine, alice, bob):
    settings = make_settings(matrix={"admins": [bob.user_id]})
    async with bot_running(settings, engine):
        room = await shared_room(alice, bob)
        assert "is now photo" in await notice(bob, room, "!img room set style photo")


async def test_room_defaults_never_exceed_todays_limits(make_settings, engine, alice):
    settings = make_settings(limits={"max_steps": 4, "max_pixels": 64 * 64})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        # Set when the limits were higher (or by an older config): kept, but not used.
        db = await database.connect(settings.state_dir / "imgbot.sqlite3")
        await room_defaults.store(db, room, "steps", "30", alice.user_id)
        await room_defaults.store(db, room, "size", "512x512", alice.user_id)
        await db.close()
        shown = await notice(alice, room, "!img room")
        assert "the room's '30' is not used" in shown
        asked = await alice.send(room, "!img a cat")
        (image,) = await alice.wait_reply(room, asked, "m.image")
    picture_, params = await picture(alice, image)
    assert picture_.size == (64, 64) and params["steps"] == 2


# ---- queue control ----------------------------------------------------------------------------


async def test_queue_cancel_redact_pause_and_resume(make_settings, engine, alice, bob):
    settings = make_settings(matrix={"admins": [alice.user_id]})
    async with bot_running(settings, engine):
        room = await shared_room(alice, bob)
        assert "Only bot admins may pause" in await notice(bob, room, "!img pause")
        assert "queue is paused" in await notice(alice, room, "!img pause")

        first = await bob.send(room, "!img first apple")
        (queued,) = await bob.wait_reply(room, first, "m.notice")
        assert "paused" in queued["content"]["body"]
        second = await bob.send(room, "!img second apple")
        redacted = await bob.send(room, "!img third apple")
        await bob.wait_reply(room, redacted, "m.notice")
        mine = await alice.send(room, "!img alice's apple")
        await alice.wait_reply(room, mine, "m.notice")

        # Asked in a thread, answered in the thread.
        status = await bob.send(
            room,
            "!img queue",
            **{
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": first,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": first},
                }
            },
        )
        (answer,) = await bob.wait_reply(room, status, "m.notice")
        body = answer["content"]["body"]
        assert answer["content"]["m.relates_to"]["rel_type"] == "m.thread"
        assert "0 running, 4 waiting" in body and "paused" in body
        assert "'first apple' is number 1 in line" in body
        assert "'third apple' is number 3 in line" in body
        assert "alice's apple" not in body  # other people's prompts are theirs

        await bob.client.room_redact(room, redacted, reason="changed my mind")
        await bob.sync(0)
        cancel = await bob.send(room, "!img cancel")
        (cancelled,) = await bob.wait_reply(room, cancel, "m.notice")
        text = cancelled["content"]["body"]
        assert "Cancelled 2 queued jobs: 'first apple', 'second apple'." in text
        assert "no queued jobs" in await notice(bob, room, "!img cancel")

        assert "runs again (1 job" in await notice(alice, room, "!img resume")
        (picture_event,) = await alice.wait_reply(room, mine, "m.image")
        after = await bob.send(room, "!img fourth apple")
        await bob.wait_reply(room, after, "m.image")
    for cancelled_command in (first, second, redacted):
        assert bob.replies(room, cancelled_command, "m.image") == []
    statuses = {r["prompt"]: r["status"] for r in await usage_rows(settings)}
    assert statuses == {
        "first apple": "cancelled",
        "second apple": "cancelled",
        "third apple": "cancelled",
        "alice's apple": "ok",
        "fourth apple": "ok",
    }


async def test_pause_outlives_a_restart(make_settings, engine, alice):
    settings = make_settings(matrix={"admins": [alice.user_id]})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        await notice(alice, room, "!img pause")
    async with bot_running(settings, engine):
        assert "paused" in await notice(alice, room, "!img queue")
        await notice(alice, room, "!img resume")


# ---- admin usage and quotas ----------------------------------------------------------------


async def test_usage_report_is_for_admins_with_a_table_and_a_chart(
    make_settings, engine, alice, bob
):
    # A room of alice and the bot that the config names gets the report itself (anywhere
    # else it goes to a direct message: tests/chat/replies/test_usage_direct_matrix.py); it exists
    # before the bot starts, so that the config can name it.
    own = (await alice.client.room_create(name="alice and the bot", invite=[BOT])).room_id
    settings = make_settings(
        matrix={"admins": [alice.user_id]}, rooms={"usage_report_rooms": [own]}
    )
    async with bot_running(settings, engine):
        room = await shared_room(alice, bob)
        for who, prompt in (
            (alice, "!img a pear --n 2"),
            (bob, "!img a plum"),
            (bob, "!img a plum --steps 999"),
        ):
            asked = await who.send(room, prompt)
            await who.wait_reply(
                room,
                asked,
                "m.image" if "999" not in prompt else "m.notice",
                count=3 if "--n 2" in prompt else 1,
            )
        refused = await notice(bob, room, "!img usage")
        assert "Only bot admins" in refused

        room = own
        await alice.wait_for(
            room,
            lambda events: any(
                e["type"] == "m.room.member"
                and e.get("state_key") == BOT
                and e["content"].get("membership") == "join"
                for e in events
            ),
            timeout=30,
        )
        asked = await alice.send(room, "!img usage 7d")
        (report_event,) = await alice.wait_reply(room, asked, "m.notice")
        (chart,) = await alice.wait_reply(room, asked, "m.image")
        asked = await alice.send(room, "!img usage all @bob:localhost")
        (bobs,) = await alice.wait_reply(room, asked, "m.notice")
        asked = await alice.send(room, "!img usage all @bob")  # on the bot's own server
        (short,) = await alice.wait_reply(room, asked, "m.notice")

    content = report_event["content"]
    assert content["format"] == "org.matrix.custom.html"
    html, text = content["formatted_body"], content["body"]
    assert "<table>" in html and "@alice:localhost" in html and "@bob:localhost" in html
    assert "3 jobs, 3 pictures, 2 users, 1 room," in text and ", 1 rejected" in text
    image, _ = await picture(alice, chart)
    assert image.format == "PNG" and image.size == (640, 240)
    assert "for @bob:localhost" in bobs["content"]["body"]
    assert "2 jobs, 1 picture, 1 user, 1 room," in bobs["content"]["body"]
    assert short["content"]["body"].splitlines()[1:] == bobs["content"]["body"].splitlines()[1:]
    assert "for @bob:localhost" in short["content"]["body"]


async def test_quota_refuses_with_when_to_go_on_and_exempts(make_settings, engine, alice, bob):
    settings = make_settings(quotas={"pictures_per_hour": 2, "exempt": [alice.user_id]})
    async with bot_running(settings, engine):
        room = await shared_room(alice, bob)
        asked = await bob.send(room, "!img a pear --n 2")
        await bob.wait_reply(room, asked, "m.image", count=3)
        over = await notice(bob, room, "!img one more pear")
        assert "2 pictures made or queued in the last hour; the limit is 2 per hour" in over
        assert "go on in 60 minutes" in over
        asked = await alice.send(room, "!img a pear --n 3")  # exempt
        await alice.wait_reply(room, asked, "m.image", count=4)
    statuses = [
        (r["prompt"], r["status"])
        for r in await usage_rows(settings)
        if r["user_id"] == bob.user_id
    ]
    assert statuses == [("a pear", "ok"), ("one more pear", "rejected")]


# ---- several models -------------------------------------------------------------------------


async def test_model_option_loads_lazily_and_unloads_the_least_recently_used(
    make_settings, test_model, alice, tmp_path
):
    from bot.app import load_engine
    from generation.testing.tiny import make_test_model

    second = make_test_model(tmp_path / "second-model", "sd", seed=1)
    settings = make_settings(
        generation={"models": {"second": second}, "max_loaded_models": 1, "warm_up": False}
    )
    pool = load_engine(settings)
    assert pool.loaded == [test_model.name]  # only the default at start
    async with bot_running(settings, pool):
        room = await alice.room_with(BOT)
        listed = await notice(alice, room, "!img models")
        asked = await alice.send(room, "!img a kite --model second --seed 3")
        (kite,) = await alice.wait_reply(room, asked, "m.image")
        after_second = list(pool.loaded)
        asked = await alice.send(room, "!img a kite --seed 3")
        (default_kite,) = await alice.wait_reply(room, asked, "m.image")
        unknown = await notice(alice, room, "!img a kite --model huge")
    assert f"`{test_model.name}`: SD 1.x/2.x, native size 512×512 — the default" in listed
    assert "`second`: SD 1.x/2.x, native size 512×512" in listed
    assert after_second == ["second"]  # one model at a time: the default was unloaded
    assert pool.loaded == [test_model.name]
    first_image, params = await picture(alice, kite)
    assert params["model"] == "second" and "model second" in kite["content"]["body"]
    second_image, params = await picture(alice, default_kite)
    assert params["model"] == test_model.name
    # Different weights, same seed: different pictures.
    assert first_image.tobytes() != second_image.tobytes()
    assert "no model 'huge'" in unknown and "second" in unknown


async def test_redacting_a_running_command_drops_its_picture(make_settings, engine, alice):
    import asyncio
    import threading

    started, release = threading.Event(), threading.Event()

    class Slow:
        """The real engine, except that prompts with 'slow' wait for the test."""

        def __getattr__(self, name):
            return getattr(engine, name)

        def generate(self, job):
            if "slow" in job.prompt:
                started.set()
                release.wait(60)
            return engine.generate(job)

    settings = make_settings()
    async with bot_running(settings, Slow()):
        private = await alice.room_with(BOT, name="private")
        team = await alice.room_with(BOT, name="team")
        command = await alice.send(private, "!img secret plan, slow")
        assert await asyncio.to_thread(started.wait, 30)
        # Asked in another room, the queue does not repeat the private prompt.
        elsewhere = await notice(alice, team, "!img queue")
        assert "1 running, 0 waiting" in elsewhere and "secret" not in elsewhere
        assert "1 more job in the queue from other rooms" in elsewhere
        await alice.client.room_redact(private, command)
        # Answered after the redaction was handled: events are handled in order.
        await notice(alice, private, "!img queue")
        release.set()
        after = await alice.send(private, "!img after the plan")
        await alice.wait_reply(private, after, "m.image")
    assert alice.replies(private, command, "m.image") == []
    statuses = {r["prompt"]: r["status"] for r in await usage_rows(settings)}
    assert statuses == {"secret plan, slow": "cancelled", "after the plan": "ok"}
