"""`!img usage` names every user and room: asked in a room with others, the report goes to
the admin's direct message with the bot and the room reads only a short note; a room the
config names (rooms.usage_report_rooms) gets the report itself; a room of only the admin
and the bot that the bot did not make is not its direct room. On a real Synapse."""

from __future__ import annotations

import pytest

from nio import RoomMessagesResponse, RoomPreset

from tests.helpers.chatting import bot_running

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"
NOTE = "Sent you the usage report in a direct message."


async def group_room(alice, bob, room_id: str | None = None) -> str:
    """A room of alice, bob and the bot, where bob has made a picture."""
    room = room_id or await alice.room_with(BOT, name="the team")
    await alice.client.room_invite(room, bob.user_id)
    await bob.client.join(room)
    await bob.sync(0)
    asked = await bob.send(room, "!img a plum")
    await bob.wait_reply(room, asked, "m.image")
    return room


async def invited_by_the_bot(chat, timeout: float = 60) -> list[str]:
    """The rooms the bot has invited `chat` into, each joined (the history comes along)."""
    rooms = await chat.wait_for(
        "",
        lambda _: (
            [room_id for room_id, room in chat.client.invited_rooms.items() if room.inviter == BOT]
            or None
        ),
        timeout,
    )
    for room_id in rooms:
        await chat.client.join(room_id)
    await chat.sync(0)
    return rooms


def from_bot(chat, room: str, msgtype: str) -> list[dict]:
    return [
        e
        for e in chat.seen.get(room, [])
        if e.get("sender") == BOT
        and e.get("type") == "m.room.message"
        and e["content"].get("msgtype") == msgtype
    ]


async def test_an_admin_asking_in_a_group_room_gets_the_report_in_a_direct_message(
    make_settings, engine, alice_e2e, bob, mallory
):
    alice = alice_e2e  # the direct room is encrypted (the bot's encryption is on)
    async with bot_running(make_settings(matrix={"admins": [alice.user_id]}), engine):
        room = await group_room(alice, bob)
        asked = await alice.send(room, "!img usage 7d")
        (note,) = await alice.wait_reply(room, asked, "m.notice")
        (dm,) = await invited_by_the_bot(alice)
        report = (await alice.wait_for(dm, lambda _: from_bot(alice, dm, "m.notice")))[0]
        (chart,) = await alice.wait_for(dm, lambda _: from_bot(alice, dm, "m.image"))

        # Asked again: the same direct room, no new invite.
        again = await alice.send(room, "!img usage all")
        await alice.wait_reply(room, again, "m.notice")
        await alice.wait_for(dm, lambda _: len(from_bot(alice, dm, "m.notice")) == 2)
        assert not [r for r, info in alice.client.invited_rooms.items() if r != dm]

        # Asked in the direct room itself: answered there, as a reply, without a note.
        there = await alice.send(dm, "!img usage 30d")
        (answer,) = await alice.wait_reply(dm, there, "m.notice")
        (there_chart,) = await alice.wait_reply(dm, there, "m.image")
        await bob.sync(0)

    assert note["content"]["body"] == NOTE
    # The room, as bob sees it, holds the note and nothing of the report.
    for command in (asked, again):
        assert [e["content"]["body"] for e in bob.replies(room, command)] == [NOTE]
    assert not [
        e
        for e in bob.seen[room]
        if "<table>" in e["content"].get("formatted_body", "")
        or "Pictures per day" in e["content"].get("body", "")
    ]
    assert dm not in bob.seen

    assert alice.client.rooms[dm].encrypted and alice.client.rooms[dm].member_count == 2
    body = report["content"]["body"]
    assert "@bob:localhost" in body and "1 job, 1 picture, 1 user, 1 room" in body
    assert "<table>" in report["content"]["formatted_body"]
    assert "@bob:localhost" in answer["content"]["body"]
    assert chart["content"]["info"]["mimetype"] == "image/png"
    assert not [e for e in alice.replies(dm, there) if e["content"]["body"] == NOTE]


async def test_a_room_the_config_names_gets_the_report_itself(make_settings, engine, alice, bob):
    # The room exists before the bot starts, so that the config can name it.
    created = await alice.client.room_create(name="the admins", invite=[BOT])
    room = created.room_id
    settings = make_settings(
        matrix={"admins": [alice.user_id]}, rooms={"usage_report_rooms": [room]}
    )
    async with bot_running(settings, engine):
        await alice.wait_for(
            room,
            lambda events: any(
                e["type"] == "m.room.member"
                and e.get("state_key") == BOT
                and e["content"].get("membership") == "join"
                for e in events
            ),
        )
        await group_room(alice, bob, room)
        asked = await alice.send(room, "!img usage")
        (report,) = await alice.wait_reply(room, asked, "m.notice")
        await alice.wait_reply(room, asked, "m.image")
    assert "@bob:localhost" in report["content"]["body"]
    assert not alice.client.invited_rooms  # no direct room was made


async def test_a_room_of_two_that_a_stranger_made_public_gets_only_the_note(
    make_settings, engine, alice_e2e, bob, mallory
):
    alice = alice_e2e  # the direct room is encrypted (the bot's encryption is on)
    # bob makes a public room whose history anyone may read, invites the bot and alice (an
    # admin), and leaves: alice and the bot are its only members.
    created = await bob.client.room_create(
        name="a quiet room",
        preset=RoomPreset.public_chat,
        invite=[BOT, alice.user_id],
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "world_readable"},
            }
        ],
    )
    room = created.room_id
    async with bot_running(make_settings(matrix={"admins": [alice.user_id]}), engine):
        await bob.wait_for(
            room,
            lambda events: any(
                e["type"] == "m.room.member"
                and e.get("state_key") == BOT
                and e["content"].get("membership") == "join"
                for e in events
            ),
            timeout=30,
        )
        await alice.client.join(room)
        await bob.client.room_leave(room)
        await alice.sync(0)
        asked = await alice.send(room, "!img usage all")
        await alice.wait_reply(room, asked, "m.notice")

        # What anyone reads of the room's history, mallory who was never in it: the note,
        # and nothing of the report.
        history = await mallory.client.room_messages(room, start="", limit=100)
        assert isinstance(history, RoomMessagesResponse), history
        assert [
            e.source["content"]["body"]
            for e in history.chunk
            if e.sender == BOT and e.source.get("type") == "m.room.message"
        ] == [NOTE]

        (dm,) = await invited_by_the_bot(alice)
        await alice.wait_for(dm, lambda _: from_bot(alice, dm, "m.notice"))
        await alice.wait_for(dm, lambda _: from_bot(alice, dm, "m.image"))
    assert dm != room and alice.client.rooms[dm].member_count == 2
