"""A person's own defaults (`!img me`), as people use them on a real Synapse with the tiny
model: set once, they follow the person into every room; a room's own defaults come first;
help and `me` say where each value comes from; bad input changes nothing."""

from __future__ import annotations

import pytest

from bot.chat.language.options import size_for_aspect
from tests.chat.test_commands_matrix import BOT, notice, picture, shared_room
from tests.helpers.chatting import bot_running

pytestmark = pytest.mark.synapse


async def test_defaults_set_in_one_room_follow_the_person_and_yield_to_the_room(
    make_settings, engine, alice, bob
):
    settings = make_settings(compliance={"embed_prompt": True})
    async with bot_running(settings, engine):
        direct = await bob.room_with(BOT)  # bob's DM with the bot
        assert "is now 3, in every room" in await notice(bob, direct, "!img me set steps 3")
        assert "is now watercolor" in await notice(bob, direct, "!img me set style watercolor")
        assert "is now 2:1" in await notice(bob, direct, "!img me set ar 2:1")

        room = await shared_room(alice, bob)
        asked = await bob.send(room, "!img a lighthouse")
        (made,) = await bob.wait_reply(room, asked, "m.image")
        image, params = await picture(bob, made)
        assert (params["steps"], params["style"]) == (3, "watercolor")
        assert image.size == size_for_aspect((2, 1), 512 * 512, settings.limits.max_pixels)
        # Alice has none of her own: the bot's.
        asked = await alice.send(room, "!img a lighthouse")
        (hers,) = await alice.wait_reply(room, asked, "m.image")
        assert (await picture(alice, hers))[1]["steps"] == 2

        # The room's own default comes before the person's; the command's own before both.
        await notice(alice, room, "!img room set steps 4")
        shown = await notice(bob, room, "!img me")
        assert "steps: 3 — this room's own 4 comes first here" in shown
        helped = await notice(bob, room, "!img help")
        assert "This room sets its own steps" in helped
        assert "Your own defaults set the" in helped and "style" in helped
        asked = await bob.send(room, "!img a lighthouse")
        (made,) = await bob.wait_reply(room, asked, "m.image")
        assert (await picture(bob, made))[1]["steps"] == 4
        asked = await bob.send(room, "!img a lighthouse --steps 1")
        (made,) = await bob.wait_reply(room, asked, "m.image")
        assert (await picture(bob, made))[1]["steps"] == 1

        assert "cleared" in await notice(bob, direct, "!img me reset")
        shown = await notice(bob, direct, "!img me")
        assert "no defaults of your own" in shown


async def test_bad_personal_defaults_get_one_notice_and_change_nothing(make_settings, engine, bob):
    async with bot_running(make_settings(), engine):
        room = await bob.room_with(BOT)
        await notice(bob, room, "!img me set steps 2")
        before = await notice(bob, room, "!img me")
        for bad, says in (
            ("!img me set size 99999x1", "99999"),
            ("!img me set style nosuch", "no style 'nosuch'"),
            ("!img me set", "me set"),
            ("!img me frobnicate", "frobnicate"),
        ):
            assert says in await notice(bob, room, bad), bad
        assert await notice(bob, room, "!img me") == before
