"""Per-room defaults: stored in SQLite, set by the room's moderators, never above `limits:`.

Values are kept as the text that was typed; they are checked again each time they are used,
so lowering a limit or removing a model or style from the config also reins in every room.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import aiosqlite
from nio import AsyncClient, RoomGetStateResponse

from bot.store import db as database
from bot.chat.subcommands import ROOM_KEYS
from bot.config import GenerationSettings, LimitSettings, parse_size
from bot.chat.resolve import (NO_NEGATIVE, Catalogue, RoomDefaults, for_model, guided,
                              room_guidance)
from bot.chat.styles import NO_STYLE, normalise


@dataclass(frozen=True)
class Stored:
    value: str
    set_by: str
    set_at: float


async def stored(db: aiosqlite.Connection, room_id: str) -> dict[str, Stored]:
    cursor = await db.execute(
        "SELECT key, value, set_by, set_at FROM room_defaults WHERE room_id = ?", (room_id,))
    return {row[0]: Stored(row[1], row[2], row[3]) for row in await cursor.fetchall()}


async def store(db: aiosqlite.Connection, room_id: str, key: str, value: str,
                user_id: str) -> None:
    async with database.writing(db):
        await db.execute(
            "INSERT INTO room_defaults(room_id, key, value, set_by, set_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(room_id, key) DO UPDATE SET value=excluded.value, "
            "set_by=excluded.set_by, set_at=excluded.set_at",
            (room_id, key, value, user_id, time.time()))


async def clear(db: aiosqlite.Connection, room_id: str, key: str | None = None) -> int:
    async with database.writing(db):
        if key is None:
            cursor = await db.execute("DELETE FROM room_defaults WHERE room_id = ?",
                                      (room_id,))
        else:
            cursor = await db.execute(
                "DELETE FROM room_defaults WHERE room_id = ? AND key = ?", (room_id, key))
    return cursor.rowcount


def canonical(key: str, value: str, limits: LimitSettings,
              catalogue: Catalogue) -> str:
    """The value as stored, or ValueError saying why it is refused."""
    value = value.strip()
    converted = ROOM_KEYS[key](limits)(value)  # limits: size, steps, guidance
    if key == "style":
        value = normalise(value)
        if value != NO_STYLE and value not in catalogue.styles:
            raise ValueError(catalogue.unknown_style(value))
    elif key == "model" and value not in catalogue.models:
        raise ValueError(catalogue.unknown_model(value))
    elif key == "model" and catalogue.only_edits(value):  # every prompt would be refused
        raise ValueError(catalogue.only_edits(value))
    elif key == "size":
        value = "{}x{}".format(*converted)
    elif key == "enhance":
        value = "on" if converted else "off"
    elif key == "nsfw":
        value = converted
    return value


def usable(values: dict[str, Stored], limits: LimitSettings,
           catalogue: Catalogue) -> tuple[RoomDefaults, dict[str, str]]:
    """The defaults that still fit today's limits and catalogues, and why the others don't."""
    fields: dict[str, object] = {}
    ignored: dict[str, str] = {}
    for key, item in values.items():
        try:
            value = canonical(key, item.value, limits, catalogue)
        except (ValueError, KeyError) as exc:
            ignored[key] = str(exc).rstrip(".")
            continue
        if key == "nsfw":
            continue  # not a generation default: the compliance checks read it (screening)
        if key == "size":
            fields["width"], fields["height"] = parse_size(value)
        elif key in ("steps", "guidance", "enhance"):
            fields[key] = ROOM_KEYS[key](limits)(value)
        else:
            fields[key] = value
    return RoomDefaults(**fields), ignored


def guidance_of(values: dict[str, Stored], defaults: GenerationSettings) -> tuple[float, str]:
    """The room's guidance, and whose it is, in words."""
    item = values.get("guidance")
    try:
        if item is not None:
            return float(item.value), "this room's guidance"
    except ValueError:
        pass  # not a number any more: the bot's applies, as in `usable`
    return defaults.guidance, "the bot's default guidance"


def negative_refusal(value: str, values: dict[str, Stored],
                     defaults: GenerationSettings) -> str | None:
    """Why `room set negative VALUE` is refused: a negative prompt does nothing at a guidance
    of 1 or below, so the room's guidance is to be raised first. None: it may be set."""
    guidance, whose = guidance_of(values, defaults)
    if value == NO_NEGATIVE or guided(guidance):
        return None
    return (f"A negative prompt works only with guidance above 1, and {whose} is "
            f"{guidance:g}. Raise it first with `room set guidance 5` (each step then takes "
            "about twice as long, and a model made for guidance 0 may want less), then set "
            "the negative prompt.")


def resting(values: dict[str, Stored], defaults: GenerationSettings) -> str | None:
    """Why the room's negative prompt is not used, when it is set and the room's guidance is
    1 or below; None when it is used (or not set)."""
    item = values.get("negative")
    guidance, whose = guidance_of(values, defaults)
    if item is None or item.value == NO_NEGATIVE or guided(guidance):
        return None
    return (f"it works only with guidance above 1, and {whose} is {guidance:g} "
            "(`room set guidance 5` to use it, `room reset negative` to clear it)")


def describe(values: dict[str, Stored], ignored: dict[str, str],
             defaults: GenerationSettings, catalogue: Catalogue) -> str:
    """`!img room`: each key, the room's value and who set it, or the bot's default."""
    defaults = for_model(defaults, catalogue.family(catalogue.default_model))
    unused = resting(values, defaults)
    if unused is not None and "negative" not in ignored:
        ignored = {**ignored, "negative": unused}
    bot = {
        "style": "none", "size": defaults.size, "steps": str(defaults.steps),
        "guidance": f"{defaults.guidance:g}", "negative": "none",
        "model": catalogue.default_model, "enhance": "off",
        "nsfw": "the config's compliance.nsfw",
    }
    lines = ["This room's defaults (`room set KEY VALUE` to change, `room reset` to clear):"]
    for key in ROOM_KEYS:
        item = values.get(key)
        if item is None:
            lines.append(f"  {key}: {bot[key]} (the bot's default)")
        elif key in ignored:
            lines.append(f"  {key}: {bot[key]} — the room's {item.value!r} is not used: "
                         f"{ignored[key]}")
        else:
            when = time.strftime("%Y-%m-%d", time.localtime(item.set_at))
            lines.append(f"  {key}: {item.value} (set by {item.set_by} on {when})")
    return "\n".join(lines)


def in_effect(room: RoomDefaults, defaults: GenerationSettings, catalogue: Catalogue) -> str:
    """For `!img help`: what a bare `!img <prompt>` makes in this room."""
    defaults = for_model(defaults, catalogue.family(room.model or catalogue.default_model))
    if room.width and room.height:
        width, height = room.width, room.height
    else:
        width, height = defaults.width_height
    steps = room.steps if room.steps is not None else defaults.steps
    guidance = room_guidance(room, defaults)
    parts = [f"{width}×{height}", f"{steps} steps",
             f"guidance {guidance:g}" + ("" if guided(guidance) else
                                         " (so --no also needs --guidance above 1)"),
             f"model {room.model or catalogue.default_model}"]
    if room.style and room.style != NO_STYLE:
        parts.append(f"style {room.style}")
    if room.negative and room.negative != NO_NEGATIVE and guided(guidance):
        parts.append(f"negative prompt {room.negative!r}")
    if room.enhance:
        parts.append("enhanced")
    own = [key for key, value in (("size", room.width), ("steps", room.steps),
                                  ("guidance", room.guidance), ("model", room.model),
                                  ("style", room.style), ("negative", room.negative),
                                  ("enhance", room.enhance)) if value is not None]
    text = "Defaults in this room: " + ", ".join(parts) + "."
    if own:
        text += f" This room sets its own {', '.join(own)} (`room` lists them)."
    return text


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


async def _standing(client: AsyncClient, room_id: str,
                    user_id: str) -> tuple[float, float] | None:
    """The user's power level, and the level that may redact others' events."""
    response = await client.room_get_state(room_id)
    if not isinstance(response, RoomGetStateResponse):
        return None
    state = {(e.get("type"), e.get("state_key")): e for e in response.events
             if isinstance(e, dict)}
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
