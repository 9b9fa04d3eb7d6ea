"""A direct message with one person: a room only the bot and that person are in, for what
the rest of a room must not read (an admin's usage report names every user and room).

The bot keeps the room it made for each person in the state table and uses it again while
the two of them are its only members; otherwise it makes a new one. Only a room the bot made
counts: it chose the room's join rules (invite only) and history visibility (members only);
any other room of two may have been made public by whoever made it. Membership is asked of
the homeserver each time, not read from nio's room list: the bot syncs with lazy-loaded
members, so nio may not know everyone who is in a room.

The bot's own m.direct account data is not kept: it marks DMs for the bot's own clients,
and the bot has none; the invite's is_direct flag is what the person's client shows.
"""

from __future__ import annotations

import asyncio
import logging
import time

from typing import Protocol

from nio import AsyncClient, RoomCreateResponse, RoomGetStateResponse, RoomPreset

from bot.matrix.messages import HomeserverError

log = logging.getLogger(__name__)

STATE_KEY = "direct_room:"  # + the person's user ID: where their RoomPlace keeps it
# How long a new room may take to arrive through the bot's own sync (nio cannot send to an
# encrypted room, nor share its key, before the sync has told it about the room).
SYNC_WAIT_SECONDS = 30.0
_POLL_SECONDS = 0.2
ENCRYPTED = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


class RoomPlace(Protocol):
    """Where the room made for one person is kept between runs (the chat side hands in the
    database's state table, bot.store.db.Kept)."""

    async def load(self) -> str | None: ...

    async def save(self, value: str) -> None: ...


class DirectRoomFailed(HomeserverError):
    """No direct room with the person could be found or made now; the message says why."""


async def members(client: AsyncClient, room_id: str) -> set[str] | None:
    """Everyone joined to or invited into the room, as the homeserver has it (None when it
    does not answer); an invited person reads the room's history once they join."""
    response = await client.room_get_state(room_id)
    if not isinstance(response, RoomGetStateResponse):
        return None
    return {
        event["state_key"]
        for event in response.events
        if event.get("type") == "m.room.member"
        and (event.get("content") or {}).get("membership") in ("join", "invite")
    }


async def direct_room(
    client: AsyncClient, place: RoomPlace, user_id: str, *, encrypted: bool
) -> str:
    """The room for a direct message with `user_id`: the one kept in `place` while it is
    still only theirs and the bot's, else a new one (encrypted when `encrypted`), with them
    invited and known to the bot's sync. Raises DirectRoomFailed."""
    kept = await place.load()
    if kept is not None and kept in client.rooms:
        now_in = await members(client, kept)
        if now_in == {client.user_id, user_id}:
            return kept
        if now_in is not None and user_id not in now_in:
            # They left it: the bot does not stay on alone in a room no one reads.
            await client.room_leave(kept)
        log.info(
            "the direct room %s with %s is no longer only theirs and the bot's; making a new one",
            kept,
            user_id,
        )
    created = await client.room_create(
        is_direct=True,
        preset=RoomPreset.trusted_private_chat,
        invite=[user_id],
        initial_state=[ENCRYPTED] if encrypted else [],
    )
    if not isinstance(created, RoomCreateResponse):
        raise DirectRoomFailed(f"the homeserver did not make the room ({created.message})")
    room_id = created.room_id
    await place.save(room_id)
    log.info("made the direct room %s with %s", room_id, user_id)
    deadline = time.monotonic() + SYNC_WAIT_SECONDS
    while not (room_id in client.rooms and user_id in client.rooms[room_id].users):
        if time.monotonic() > deadline:
            raise DirectRoomFailed(
                f"the new room {room_id} did not arrive through the sync "
                f"within {SYNC_WAIT_SECONDS:.0f} s"
            )
        await asyncio.sleep(_POLL_SECONDS)
    return room_id
