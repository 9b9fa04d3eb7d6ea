"""A person's own defaults (`!img me`): set by each person for themselves, in every room and
DM with the bot, below the room's own defaults and never above `limits:`.

Kept as typed (bot/store/personal_defaults.py) and checked the way room defaults are, with
the keys of `me set` (subcommands.PERSONAL_KEYS), again each time they are used. The texts
here answer `me`, `me set` and `me reset`; which value is in effect, and from where, is
precedence.py's.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.chat.language import rooms
from bot.chat.language.precedence import Effect
from bot.chat.language.resolve import CONFIG, THIS_ROOM, YOURS, Catalogue, DefaultValues
from bot.chat.language.rich import RichText, bullets, lines, reason, rich
from bot.chat.language.subcommands import PERSONAL_KEYS
from bot.config import LimitSettings
from bot.text import plural

_TO_CHANGE = "`me set KEY VALUE` to change one, `me reset [KEY]` to clear"
_ORDER = "a room's own defaults come first, then yours, then the bot's config"


def canonical(key: str, value: str, limits: LimitSettings, catalogue: Catalogue) -> str:
    """The value of `me set` as stored, or ValueError saying why it is refused (a style or
    model that does not exist, a model that only edits)."""
    return rooms.canonical(key, value, limits, catalogue, PERSONAL_KEYS)


def usable(
    values: Mapping[str, rooms.Typed], limits: LimitSettings, catalogue: Catalogue
) -> tuple[DefaultValues, dict[str, str]]:
    """The person's defaults that still fit today's limits and catalogues (for resolve's
    `person` and precedence.in_effect), and why the others don't."""
    defaults, ignored = rooms.usable(values, limits, catalogue, PERSONAL_KEYS)
    return defaults, {key: why.plain() for key, why in ignored.items()}


def describe(
    values: Mapping[str, rooms.Typed], ignored: dict[str, str], effects: dict[str, Effect]
) -> RichText:
    """`!img me`: each key, the person's own value, and what a bare `!img <prompt>` gets
    here and from where. `ignored` as `usable` gives it, `effects` as precedence.in_effect."""
    # The values and the reasons quoting them are as typed: fields, literal text.
    if values:
        head = rich("**Your own defaults**, in every room and DM with me (" + _TO_CHANGE + "); ")
    else:
        head = rich(
            "You have **no defaults of your own**; `me set KEY VALUE` sets one for every room "
            "and DM with me, e.g. `me set ar 16:9`. What you get here ("
        )
    head += rich(_ORDER + (":" if values else "):"))
    rows = []
    for key in PERSONAL_KEYS:
        effect = effects[key]
        item = values.get(key)
        here = rich("{value}, from {source}", value=effect.value, source=effect.source)
        if item is None:
            row = (
                rich("{key}: not set — here {here}", key=key, here=here)
                if values
                else rich("{key}: {here}", key=key, here=here)
            )
        elif key in ignored:
            row = rich(
                "{key}: {typed!r} is not used: {why} — here {here}",
                key=key,
                typed=item.value,
                why=_lower(ignored[key]),
                here=here,
            )
        elif effect.unused_by == YOURS:
            row = rich(
                "{key}: {value} — not used here: {why}", key=key, value=item.value, why=effect.why
            )
        elif effect.unused_by == THIS_ROOM:
            row = rich(
                "{key}: {value} — this room's own {unused} comes first here "
                "(and is not used: {why})",
                key=key,
                value=item.value,
                unused=effect.unused,
                why=effect.why,
            )
        elif effect.source == THIS_ROOM:
            row = rich(
                "{key}: {value} — this room's own {room} comes first here",
                key=key,
                value=item.value,
                room=effect.value,
            )
        else:
            row = rich("{key}: **{value}** — in effect here", key=key, value=effect.value)
        rows.append(row)
    return lines(head, bullets(rows))


def _lower(reason: str) -> str:
    """A reason that starts a sentence, to go after a colon ("There is no model" → "there")."""
    return reason[:1].lower() + reason[1:] if reason[1:2].islower() else reason


def confirm_set(key: str, value: str, effect: Effect) -> RichText:
    """The answer to `me set KEY VALUE` once it is kept: `value` as stored, `effect` the
    key's in this room afterwards (precedence.in_effect)."""
    shown = effect.value if effect.source == YOURS else value  # a ratio with its size here
    text = rich(
        "Your default {key} is now **{shown}**, in every room and DM with me.", key=key, shown=shown
    )
    if effect.source == THIS_ROOM or effect.unused_by == THIS_ROOM:
        text += rich(
            " In this room its own {key} comes first ({room}); yours applies where a room "
            "sets none.",
            key=key,
            room=effect.unused or effect.value,
        )
    elif effect.unused_by == YOURS:
        text += rich(" It is not used here: {why}.", why=effect.why)
    return text + rich(" `me` shows all your defaults.")


def confirm_reset(key: str | None, removed: int) -> RichText:
    """The answer to `me reset [KEY]`: what was cleared, and what applies now."""
    if key is not None and not removed:
        return rich("You had no default {key} of your own; nothing changed.", key=key)
    if key is None and not removed:
        return rich("You had no defaults of your own; nothing changed.")
    what = (
        rich("**Your default {key} is cleared**", key=key)
        if key
        else rich(
            "**Your defaults are cleared** ({removed} removed)",
            removed=plural(removed, "setting"),
        )
    )
    return what + rich(
        ": rooms' own defaults and {config} apply. `me` shows what is in effect.", config=CONFIG
    )


def refusal(why: ValueError | str) -> RichText:
    """The answer to a `me set` that `canonical` refuses (a style or model there is none of):
    why, and that nothing changed."""
    said = reason(why) if isinstance(why, ValueError) else rich("{}", why)
    return said.rstrip(".") + rich(". Your defaults are as they were (`me` shows them).")
