"""Reactions held to a typed command's per-person limits, on a real Synapse with the tiny
model: thirty reactions sent at once by one person take no more of the queue, or of their
quota, than thirty commands would, and each one refused gets the notice a typed command
gets."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.chat.test_commands_matrix import notice
from tests.chat.test_reactions_matrix import made
from tests.helpers.chatting import bot_running, usage_rows

pytestmark = pytest.mark.synapse

# Synapse refuses a second identical annotation (same key, event and sender), so thirty are
# ten keys on each of three pictures: every key that makes a picture, with and without the
# variation selector where the bot reads both as one.
KEYS = ["🔁", "🔄", "🎲", "🔍", "🔎", "✨", "🔁\ufe0f", "🔄\ufe0f", "🎲\ufe0f", "✨\ufe0f"]


@pytest.mark.parametrize(
    "limits, refused",
    [
        pytest.param(
            {"limits": {"per_user_queued": 2}},
            "You already have 2 jobs queued (the limit is 2); wait for one to finish.",
            id="per_user_queued",
        ),
        pytest.param(  # the three pictures reacted on and two queued: five
            {"quotas": {"pictures_per_hour": 5}},
            "You have 5 pictures made or queued in the last hour; the limit is 5 per hour. ",
            id="quota",
        ),
    ],
)
async def test_thirty_reactions_at_once_are_held_by_the_per_person_limits(
    make_settings, engine, alice, limits, refused
):
    """`refused`: how the notice of each reaction refused begins (a quota's goes on to say
    when, to the minute)."""
    settings = make_settings(matrix={"admins": [alice.user_id]}, **limits)
    async with bot_running(settings, engine):
        room = await alice.room_with("@imgbot:localhost")
        pictures = [
            (await made(alice, room, f"!img tile {i} --seed {i}"))["event_id"] for i in range(3)
        ]
        assert "paused" in await notice(alice, room, "!img pause")

        # All at once (about a second here), as a person tapping away would send them.
        sent = await asyncio.gather(*(alice.react(room, p, k) for p in pictures for k in KEYS))
        on = {reaction: pictures[i // len(KEYS)] for i, reaction in enumerate(sent)}

        async def answered() -> list[dict]:
            return [r for r in await usage_rows(settings) if r["event_id"] in on]

        for _ in range(120):  # every reaction taken in: queued or refused
            rows = await answered()
            if len(rows) == len(sent):
                break
            await asyncio.sleep(0.5)
        assert Counter(r["status"] for r in rows) == {"queued": 2, "rejected": 28}, rows
        assert all(r["error"].startswith(refused) for r in rows if r["status"] == "rejected")

        def refusals(_) -> list[dict]:
            return [
                e for p in pictures for e in alice.replies(room, p, "m.notice")
                if e["content"]["body"].startswith(refused)
            ]  # fmt: skip

        await alice.wait_for(room, lambda events: len(refusals(events)) >= 28)
        # The refusal a typed command gets.
        assert (await notice(alice, room, "!img one more")).startswith(refused)

        accepted = {r["event_id"] for r in rows if r["status"] == "queued"}
        assert "runs again" in await notice(alice, room, "!img resume")
        for _ in range(120):
            rows = await answered()
            if all(r["status"] != "queued" for r in rows):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # a picture more, if one were coming, would be here by now
        await alice.sync(0)

    assert len(refusals(None)) == 28  # one each
    notices = [e for p in pictures for e in alice.replies(room, p, "m.notice")]
    assert len(notices) == 28 + 2  # and the status notice of each accepted ("queued, paused")
    made_for = {r["event_id"]: r for r in rows if r["event_id"] in accepted}
    assert [r["status"] for r in made_for.values()] == ["ok", "ok"]
    images = [e for p in pictures for e in alice.replies(room, p, "m.image")]
    assert len(images) == sum(r["images"] for r in made_for.values())
    assert {e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] for e in images} == {
        on[reaction] for reaction in accepted
    }
