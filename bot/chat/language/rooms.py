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
from bot.chat.language.rich import RichText, bullets, lines, reason, rich
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
) -> tuple[RoomDefaults, dict[str, RichText]]:
    """The defaults that still fit today's limits and catalogues, and why the others don't."""
    fields: dict[str, Any] = {}  # RoomDefaults' fields, each checked by ROOM_KEYS
    ignored: dict[str, RichText] = {}
    for key, item in values.items():
        try:
            value = canonical(key, item.value, limits, catalogue)
        except (ValueError, KeyError) as exc:
            ignored[key] = reason(exc).rstrip(".")
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
) -> RichText | None:
    """Why `room set negative VALUE` is refused: a negative prompt does nothing at a guidance
    of 1 or below, so the room's guidance is to be raised first. None: it may be set."""
    guidance, whose = guidance_of(values, defaults)
    if value == NO_NEGATIVE or guided(guidance):
        return None
    return rich(
        "A negative prompt works only with guidance above 1, and {whose} is "
        "{guidance:g}. Raise it first with `room set guidance 5` (each step then takes "
        "about twice as long, and a model made for guidance 0 may want less), then set "
        "the negative prompt.",
        whose=whose,
        guidance=guidance,
    )


def resting(values: dict[str, Kept], defaults: GenerationSettings) -> RichText | None:
    """Why the room's negative prompt is not used, when it is set and the room's guidance is
    1 or below; None when it is used (or not set)."""
    item = values.get("negative")
    guidance, whose = guidance_of(values, defaults)
    if item is None or item.value == NO_NEGATIVE or guided(guidance):
        return None
    return rich(
        "it works only with guidance above 1, and {whose} is {guidance:g} "
        "(`room set guidance 5` to use it, `room reset negative` to clear it)",
        whose=whose,
        guidance=guidance,
    )


def describe(
    values: dict[str, Kept],
    ignored: dict[str, RichText],
    defaults: GenerationSettings,
    catalogue: Catalogue,
) -> RichText:
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
    rows = []
    for key in ROOM_KEYS:
        item = values.get(key)
        # The values and who set them are as typed: literal text, never markup.
        if item is None:
            rows.append(rich("{key}: {value} (the bot's default)", key=key, value=bot[key]))
        elif key in ignored:
            rows.append(
                rich(
                    "{key}: {value} — the room's {typed!r} is not used: {why}",
                    key=key,
                    value=bot[key],
                    typed=item.value,
                    why=ignored[key],
                )
            )
        else:
            when = time.strftime("%Y-%m-%d", time.localtime(item.set_at))
            rows.append(
                rich(
                    "{key}: **{value}** (set by {who} on {when})",
                    key=key,
                    value=item.value,
                    who=item.set_by,
                    when=when,
                )
            )
    return lines(
        rich("**This room's defaults** (`room set KEY VALUE` to change, `room reset` to clear):"),
        bullets(rows),
    )


def in_effect(room: RoomDefaults, defaults: GenerationSettings, catalogue: Catalogue) -> RichText:
    """For `!img help`: what a bare `!img <prompt>` makes in this room."""
    defaults = for_model(defaults, catalogue.family(room.model or catalogue.default_model))
    if room.width and room.height:
        width, height = room.width, room.height
    else:
        width, height = defaults.width_height
    steps = room.steps if room.steps is not None else defaults.steps
    guidance = room_guidance(room, defaults)
    parts = [
        rich("{width}×{height}", width=width, height=height),
        rich("{steps} steps", steps=steps),
        rich("guidance {guidance:g}", guidance=guidance)
        + ("" if guided(guidance) else rich(" (so `--no` also needs `--guidance` above 1)")),
        rich("model {model}", model=room.model or catalogue.default_model),
    ]
    if room.style and room.style != NO_STYLE:
        parts.append(rich("style {style}", style=room.style))
    if room.negative and room.negative != NO_NEGATIVE and guided(guidance):
        parts.append(rich("negative prompt {negative!r}", negative=room.negative))
    if room.enhance:
        parts.append(rich("enhanced"))
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
    text = rich("**Defaults in this room:** ") + RichText((", ",)).join(parts) + "."
    if own:
        text += rich(" This room sets its own {own} (`room` lists them).", own=", ".join(own))
    return text
