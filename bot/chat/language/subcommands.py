"""The sub-commands, one declarative table: `!img WORD …` with WORD one of them is that
sub-command, whatever follows. Each row's `parse` turns what follows into the command, a
UsageError about a value, or None when it is not what the sub-command takes; the parser
answers None with one notice naming what it takes (`not_taken`). Pure, like the parser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.chat.language.commands import (
    Again,
    Cancel,
    Command,
    Edit,
    Help,
    Info,
    MeReset,
    MeSet,
    MeShow,
    Models,
    Pause,
    QueueStatus,
    Resume,
    RoomReset,
    RoomSet,
    RoomShow,
    Styles,
    Upscale,
    Usage,
    UsageError,
    Vary,
)
from bot.chat.language.options import (
    MIN_STRENGTH,
    OPTIONS,
    VARY_STRENGTH,
    number_in,
    on_off,
    option_name,
    parse_aspect,
    size_within,
    text_within,
)
from bot.chat.language.prompts import prompt_and_options, visible
from bot.chat.language.rich import RichText, code, reason, rich
from bot.config import LimitSettings
from bot.text import MAX_SPAN, parse_since, shorten

UPSCALE_FACTORS = (2, 4, 8)
Parsed = Command | UsageError | None  # None: not what the sub-command takes


# ---- commands on a picture ------------------------------------------------------------------


def _enhance_and(rest: str, name: str) -> tuple[bool | None, list[str]]:
    """`--enhance` and the other words; ValueError for any other option."""
    words = rest.split()
    enhance = any(option_name(w) == ("enhance", None) for w in words)
    words = [w for w in words if option_name(w) != ("enhance", None)]
    # Its own argument is one number at most; an option right after it (or right after
    # the number) gets a notice of its own, naming the option.
    at = 1 if words and _is_number(words[0].rstrip("x×")) else 0
    if len(words) > at and option_name(words[at]):
        hint = "; write the strength as a number, e.g. `vary 0.3`" if name == "vary" else ""
        raise ValueError(
            rich("`{name}` takes no {word}, only `--enhance`" + hint, name=name, word=words[at])
        )
    return (True if enhance else None), words


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _on_a_picture(parse_rest: Callable[[str], Parsed]):
    """A parser for again/vary/upscale that turns a stray option into a UsageError."""

    def parse(rest: str, limits: LimitSettings, prefix: str) -> Parsed:
        try:
            return parse_rest(rest)
        except ValueError as exc:
            return UsageError(reason(exc) + ".")

    return parse


def _parse_again(rest: str) -> Again | None:
    enhance, words = _enhance_and(rest, "again")
    return None if words else Again(enhance)


def _parse_vary(rest: str) -> Vary | UsageError | None:
    enhance, words = _enhance_and(rest, "vary")
    if not words:
        return Vary(None, enhance)
    if len(words) > 1 or not _is_number(words[0]):
        return None
    try:
        return Vary(number_in("vary", float, MIN_STRENGTH, 1.0)(words[0]), enhance)
    except ValueError as exc:
        return UsageError(
            reason(exc)
            + rich(": how much of the picture is painted over (default {s:g}).", s=VARY_STRENGTH)
        )


def _parse_upscale(rest: str) -> Upscale | UsageError | None:
    enhance, words = _enhance_and(rest, "upscale")
    if not words:
        return Upscale(4, enhance)
    factor = words[0].lower().rstrip("x×")
    if len(words) > 1 or not factor.isdigit():
        return None
    if int(factor) not in UPSCALE_FACTORS:
        return UsageError(rich("`upscale` by 2, 4 or 8, not {typed}.", typed=words[0]))
    return Upscale(int(factor), enhance)


# What an edit may say besides its instruction: an edit keeps the picture's size and uses
# the editing model, so --size, --ar, --model, --style and --strength are not among them.
EDIT_FIELDS = ("seed", "steps", "guidance", "negative_prompt", "count", "enhance", "fast")
_OPTION_OF = {
    **{opt.field: opt.name for opt in OPTIONS.values()},
    "width": "size",
    "height": "size",
}


def _parse_edit(rest: str, limits: LimitSettings, prefix: str) -> Edit | UsageError:
    words = rest.split()
    before = next((i for i, w in enumerate(words) if option_name(w)), len(words))
    if not visible(" ".join(words[:before])):
        return UsageError(
            rich(
                "`edit` needs what to change, before any options: reply to a picture with "
                "`{prefix} edit <what to change>`, e.g. `{prefix} edit make it night`.",
                prefix=prefix,
            )
        )
    parsed = prompt_and_options(rest, limits, prefix)
    if isinstance(parsed, UsageError):
        return parsed
    instruction, values = parsed
    refused = sorted({_OPTION_OF[field] for field in values if field not in EDIT_FIELDS})
    if refused:
        allowed = [code(f"--{_OPTION_OF[field]}") for field in EDIT_FIELDS]
        return UsageError(
            rich(
                "`edit` takes {some} and {last} after what to change; not `--{refused}`.",
                some=RichText((", ",)).join(allowed[:-1]),
                last=allowed[-1],
                refused=refused[0],
            )
        )
    return Edit(instruction, **values)  # type: ignore[arg-type]


# ---- room and personal defaults --------------------------------------------------------------

Check = Callable[[LimitSettings], Callable[[str], Any]]

# What `room set KEY VALUE` accepts; the checks that need only the limits run here.
ROOM_KEYS: dict[str, Check] = {
    "style": lambda lim: str,
    "size": lambda lim: size_within("size", lim),
    "steps": lambda lim: number_in("steps", int, 1, lim.max_steps),
    "guidance": lambda lim: number_in("guidance", float, 0.0, 30.0),
    "negative": text_within("negative"),
    "model": lambda lim: str,
    "enhance": lambda lim: on_off("enhance"),
    # The reaction buttons under the bot's pictures; kept and checked before anything
    # places them, so that a room can turn them off from the start.
    "buttons": lambda lim: on_off("buttons"),
    "nsfw": lambda lim: _stricter_safety,
}


def _stricter_safety(text: str) -> str:
    # A room may make the safety check stricter than the config, never turn it off.
    word = text.strip().lower()
    if word not in ("blur", "block"):
        raise ValueError(
            rich(
                "`nsfw` is `blur` or `block`, not {text!r}: a room can make the safety "
                "check stricter, never looser (`room reset nsfw` clears it)",
                text=text,
            )
        )
    return word


def _size_or_ratio(limits: LimitSettings) -> Callable[[str], str]:
    """A person's size: a size (512x768), or a ratio as --ar takes it (16:9), which each
    model draws at its own size (their rooms may run different models). Kept as typed
    canonically: WxH or W:H, the colon telling them apart."""
    sized = size_within("size", limits)

    def convert(text: str) -> str:
        if any(mark in text for mark in ":/"):
            return "{}:{}".format(*parse_aspect(text))
        return "{}x{}".format(*sized(text))

    return convert


def _ratio(limits: LimitSettings) -> Callable[[str], str]:
    return lambda text: "{}:{}".format(*parse_aspect(text))


# What `me set KEY VALUE` accepts: the room's keys but nsfw (a person cannot change a room's
# safety policy, nor loosen the config's), with `ar` for a size that is a ratio.
PERSONAL_KEYS: dict[str, Check] = {
    key: _size_or_ratio if key == "size" else check
    for key, check in ROOM_KEYS.items()
    if key != "nsfw"
}
# `me set ar 16:9` is `me set size 16:9`: one key, so that a ratio replaces a size.
PERSONAL_ALIASES: dict[str, tuple[str, Check]] = {"ar": ("size", _ratio)}


@dataclass(frozen=True)
class DefaultsWords:
    """What `room` and `me` share: nothing shows the defaults, `set KEY VALUE` sets one
    (checked as far as the limits go), `reset [KEY]` clears one or all."""

    word: str  # room, me
    whose: str  # in "There is no room default 'colour'"
    keys: dict[str, Check]
    show: Command
    set: Callable[[str, str], Command]
    reset: Callable[[str | None], Command]
    aliases: dict[str, tuple[str, Check]] = field(default_factory=dict)

    @property
    def listed(self) -> str:
        """The keys as help names them: `size (or ar)` for an alias."""
        also = {key: alias for alias, (key, _) in self.aliases.items()}
        return ", ".join(f"{key} (or {also[key]})" if key in also else key for key in self.keys)

    @property
    def usage(self) -> RichText:
        return rich(
            "Write `{word} set KEY VALUE` with KEY one of {listed}, or `{word} reset [KEY]`.",
            word=self.word,
            listed=self.listed,
        )

    def key_of(self, typed: str) -> str | None:
        typed = typed.lower()
        if typed in self.aliases:
            return self.aliases[typed][0]
        return typed if typed in self.keys else None

    def parse(self, rest: str, limits: LimitSettings, prefix: str) -> Parsed:
        words = rest.split()
        if not words:
            return self.show
        verb = words[0].lower()
        if verb == "reset":
            if len(words) == 1:
                return self.reset(None)
            key = self.key_of(words[1])
            if len(words) > 2 or key is None:
                return UsageError(
                    rich(
                        "`{word} reset` takes nothing or one of {listed}.",
                        word=self.word,
                        listed=self.listed,
                    )
                )
            return self.reset(key)
        if verb != "set":
            return None
        if len(words) < 3:
            return UsageError(
                rich("`{word} set` needs a key and a value. ", word=self.word) + self.usage
            )
        typed, value = words[1].lower(), " ".join(words[2:])
        key = self.key_of(typed)
        if key is None:
            return UsageError(
                rich("There is no {whose} {typed!r}. ", whose=self.whose, typed=typed) + self.usage
            )
        if len(value) > limits.max_prompt_chars:
            return UsageError(
                rich("That value is too long; the limit is {n:,}.", n=limits.max_prompt_chars)
            )
        try:
            if typed in self.aliases:
                value = self.aliases[typed][1](limits)(value)
            else:
                self.keys[key](limits)(value)
        except ValueError as exc:
            return UsageError(reason(exc) + ".")
        return self.set(key, value)


ROOM = DefaultsWords("room", "room default", ROOM_KEYS, RoomShow(), RoomSet, RoomReset)
PERSONAL = DefaultsWords(
    "me", "personal default", PERSONAL_KEYS, MeShow(), MeSet, MeReset, PERSONAL_ALIASES
)


# ---- the usage report ------------------------------------------------------------------------

_PERIODS = f"a period (30m, 24h, 7d, 4w: up to {MAX_SPAN} minutes, hours, days or weeks; or all)"


def _parse_usage(rest: str, limits: LimitSettings, prefix: str) -> Parsed:
    span, user = "7d", None
    for word in rest.split():
        if word.startswith("@") and user is None:
            user = word  # @bob without a server is completed with the bot's (replies.usage)
            continue
        try:
            parse_since(word)
        except ValueError:
            number, unit = word[:-1], word[-1:].lower()
            if number.isdigit() and unit in ("m", "h", "d", "w"):
                return UsageError(
                    rich(
                        "`usage` (bot admins) takes " + _PERIODS + "; {typed} is longer than that.",
                        typed=shorten(word, 24),
                    )
                )
            return None
        span = word.lower()
    return Usage(span, user)


# ---- help -----------------------------------------------------------------------------------

# What `help TOPIC` tells more of (bot.chat.language.help).
HELP_TOPICS = ("options", "rooms", "admin")


def _parse_help(rest: str, limits: LimitSettings, prefix: str) -> Parsed:
    topic = rest.strip().lower()
    if not topic:
        return Help()
    return Help(topic) if topic in HELP_TOPICS else None


# ---- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubCommand:
    name: str
    parse: Callable[[str, LimitSettings, str], Parsed]  # (what follows, limits, prefix)
    help: str
    takes: str = "nothing after it"  # for the notice about anything else
    who: str = ""  # who may use it, when not everyone
    needs_editing: bool = (
        False  # listed in help only when the bot can edit (bot.chat.language.editing)
    )


def _alone(command: Command) -> Callable[[str, LimitSettings, str], Parsed]:
    return lambda rest, limits, prefix: None if rest.strip() else command


_ON_MINE = "in reply to one of my pictures"
SUBCOMMANDS: dict[str, SubCommand] = {
    sub.name: sub
    for sub in (
        SubCommand(
            "again",
            _on_a_picture(_parse_again),
            f"{_ON_MINE}: the same again, with a new seed",
            takes=f"nothing but --enhance, {_ON_MINE}",
        ),
        SubCommand(
            "vary",
            _on_a_picture(_parse_vary),
            f"{_ON_MINE}: a variation of it "
            f"(`vary 0.3` changes less, `vary 0.8` more; default {VARY_STRENGTH:g})",
            takes=f"nothing, a strength from {MIN_STRENGTH:g} to 1 (e.g. `vary 0.3`) "
            f"or --enhance, {_ON_MINE}",
        ),
        SubCommand(
            "upscale",
            _on_a_picture(_parse_upscale),
            "in reply to any picture: 2, 4 or 8 times larger (default 4)",
            takes="nothing, a factor of 2, 4 or 8 (e.g. `upscale 2`) or --enhance, in "
            "reply to a picture",
        ),
        SubCommand(
            "edit",
            _parse_edit,
            "in reply to any picture: change it as you say, e.g. `edit make it night`",
            takes="what to change, then options",
            needs_editing=True,
        ),
        SubCommand(
            "info",
            _alone(Info()),
            f"{_ON_MINE}: how it was made, and the command that makes it again",
            takes=f"nothing after it, {_ON_MINE}",
        ),
        SubCommand(
            "help",
            _parse_help,
            "a short help; `help options`, `help rooms` and `help admin` tell more",
            takes="nothing, or one of the topics " + ", ".join(f"`{t}`" for t in HELP_TOPICS),
        ),
        SubCommand("styles", _alone(Styles()), "the style presets"),
        SubCommand("models", _alone(Models()), "the models to choose from with --model"),
        SubCommand(
            "queue",
            _alone(QueueStatus()),
            "how many jobs are waiting, which are yours, and the wait",
        ),
        SubCommand(
            "cancel",
            _alone(Cancel()),
            "cancel all your queued jobs (or redact the command)",
            takes="nothing after it: it cancels all your queued jobs",
        ),
        SubCommand(
            "room",
            ROOM.parse,
            "this room's defaults; `room set KEY VALUE` with KEY "
            "one of " + ROOM.listed + ", `room reset [KEY]`",
            takes="nothing (to show this room's defaults), `set KEY VALUE` or "
            "`reset [KEY]`, with KEY one of " + ROOM.listed,
            who="moderators set and reset",
        ),
        SubCommand(
            "me",
            PERSONAL.parse,
            "your own defaults, in every room and DM; `me set KEY VALUE` with KEY one of "
            + PERSONAL.listed
            + ", `me reset [KEY]` (a room's own defaults come first)",
            takes="nothing (to show your defaults), `set KEY VALUE` or `reset [KEY]`, "
            "with KEY one of " + PERSONAL.listed,
        ),
        SubCommand(
            "usage",
            _parse_usage,
            "usage report: `usage [7d|30d|all] [@user]`",
            takes=f"nothing, {_PERIODS}, an @user, or both",
            who="bot admins",
        ),
        SubCommand(
            "pause", _alone(Pause()), "hold the queue (commands still queue)", who="bot admins"
        ),
        SubCommand("resume", _alone(Resume()), "let the queue run again", who="bot admins"),
    )
}


def not_taken(sub: SubCommand, after: str, prefix: str) -> UsageError:
    """The one notice for what a sub-command does not take, and how to start a prompt
    with its word instead: in quotes (`!img "cancel" culture` draws "cancel culture")."""
    who = f" ({sub.who})" if sub.who else ""
    # `takes` is the table's own text, with its code spans; what was typed is a value.
    text = rich(
        "`{name}`{who} takes " + sub.takes + "; not {after!r}.",
        name=sub.name,
        who=who,
        after=shorten(after, 40),
    )
    words = after.split()
    if words and not option_name(words[0]) and not words[0].startswith("@"):
        text += rich(
            " To draw a prompt that starts with the word {name}, put the word in quotes: "
            '`{prefix} "{name}" {after}`.',
            name=sub.name,
            prefix=prefix,
            after=shorten(after, 40),
        )
    return UsageError(text)
