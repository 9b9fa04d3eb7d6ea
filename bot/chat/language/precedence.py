"""What a bare `!img <prompt>` gets from each key, and where that comes from: the room's
defaults, then the person's own, then the bot's config (a command's own options come before
all three). `!img me` and `!img help` show it; resolve.py makes the jobs by the same order
(`layered`). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat.language.options import size_for_aspect
from bot.chat.language.resolve import (
    BUTTONS_BY_DEFAULT,
    CONFIG,
    NO_NEGATIVE,
    Catalogue,
    DefaultValues,
    for_model,
    guided,
    layered,
    room_guidance,
)
from bot.chat.language.styles import NO_STYLE
from bot.config import GenerationSettings, LimitSettings


@dataclass(frozen=True)
class Effect:
    """One key's value in effect, as the replies show it, and where it comes from."""

    value: str
    source: str  # resolve.THIS_ROOM, YOURS or CONFIG
    # A value set for the key that does nothing here (a negative prompt at guidance 1), whose
    # it is and why; `value` is then what applies instead.
    unused: str = ""
    unused_by: str = ""  # THIS_ROOM or YOURS
    why: str = ""


def in_effect(
    room: DefaultValues,
    person: DefaultValues,
    defaults: GenerationSettings,
    limits: LimitSettings,
    catalogue: Catalogue,
    buttons: bool = BUTTONS_BY_DEFAULT,
) -> dict[str, Effect]:
    """Each key of `KEYS` (the ones `room set` and `me set` name), in that order. `room`
    and `person` as rooms.usable gives them (checked against today's limits); `buttons`:
    whether the bot places its reaction buttons where no one says."""
    merged, whose = layered(room, person)
    model = merged.model or catalogue.default_model
    family = catalogue.family(model)
    bot = for_model(defaults, family)
    effects: dict[str, Effect] = {}

    def put(key: str, value: str) -> None:
        effects[key] = Effect(value, whose.get(key, CONFIG))

    put("style", merged.style or NO_STYLE)
    put("size", _size(merged, model, bot, limits, catalogue))
    put("steps", str(merged.steps if merged.steps is not None else bot.steps))
    if merged.guidance is not None and not family.guidance:
        guidance = bot.guidance
        effects["guidance"] = Effect(
            f"{guidance:g}",
            CONFIG,
            f"{merged.guidance:g}",
            whose["guidance"],
            f"the model {catalogue.described(model)} runs without guidance",
        )
    else:
        guidance = merged.guidance if merged.guidance is not None else bot.guidance
        put("guidance", f"{guidance:g}")
    negative = merged.negative
    if not negative or negative == NO_NEGATIVE:
        put("negative", "none")
    elif not family.negative_prompt:
        effects["negative"] = Effect(
            "none",
            CONFIG,
            negative,
            whose["negative"],
            f"the model {catalogue.described(model)} takes no negative prompt",
        )
    elif not (guided(room_guidance(merged, defaults)) and guided(guidance)):
        effects["negative"] = Effect(
            "none",
            CONFIG,
            negative,
            whose["negative"],
            f"it works only with guidance above 1, and the guidance here is {guidance:g}",
        )
    else:
        put("negative", negative)
    put("model", model)
    put("enhance", "on" if merged.enhance else "off")
    put("buttons", "on" if (merged.buttons if merged.buttons is not None else buttons) else "off")
    return effects


def _size(
    merged: DefaultValues,
    model: str,
    bot: GenerationSettings,
    limits: LimitSettings,
    catalogue: Catalogue,
) -> str:
    """The size as people read it; a ratio with the size it makes for the model."""
    if merged.width and merged.height:
        return f"{merged.width}x{merged.height}"
    if merged.aspect:
        ratio = "{}:{}".format(*merged.aspect)
        native_width, native_height = catalogue.models.get(model, bot.width_height)
        try:
            width, height = size_for_aspect(
                merged.aspect, native_width * native_height, limits.max_pixels
            )
        except ValueError:
            return f"{ratio} (no size of it fits the limit of {limits.max_pixels:,} pixels)"
        return f"{ratio} ({width}x{height} with {model})"
    return "{}x{}".format(*bot.width_height)
