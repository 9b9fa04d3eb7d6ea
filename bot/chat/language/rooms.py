"""Per-room defaults: set by the room's moderators, never above `limits:`.

Values are kept as the text that was typed (bot/store/room_defaults.py); they are checked
again each time they are used, so lowering a limit or removing a model or style from the
config also reins in every room.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from bot.chat.language.subcommands import ROOM_KEYS
from bot.config import GenerationSettings, LimitSettings, parse_size
from bot.chat.language.resolve import (
    NO_NEGATIVE,
    Catalogue,
    RoomDefaults,
    for_model,
    guided,
    room_guidance,
)
from bot.chat.language.styles import NO_STYLE, normalise


class Kept(Protocol):
    """A room default as a moderator typed it (bot/store/room_defaults.py keeps them)."""

    @property
    def value(self) -> str: ...

    @property
    def set_by(self) -> str: ...

    @property
    def set_at(self) -> float: ...


def canonical(key: str, value: str, limits: LimitSettings, catalogue: Catalogue) -> str:
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


def usable(
    values: dict[str, Kept], limits: LimitSettings, catalogue: Catalogue
) -> tuple[RoomDefaults, dict[str, str]]:
    """The defaults that still fit today's limits and catalogues, and why the others don't."""
    fields: dict[str, Any] = {}  # RoomDefaults' fields, each checked by ROOM_KEYS
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


def guidance_of(values: dict[str, Kept], defaults: GenerationSettings) -> tuple[float, str]:
    """The room's guidance, and whose it is, in words."""
    item = values.get("guidance")
    try:
        if item is not None:
            return float(item.value), "this room's guidance"
    except ValueError:
        pass  # not a number any more: the bot's applies, as in `usable`
    return defaults.guidance, "the bot's default guidance"


def negative_refusal(
    value: str, values: dict[str, Kept], defaults: GenerationSettings
) -> str | None:
    """Why `room set negative VALUE` is refused: a negative prompt does nothing at a guidance
    of 1 or below, so the room's guidance is to be raised first. None: it may be set."""
    guidance, whose = guidance_of(values, defaults)
    if value == NO_NEGATIVE or guided(guidance):
        return None
    return (
        f"A negative prompt works only with guidance above 1, and {whose} is "
        f"{guidance:g}. Raise it first with `room set guidance 5` (each step then takes "
        "about twice as long, and a model made for guidance 0 may want less), then set "
        "the negative prompt."
    )


def resting(values: dict[str, Kept], defaults: GenerationSettings) -> str | None:
    """Why the room's negative prompt is not used, when it is set and the room's guidance is
    1 or below; None when it is used (or not set)."""
    item = values.get("negative")
    guidance, whose = guidance_of(values, defaults)
    if item is None or item.value == NO_NEGATIVE or guided(guidance):
        return None
    return (
        f"it works only with guidance above 1, and {whose} is {guidance:g} "
        "(`room set guidance 5` to use it, `room reset negative` to clear it)"
    )


def describe(
    values: dict[str, Kept],
    ignored: dict[str, str],
    defaults: GenerationSettings,
    catalogue: Catalogue,
) -> str:
    """`!img room`: each key, the room's value and who set it, or the bot's default."""
    defaults = for_model(defaults, catalogue.family(catalogue.default_model))
    unused = resting(values, defaults)
    if unused is not None and "negative" not in ignored:
        ignored = {**ignored, "negative": unused}
    bot = {
        "style": "none",
        "size": defaults.size,
        "steps": str(defaults.steps),
        "guidance": f"{defaults.guidance:g}",
        "negative": "none",
        "model": catalogue.default_model,
        "enhance": "off",
        "nsfw": "the config's compliance.nsfw",
    }
    lines = ["This room's defaults (`room set KEY VALUE` to change, `room reset` to clear):"]
    for key in ROOM_KEYS:
        item = values.get(key)
        if item is None:
            lines.append(f"  {key}: {bot[key]} (the bot's default)")
        elif key in ignored:
            lines.append(
                f"  {key}: {bot[key]} — the room's {item.value!r} is not used: {ignored[key]}"
            )
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
    parts = [
        f"{width}×{height}",
        f"{steps} steps",
        f"guidance {guidance:g}"
        + ("" if guided(guidance) else " (so --no also needs --guidance above 1)"),
        f"model {room.model or catalogue.default_model}",
    ]
    if room.style and room.style != NO_STYLE:
        parts.append(f"style {room.style}")
    if room.negative and room.negative != NO_NEGATIVE and guided(guidance):
        parts.append(f"negative prompt {room.negative!r}")
    if room.enhance:
        parts.append("enhanced")
    own = [
        key
        for key, value in (
            ("size", room.width),
            ("steps", room.steps),
            ("guidance", room.guidance),
            ("model", room.model),
            ("style", room.style),
            ("negative", room.negative),
            ("enhance", room.enhance),
        )
        if value is not None
    ]
    text = "Defaults in this room: " + ", ".join(parts) + "."
    if own:
        text += f" This room sets its own {', '.join(own)} (`room` lists them)."
    return text
