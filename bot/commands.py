"""Parsing chat commands: pure functions from text to a command or a usage error.

No I/O here. `parse` is the one entry point; handlers receive what it returns. Sub-commands
and options are declarative tables, so adding one is adding a row.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Callable

from generation.job import Job

from .config import GenerationSettings, LimitSettings, parse_size

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class UsageError:
    """What was wrong with a command, in words for the person who typed it."""

    message: str


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Generate:
    """`!img <prompt> [options]`; options left None take the room's or the bot's defaults."""

    prompt: str
    seed: int | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None


Command = Help | Generate


# ---- options ------------------------------------------------------------------------------

def _number_in(name: str, cast: type, low: float, high: float) -> Callable[[str], float]:
    kind = "a whole number" if cast is int else "a number"
    shown = f"from {low:g} to {high:g}" if cast is float else f"from {low} to {high}"

    def convert(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise ValueError(f"{name} takes {kind} {shown}, not {text!r}")
        if not low <= value <= high:  # also false for nan
            raise ValueError(f"{name} must be {shown}, not {text}")
        return value

    return convert


def _size(limits: LimitSettings) -> Callable[[str], tuple[int, int]]:
    def convert(text: str) -> tuple[int, int]:
        try:
            width, height = parse_size(text)
        except ValueError as exc:
            raise ValueError(f"--size {exc}")
        if width * height > limits.max_pixels:
            raise ValueError(
                f"--size {width}x{height} is too large: at most {limits.max_pixels:,} pixels "
                f"(e.g. {_square_side(limits.max_pixels)}x{_square_side(limits.max_pixels)})"
            )
        return width, height

    return convert


def _square_side(pixels: int) -> int:
    return int(pixels**0.5) // 8 * 8


@dataclass(frozen=True)
class Option:
    name: str
    field: str
    takes: str  # how the value is shown in help
    convert: Callable[[LimitSettings], Callable[[str], object]]
    rest: bool = False  # takes all words up to the next option (for text values)
    help: str = ""


OPTIONS: dict[str, Option] = {
    opt.name: opt
    for opt in (
        Option("seed", "seed", "N", lambda lim: _number_in("--seed", int, 0, MAX_SEED),
               help="the same seed and prompt give the same picture"),
        Option("steps", "steps", "N", lambda lim: _number_in("--steps", int, 1, lim.max_steps),
               help="denoising steps"),
        Option("size", "size", "WxH", _size, help="picture size in pixels, multiples of 8"),
        Option("guidance", "guidance", "X", lambda lim: _number_in("--guidance", float, 0.0, 30.0),
               help="how closely to follow the prompt (0 for few-step models)"),
        Option("no", "negative_prompt", "TEXT", lambda lim: str, rest=True,
               help="what the picture should not show"),
    )
}

# Phones turn "--" into a dash; accept what people actually send.
_OPTION_RE = re.compile(r"^(?:--|—|–)([a-z][a-z-]*)(?:=(.*))?$", re.IGNORECASE)


def _option_name(word: str) -> tuple[str, str | None] | None:
    match = _OPTION_RE.match(word)
    return (match[1].lower(), match[2]) if match else None


def _parse_generate(text: str, limits: LimitSettings) -> Generate | UsageError:
    words = text.split()
    first_option = next((i for i, w in enumerate(words) if _option_name(w)), len(words))
    prompt = " ".join(words[:first_option])
    if not prompt:
        return UsageError("The prompt is empty: write what to draw before any --options, "
                          "e.g. `!img a lighthouse at dawn --seed 7`.")
    if len(prompt) > limits.max_prompt_chars:
        return UsageError(f"The prompt is {len(prompt):,} characters long; the limit is "
                          f"{limits.max_prompt_chars:,}.")
    values: dict[str, object] = {}
    i = first_option
    while i < len(words):
        spelled = _option_name(words[i])
        if spelled is None:
            return UsageError(f"{words[i]!r} follows an option's value: write the whole prompt "
                              "first, then the options.")
        name, inline = spelled
        option = OPTIONS.get(name)
        if option is None:
            return UsageError(f"Unknown option --{name}. Options are: "
                              + ", ".join(f"--{o}" for o in OPTIONS) + ".")
        if option.field in values:
            return UsageError(f"--{name} is given twice.")
        i += 1
        if inline is not None:
            raw = inline
        else:
            end = i
            while end < len(words) and not _option_name(words[end]):
                end += 1
                if not option.rest:
                    break
            raw = " ".join(words[i:end])
            i = end
        if not raw:
            return UsageError(f"--{name} needs a value ({option.takes}).")
        try:
            values[option.field] = option.convert(limits)(raw)
        except ValueError as exc:
            return UsageError(str(exc) + ".")
    if "size" in values:
        values["width"], values["height"] = values.pop("size")  # type: ignore[misc]
    return Generate(prompt=prompt, **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SubCommand:
    name: str
    parse: Callable[[str, LimitSettings], Command | UsageError]
    help: str
    # A sub-command without arguments is recognised only when it stands alone, so that
    # "!img help me draw a cat" is still a prompt.
    takes_args: bool = False


SUBCOMMANDS: dict[str, SubCommand] = {
    sub.name: sub
    for sub in (
        SubCommand("help", lambda rest, lim: Help(), "this help"),
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
        return sub.parse(after.strip(), limits)
    return _parse_generate(rest, limits)


def help_text(prefix: str, limits: LimitSettings) -> str:
    lines = [
        f"{prefix} <prompt> [options] — make a picture, e.g. `{prefix} Albert Einstein, "
        "oil painting --seed 42`",
        "Options:",
    ]
    for opt in OPTIONS.values():
        lines.append(f"  --{opt.name} {opt.takes} — {opt.help}")
    lines.append(
        f"Limits: prompt up to {limits.max_prompt_chars:,} characters, up to "
        f"{limits.max_steps} steps, up to {limits.max_pixels:,} pixels, "
        f"{limits.per_user_queued} queued jobs per person."
    )
    for sub in SUBCOMMANDS.values():
        lines.append(f"{prefix} {sub.name} — {sub.help}")
    return "\n".join(lines)


def resolve(command: Generate, defaults: GenerationSettings,
            random_seed: Callable[[int], int] = secrets.randbelow) -> Job:
    """The job a command asks for, with what it left open taken from the defaults."""
    width, height = defaults.width_height
    return Job(
        prompt=command.prompt,
        seed=command.seed if command.seed is not None else random_seed(MAX_SEED + 1),
        steps=command.steps if command.steps is not None else defaults.steps,
        width=command.width or width,
        height=command.height or height,
        guidance=command.guidance if command.guidance is not None else defaults.guidance,
        negative_prompt=command.negative_prompt or "",
    )
