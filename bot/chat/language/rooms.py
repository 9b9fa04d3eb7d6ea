"""Per-room defaults: set by the room's moderators, never above `limits:`.

Values are kept as the text that was typed (bot/store/room_defaults.py); they are checked
again each time they are used, so lowering a limit or removing a model or style from the
config also reins in every room. A person's own defaults (personal.py) are kept and checked
the same way, with their own keys (`keys=PERSONAL_KEYS`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from bot.chat.language.options import option_name, parse_aspect, size_for_aspect
from bot.chat.language.subcommands import ROOM_KEYS, Check
from bot.config import GenerationSettings, LimitSettings, parse_size
from bot.chat.language.resolve import (
    BUTTONS_BY_DEFAULT,
    NO_DEFAULTS,
    NO_NEGATIVE,
    THIS_ROOM,
    YOURS,
    Catalogue,
    DefaultValues,
    RoomDefaults,
    for_model,
    guided,
    layered,
    room_guidance,
)
from bot.chat.language.rich import RichText, bullets, lines, reason, rich
from bot.chat.language.styles import NO_STYLE, normalise


class Typed(Protocol):
    """A default as someone typed it (bot/store keeps them)."""

    @property
    def value(self) -> str: ...


class Kept(Typed, Protocol):
    """A room default as a moderator typed it (bot/store/room_defaults.py keeps them)."""

    @property
    def set_by(self) -> str: ...

    @property
    def set_at(self) -> float: ...


def canonical(
    key: str,
    value: str,
    limits: LimitSettings,
    catalogue: Catalogue,
    keys: Mapping[str, Check] = ROOM_KEYS,
) -> str:
    """The value as stored, or ValueError saying why it is refused. `keys`: the room's, or a
    person's (subcommands.PERSONAL_KEYS)."""
    value = value.strip()
    converted = keys[key](limits)(value)  # limits: size, steps, guidance
    if key == "style":
        value = normalise(value)
        if value != NO_STYLE and value not in catalogue.styles:
            raise ValueError(catalogue.unknown_style(value))
    elif key == "model" and value not in catalogue.models:
        raise ValueError(catalogue.unknown_model(value))
    elif key == "model" and catalogue.only_edits(value):  # every prompt would be refused
        raise ValueError(catalogue.only_edits(value))
    elif key == "negative" and (word := next((w for w in value.split() if option_name(w)), "")):
        # Typed back after `--no` (a picture's card) it would be an option of its own.
        raise ValueError(
            rich("a negative prompt cannot hold an option word such as `{word}`", word=word)
        )
    elif key == "size":  # a person's may be a ratio, which comes as its text (16:9)
        value = converted if isinstance(converted, str) else "{}x{}".format(*converted)
    elif key in ("enhance", "buttons"):
        value = "on" if converted else "off"
    elif key == "nsfw":
        value = converted
    return value


def usable(
    values: Mapping[str, Typed],
    limits: LimitSettings,
    catalogue: Catalogue,
    keys: Mapping[str, Check] = ROOM_KEYS,
) -> tuple[DefaultValues, dict[str, RichText]]:
    """The defaults that still fit today's limits and catalogues, and why the others don't.
    `keys`: the room's, or a person's (subcommands.PERSONAL_KEYS)."""
    fields: dict[str, Any] = {}  # DefaultValues' fields, each checked by `keys`
    ignored: dict[str, RichText] = {}
    for key, item in values.items():
        try:
            value = canonical(key, item.value, limits, catalogue, keys)
        except (ValueError, KeyError) as exc:
            ignored[key] = reason(exc).rstrip(".")
            continue
        if key == "nsfw":
            continue  # not a generation default: the compliance checks read it (screening)
        if key == "size" and ":" in value:  # a ratio, sized for the model when used
            fields["aspect"] = parse_aspect(value)
        elif key == "size":
            fields["width"], fields["height"] = parse_size(value)
        elif key in ("steps", "guidance", "enhance", "buttons"):
            fields[key] = keys[key](limits)(value)
        else:
            fields[key] = value
    return RoomDefaults(**fields), ignored


def guidance_of(values: Mapping[str, Kept], defaults: GenerationSettings) -> tuple[float, str]:
    """The room's guidance, and whose it is, in words."""
    item = values.get("guidance")
    try:
        if item is not None:
            return float(item.value), "this room's guidance"
    except ValueError:
        pass  # not a number any more: the bot's applies, as in `usable`
    return defaults.guidance, "the bot's default guidance"


def negative_refusal(
    value: str, values: Mapping[str, Kept], defaults: GenerationSettings
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


def resting(values: Mapping[str, Kept], defaults: GenerationSettings) -> RichText | None:
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
    values: Mapping[str, Kept],
    ignored: Mapping[str, RichText | str],
    defaults: GenerationSettings,
    catalogue: Catalogue,
    buttons: bool = BUTTONS_BY_DEFAULT,
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
        "buttons": "on" if buttons else "off",
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


def in_effect(
    room: RoomDefaults,
    defaults: GenerationSettings,
    catalogue: Catalogue,
    person: DefaultValues = NO_DEFAULTS,
    limits: LimitSettings | None = None,
) -> RichText:
    """For `!img help`: what a bare `!img <prompt>` makes in this room, for the person whose
    own defaults are `person` (the room's come first); `limits` size a person's ratio."""
    here, whose = layered(room, person)
    model = here.model or catalogue.default_model
    defaults = for_model(defaults, catalogue.family(model))
    width, height = defaults.width_height
    if here.width and here.height:
        width, height = here.width, here.height
    elif here.aspect:
        native_width, native_height = catalogue.models.get(model, (width, height))
        pixels = native_width * native_height
        try:
            width, height = size_for_aspect(
                here.aspect, pixels, limits.max_pixels if limits else pixels
            )
        except ValueError:
            pass  # a picture is refused with why (resolve); help shows the bot's size
    steps = here.steps if here.steps is not None else defaults.steps
    guidance = room_guidance(here, defaults)
    # The values of the room's and the person's defaults are as typed: literal text.
    parts = [
        rich("{width}×{height}", width=width, height=height),
        rich("{steps} steps", steps=steps),
        rich("guidance {guidance:g}", guidance=guidance)
        + ("" if guided(guidance) else rich(" (so `--no` also needs `--guidance` above 1)")),
        rich("model {model}", model=model),
    ]
    if here.style and here.style != NO_STYLE:
        parts.append(rich("style {style}", style=here.style))
    if here.negative and here.negative != NO_NEGATIVE and guided(guidance):
        parts.append(rich("negative prompt {negative!r}", negative=here.negative))
    if here.enhance:
        parts.append(rich("enhanced"))
    shown = ("size", "steps", "guidance", "model", "style", "negative", "enhance")
    own = [key for key in shown if whose.get(key) == THIS_ROOM]
    yours = [key for key in shown if whose.get(key) == YOURS]
    before_yours = [key for key in own if person.sets(key)]
    text = rich("**Defaults in this room:** ") + RichText((", ",)).join(parts) + "."
    if own:
        text += rich(" This room sets its own {own} (`room` lists them).", own=", ".join(own))
    if yours:
        text += rich(
            " Your own defaults set the {yours} (`me` lists them).", yours=", ".join(yours)
        )
    if before_yours:
        text += rich(" This room's {keys} come before yours.", keys=", ".join(before_yours))
    return text
