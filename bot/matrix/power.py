"""Power levels: who may do what in a room, read from the homeserver (not a cached copy)."""

from __future__ import annotations

import math

from nio import AsyncClient, RoomGetStateResponse


async def power_level(client: AsyncClient, room_id: str, user_id: str) -> float | None:
    """The user's power level in the room, read from the server (not a cached copy).

    From room version 12 the room's creators hold unlimited power and are not listed in the
    power levels (MSC4289), so the create event is read as well. None when the homeserver
    would not say.
    """
    standing = await _standing(client, room_id, user_id)
    return None if standing is None else standing[0]


async def may_redact_others(client: AsyncClient, room_id: str, user_id: str) -> bool | None:
    """Whether the user may redact other people's events in the room: their power level
    reaches the room's `redact` level (50 where the power levels do not say). None when the
    homeserver would not say."""
    standing = await _standing(client, room_id, user_id)
    return None if standing is None else standing[0] >= standing[1]


async def _standing(client: AsyncClient, room_id: str, user_id: str) -> tuple[float, float] | None:
    """The user's power level, and the level that may redact others' events."""
    response = await client.room_get_state(room_id)
    if not isinstance(response, RoomGetStateResponse):
        return None
    state = {(e.get("type"), e.get("state_key")): e for e in response.events if isinstance(e, dict)}
    create = state.get(("m.room.create", ""), {})
    create_content = create.get("content") or {}
    creators = {create.get("sender"), *(create_content.get("additional_creators") or [])}
    version = str(create_content.get("room_version", "1"))
    levels = (state.get(("m.room.power_levels", "")) or {}).get("content")
    redact = _level(levels.get("redact"), 50) if isinstance(levels, dict) else 50
    if user_id in creators and not (version.isdigit() and int(version) <= 11):
        return math.inf, redact
    if not isinstance(levels, dict):
        # No power levels event: the spec gives the creator 100 and everyone else 0.
        return (100 if user_id in creators else 0), redact
    users = levels.get("users") if isinstance(levels.get("users"), dict) else {}
    return _level(users.get(user_id, levels.get("users_default")), 0), redact


def _level(value, default: int) -> int:
    """A level as the power levels give it; a missing or malformed one is `default` (for
    a person's own level nobody's power, for the level an action needs the spec's)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
