"""Parsing chat commands: pure functions from text to a command or a usage error.

No I/O here. `parse` is the one entry point; handlers receive what it returns. Sub-commands
and options (in `options.py`) are declarative tables, so adding one is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bot.chat.commands import (Again, Cancel, Command, Generate, Help, Models, Pause,
                               QueueStatus, Resume, RoomReset, RoomSet, RoomShow, Styles,
                               Upscale, Usage, UsageError, Vary)
from bot.chat.options import (MIN_STRENGTH, OPTIONS, VARY_STRENGTH, number_in, on_off,
                              option_name, parse_options, size_limit, size_within,
                              text_within)
from bot.config import LimitSettings, QuotaSettings
from bot.store.usage import parse_since

UPSCALE_FACTORS = (2, 4, 8)


def _parse_generate(text: str, limits: LimitSettings) -> Generate | UsageError:
    words = text.split()
    first_option = next((i for i, w in enumerate(words) if option_name(w)), len(words))
    prompt = " ".join(words[:first_option])
    if not prompt:
        return UsageError("The prompt is empty: write what to draw before any --options, "
                          "e.g. `!img a lighthouse at dawn --seed 7`.")
    if len(prompt) > limits.max_prompt_chars:
        return UsageError(f"The prompt is {len(prompt):,} characters long; the limit is "
                          f"{limits.max_prompt_chars:,}.")
    try:
        values = parse_options(words[first_option:], limits)
    except ValueError as exc:
        return UsageError(str(exc) + ".")
    if "size" in values:
        values["width"], values["height"] = values.pop("size")  # type: ignore[misc]
    return Generate(prompt=prompt, **values)  # type: ignore[arg-type]


# ---- commands on a picture ------------------------------------------------------------------

def _enhance_and(rest: str, name: str) -> tuple[bool | None, list[str]]:
    """`--enhance` and the other words; UsageError for any other option (which would
    otherwise silently turn the command into a prompt)."""
    words = rest.split()
    enhance = any(option_name(w) == ("enhance", None) for w in words)
    words = [w for w in words if option_name(w) != ("enhance", None)]
    # Its own argument is one number at most; an option right after it (or right after
    # the number) is a mistake, not the start of a prompt.
    at = 1 if words and _is_number(words[0].rstrip("x×")) else 0
    if len(words) > at and option_name(words[at]):
        hint = "; write the strength as a number, e.g. `vary 0.3`" if name == "vary" else ""
        raise ValueError(f"`{name}` takes no {words[at]}, only --enhance{hint}")
    return (True if enhance else None), words


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _on_a_picture(parse_rest):
    """A parser for again/vary/upscale that turns a stray option into a UsageError."""
    def parse(rest: str, limits: LimitSettings):
        try:
            return parse_rest(rest)
        except ValueError as exc:
            return UsageError(f"{exc}.")

    return parse


def _parse_again(rest: str) -> Again | None:
    enhance, words = _enhance_and(rest, "again")
    return None if words else Again(enhance)


def _parse_vary(rest: str) -> Vary | UsageError | None:
    enhance, words = _enhance_and(rest, "vary")
    if not words:
        return Vary(None, enhance)
    if len(words) > 1:
        return None  # "!img vary the colours of autumn" is a prompt
    try:
        float(words[0])
    except ValueError:
        return None  # "!img vary colours" is a prompt
    try:
        return Vary(number_in("vary", float, MIN_STRENGTH, 1.0)(words[0]), enhance)
    except ValueError as exc:
        return UsageError(f"{exc}: how much of the picture is painted over "
                          f"(default {VARY_STRENGTH:g}).")


def _parse_upscale(rest: str) -> Upscale | UsageError | None:
    enhance, words = _enhance_and(rest, "upscale")
    if not words:
        return Upscale(4, enhance)
    factor = words[0].lower().rstrip("x×")
    if len(words) > 1 or not factor.isdigit():
        return None  # "!img upscale town at night" is a prompt
    if int(factor) not in UPSCALE_FACTORS:
        return UsageError(f"upscale by 2, 4 or 8, not {words[0]}.")
    return Upscale(int(factor), enhance)


# ---- room defaults ---------------------------------------------------------------------------

# What `room set KEY VALUE` accepts; the checks that need only the limits run here.
ROOM_KEYS: dict[str, Callable[[LimitSettings], Callable[[str], object]]] = {
    "style": lambda lim: str,
    "size": lambda lim: size_within("size", lim),
    "steps": lambda lim: number_in("steps", int, 1, lim.max_steps),
    "guidance": lambda lim: number_in("guidance", float, 0.0, 30.0),
    "negative": text_within("negative"),
    "model": lambda lim: str,
    "enhance": lambda lim: on_off("enhance"),
    "nsfw": lambda lim: _stricter_safety,
}


def _stricter_safety(text: str) -> str:
    # A room may make the safety check stricter than the config, never turn it off.
    word = text.strip().lower()
    if word not in ("blur", "block"):
        raise ValueError(f"nsfw is blur or block, not {text!r}: a room can make the safety "
                         "check stricter, never looser (`room reset nsfw` clears it)")
    return word
_ROOM_USAGE = ("Write `room set KEY VALUE` with KEY one of " + ", ".join(ROOM_KEYS)
               + ", or `room reset [KEY]`.")


def _parse_room(rest: str, limits: LimitSettings) -> Command | UsageError | None:
    words = rest.split()
    if not words:
        return RoomShow()
    verb = words[0].lower()
    if verb == "reset":
        if len(words) == 1:
            return RoomReset()
        key = words[1].lower()
        if len(words) > 2 or key not in ROOM_KEYS:
            return UsageError(f"`room reset` takes nothing or one of {', '.join(ROOM_KEYS)}.")
        return RoomReset(key)
    if verb != "set":
        return None  # "!img room with a view" is a prompt
    if len(words) < 3:
        return UsageError("`room set` needs a key and a value. " + _ROOM_USAGE)
    key, value = words[1].lower(), " ".join(words[2:])
    if key not in ROOM_KEYS:
        return UsageError(f"There is no room default {key!r}. " + _ROOM_USAGE)
    if len(value) > limits.max_prompt_chars:
        return UsageError(f"That value is too long; the limit is {limits.max_prompt_chars:,}.")
    try:
        ROOM_KEYS[key](limits)(value)
    except ValueError as exc:
        return UsageError(str(exc) + ".")
    return RoomSet(key, value)


def _parse_usage(rest: str, limits: LimitSettings) -> Usage | UsageError | None:
    span, user = "7d", None
    for word in rest.split():
        if word.startswith("@") and user is None:
            user = word  # @bob without a server is completed with the bot's (replies.usage)
            continue
        try:
            parse_since(word)
        except ValueError:
            return None  # "!img usage of solar power, diagram" is a prompt
        span = word.lower()
    return Usage(span, user)


@dataclass(frozen=True)
class SubCommand:
    name: str
    parse: Callable[[str, LimitSettings], Command | UsageError | None]
    help: str
    # A sub-command without arguments is recognised only when it stands alone, so that
    # "!img help me draw a cat" is still a prompt; one with arguments returns None from
    # `parse` when they do not fit, for the same reason.
    takes_args: bool = False
    who: str = ""  # who may use it, when not everyone


def _simple(command: Command) -> Callable[[str, LimitSettings], Command]:
    return lambda rest, lim: command


SUBCOMMANDS: dict[str, SubCommand] = {
    sub.name: sub
    for sub in (
        SubCommand("again", _on_a_picture(_parse_again), "in reply to one of my pictures: the same again, "
                   "with a new seed", takes_args=True),
        SubCommand("vary", _on_a_picture(_parse_vary), "in reply to one of my pictures: a variation of it "
                   f"(`vary 0.3` changes less, `vary 0.8` more; default {VARY_STRENGTH:g})",
                   takes_args=True),
        SubCommand("upscale", _on_a_picture(_parse_upscale), "in reply to any picture: 2, 4 or 8 times "
                   "larger (default 4)", takes_args=True),
        SubCommand("help", _simple(Help()), "this help"),
        SubCommand("styles", _simple(Styles()), "the style presets"),
        SubCommand("models", _simple(Models()), "the models to choose from with --model"),
        SubCommand("queue", _simple(QueueStatus()),
                   "how many jobs are waiting, which are yours, and the wait"),
        SubCommand("cancel", _simple(Cancel()), "cancel your queued jobs (or redact the "
                                                "command)"),
        SubCommand("room", _parse_room, "this room's defaults; `room set KEY VALUE` with KEY "
                   "one of " + ", ".join(ROOM_KEYS) + ", `room reset [KEY]`",
                   takes_args=True, who="moderators set and reset"),
        SubCommand("usage", _parse_usage, "usage report: `usage [7d|30d|all] [@user]`",
                   takes_args=True, who="bot admins"),
        SubCommand("pause", _simple(Pause()), "hold the queue (commands still queue)",
                   who="bot admins"),
        SubCommand("resume", _simple(Resume()), "let the queue run again", who="bot admins"),
    )
}


def strip_reply_fallback(body: str) -> str:
    """Drop the quoted lines that clients put before a reply's own text."""
    lines = body.split("\n")
    if lines and lines[0].startswith("> "):
        while lines and lines[0].startswith(">"):
            lines.pop(0)
        while lines and not lines[0].strip():
            lines.pop(0)
    return "\n".join(lines)


def parse(body: str, prefix: str, limits: LimitSettings) -> Command | UsageError | None:
    """Turn a message body into a command; None when the message is not for the bot."""
    text = strip_reply_fallback(body).strip()
    if not text.startswith(prefix) or (len(text) > len(prefix) and not text[len(prefix)].isspace()):
        return None
    rest = text[len(prefix):].strip()
    if not rest:
        return Help()
    word, _, after = rest.replace("\n", " ").partition(" ")
    sub = SUBCOMMANDS.get(word.lower())
    if sub is not None and (sub.takes_args or not after.strip()):
        command = sub.parse(after.strip(), limits)
        if command is not None:
            return command
    return _parse_generate(rest, limits)


def help_text(prefix: str, limits: LimitSettings, quotas: QuotaSettings | None = None,
              defaults: str = "") -> str:
    lines = [
        f"{prefix} <prompt> [options] — make a picture, e.g. `{prefix} Albert Einstein, "
        "oil painting --seed 42`",
        "Options, after the prompt, in any order:",
    ]
    for opt in OPTIONS.values():
        lines.append(f"  --{opt.name}{' ' + opt.takes if opt.takes else ''} — {opt.help}")
    lines.append("Commands:")
    for sub in SUBCOMMANDS.values():
        who = f" ({sub.who})" if sub.who else ""
        lines.append(f"  {prefix} {sub.name} — {sub.help}{who}")
    if defaults:  # the room's and the bot's (bot.chat.rooms.in_effect)
        lines.append(defaults)
    lines.append(
        f"Limits: prompt up to {limits.max_prompt_chars:,} characters, up to "
        f"{limits.max_steps} steps, pictures up to {size_limit(limits.max_pixels)}, up to "
        f"{limits.max_images} pictures at once, {limits.per_user_queued} queued jobs per person."
    )
    per = [f"{n} per {span}" for n, span in ((quotas.pictures_per_hour, "hour"),
                                              (quotas.pictures_per_day, "day"))
           if n is not None] if quotas else []
    if per:
        lines.append(f"Quota: {' and '.join(per)} pictures per person.")
    lines.append(f"Reply to any picture with `{prefix} <prompt>` to paint it over "
                 "(image-to-image; --strength sets how much).")
    lines.append("Redacting a command that is still queued cancels it. A command in a thread "
                 "is answered in the thread.")
    return "\n".join(lines)
