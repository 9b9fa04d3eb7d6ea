"""What people and operators see, on a real Synapse with the tiny model: a negative prompt
that could do nothing is refused (typed or as a room default), `help` states the defaults in
effect and the size limit as a size, and the log has a line when each job starts and ends,
without its prompt."""

from __future__ import annotations

import logging
import re

import pytest

from tests.chat.test_commands_matrix import BOT, notice, picture
from tests.helpers.chatting import bot_running, usage_rows

pytestmark = pytest.mark.synapse


async def test_a_negative_prompt_without_guidance_is_refused(make_settings, engine, alice):
    # The fixture's bot has generation.guidance 0, as a distilled model's config has.
    settings = make_settings(compliance={"embed_prompt": True})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        refused = await notice(alice, room, "!img a cat --no dogs")
        assert "only with guidance above 1" in refused
        assert "the bot's default guidance is 0" in refused and "`--guidance 5`" in refused
        said = await notice(alice, room, "!img a cat --no dogs --guidance 1")
        assert "you asked for `--guidance 1`" in said

        asked = await alice.send(room, "!img a cat --no dogs --guidance 5")
        (made,) = await alice.wait_reply(room, asked, "m.image")
        _, params = await picture(alice, made)
        assert (params["negative_prompt"], params["guidance"]) == ("dogs", 5.0)
        # "--no none" is not a negative prompt: nothing to refuse.
        asked = await alice.send(room, "!img a cat --no none")
        await alice.wait_reply(room, asked, "m.image")
    rows = await usage_rows(settings)
    assert [r["status"] for r in rows] == ["rejected", "rejected", "ok", "ok"]
    assert "guidance above 1" in rows[0]["error"]


async def test_a_rooms_negative_prompt_needs_the_rooms_guidance(make_settings, engine, alice):
    async with bot_running(make_settings(compliance={"embed_prompt": True}), engine):
        room = await alice.room_with(BOT)
        refused = await notice(alice, room, "!img room set negative dogs")
        assert "the bot's default guidance is 0" in refused
        assert "Raise it first with `room set guidance 5`" in refused
        assert "negative: none (the bot's default)" in await notice(alice, room, "!img room")

        assert "is now 5" in await notice(alice, room, "!img room set guidance 5")
        assert "is now dogs" in await notice(alice, room, "!img room set negative dogs")
        asked = await alice.send(room, "!img a cat")
        (made,) = await alice.wait_reply(room, asked, "m.image")
        _, params = await picture(alice, made)
        assert (params["negative_prompt"], params["guidance"]) == ("dogs", 5.0)
        # Asking for guidance 0 in that room would drop its negative prompt unseen.
        refused = await notice(alice, room, "!img a cat --guidance 0")
        assert "This room's negative prompt ('dogs'" in refused and "`--no none`" in refused
        asked = await alice.send(room, "!img a cat --guidance 0 --no none")
        (made,) = await alice.wait_reply(room, asked, "m.image")
        _, params = await picture(alice, made)
        assert (params["negative_prompt"], params["guidance"]) == ("", 0.0)

        # Lowering the room's guidance later says what it does to the negative prompt …
        lowered = await notice(alice, room, "!img room set guidance 1")
        assert "is now 1" in lowered and "negative prompt is not used now" in lowered
        shown = await notice(alice, room, "!img room")
        assert "negative: none — the room's 'dogs' is not used" in shown
        assert "this room's guidance is 1" in shown
        # … and so does going back to the bot's guidance.
        await notice(alice, room, "!img room set guidance 5")
        reset = await notice(alice, room, "!img room reset guidance")
        assert "negative prompt is not used now" in reset and "default guidance is 0" in reset
        asked = await alice.send(room, "!img a cat")
        (made,) = await alice.wait_reply(room, asked, "m.image")
        _, params = await picture(alice, made)
        assert (params["negative_prompt"], params["guidance"]) == ("", 0.0)


async def test_help_states_the_defaults_in_effect_and_the_size_limit(make_settings, engine, alice):
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        helped = await notice(alice, room, "!img help")
        assert (
            f"Defaults in this room: 64×64, 2 steps, guidance 0 (so `--no` also needs "
            f"`--guidance` above 1), model {engine.name}."
        ) in helped
        assert "pictures up to 1536×1536 or as many pixels in another shape" in helped
        assert "2,359,296" not in helped
        assert "This room sets its own" not in helped

        await notice(alice, room, "!img room set steps 3")
        await notice(alice, room, "!img room set size 128x64")
        await notice(alice, room, "!img room set guidance 4.5")
        await notice(alice, room, "!img room set negative blur")
        helped = await notice(alice, room, "!img help")
        assert (
            f"Defaults in this room: 128×64, 3 steps, guidance 4.5, model {engine.name}, "
            "negative prompt 'blur'. This room sets its own size, steps, guidance, "
            "negative (`room` lists them)."
        ) in helped


async def test_the_log_has_a_line_when_each_job_starts_and_ends(
    make_settings, engine, alice, caplog
):
    caplog.set_level(logging.INFO)
    settings = make_settings(matrix={"admins": [alice.user_id]})
    prompt = "zebra-unicorn-quokka"
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        asked = await alice.send(room, f"!img {prompt} --steps 3 --size 64x128")
        await alice.wait_reply(room, asked, "m.image")
        # One that never reaches the GPU: cancelled while the queue is paused.
        await notice(alice, room, "!img pause")
        asked = await alice.send(room, f"!img {prompt} again")
        await alice.wait_reply(room, asked, "m.notice")  # "Queued: the queue is paused"
        await notice(alice, room, "!img cancel")
        await notice(alice, room, "!img resume")
        await alice.wait_for(
            room,
            lambda _: any("ended: cancelled" in r.getMessage() for r in caplog.records),
            timeout=30,
        )
    rows = await usage_rows(settings)
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.chat.jobs.delivery"]
    assert all(
        r.levelno == logging.INFO for r in caplog.records if r.name == "bot.chat.jobs.delivery"
    )
    made = [line for line in lines if line.startswith("job 1 ")]
    assert len(made) == 2
    who = (
        f"usage id {rows[0]['id']}, {alice.user_id} in {room}, model {engine.name}, "
        "64x128, 3 steps, 1 picture"
    )
    assert re.fullmatch(rf"job 1 started: {re.escape(who)}; waited \d+\.\d s", made[0])
    assert re.fullmatch(
        rf"job 1 ended: ok, 1 picture sent; {re.escape(who)}; "
        r"\d+\.\d s on the GPU, waited \d+\.\d s",
        made[1],
    )
    cancelled = [line for line in lines if line.startswith("job 2 ")]
    assert len(cancelled) == 1 and cancelled[0].startswith("job 2 ended: cancelled, 0 pictures")
    assert [r["status"] for r in rows if r["status"] != "rejected"] == ["ok", "cancelled"]
    # No log line of any logger carries the prompt.
    assert not [r.getMessage() for r in caplog.records if prompt in r.getMessage()]
