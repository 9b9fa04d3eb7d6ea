"""The `--options` of a generate command: one declarative table, and the sizes of `--ar`.

Each option turns its text into a value or raises ValueError with a message that names the
option and what is allowed. Limits come from the config's `limits:`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from bot.config import LimitSettings, parse_size
from bot.chat.language.rich import rich
from bot.chat.language.styles import normalise

MAX_SEED = 2**32 - 1
# Image-to-image: below 0.05 a few-step model would not change the picture at all.
MIN_STRENGTH = 0.05
DEFAULT_STRENGTH = 0.6  # `!img <prompt>` in a reply to a picture
VARY_STRENGTH = 0.5  # `!img vary`
# The aspect ratios people are shown; any ratio between the extremes is accepted.
LANDSCAPE_RATIOS = ("1:1", "4:3", "3:2", "16:9", "21:9")
ASPECT_RATIOS = LANDSCAPE_RATIOS + ("3:4", "2:3", "9:16", "9:21")
MAX_ASPECT = 21 / 9
ASPECT_MULTIPLE = 64
_ASPECT_RE = re.compile(r"^(\d{1,3})\s*[:/x×]\s*(\d{1,3})$")


def number_in(name: str, cast: type, low: float, high: float) -> Callable[[str], float]:
    kind = "a whole number" if cast is int else "a number"
    shown = f"from {low:g} to {high:g}" if cast is float else f"from {low} to {high}"

    def convert(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise ValueError(
                rich(
                    "`{name}` takes {kind} {shown}, not {text!r}",
                    name=name,
                    kind=kind,
                    shown=shown,
                    text=text,
                )
            ) from None
        if not low <= value <= high:  # also false for nan
            raise ValueError(
                rich("`{name}` must be {shown}, not {text}", name=name, shown=shown, text=text)
            )
        return value

    return convert


def on_off(name: str) -> Callable[[str], bool]:
    def convert(text: str) -> bool:
        word = text.strip().lower()
        if word not in ("on", "off"):
            raise ValueError(rich("`{name}` is `on` or `off`, not {text!r}", name=name, text=text))
        return word == "on"

    return convert


def square_side(pixels: int) -> int:
    return int(pixels**0.5) // 8 * 8


def size_limit(max_pixels: int) -> str:
    """`limits.max_pixels` as people read a size: "1536×1536 or …", not a pixel count."""
    side = square_side(max_pixels)
    if side * side == max_pixels:
        return f"{side}×{side} or as many pixels in another shape"
    return f"about {side}×{side} ({max_pixels:,} pixels, in any shape)"


def size_within(name: str, limits: LimitSettings) -> Callable[[str], tuple[int, int]]:
    def convert(text: str) -> tuple[int, int]:
        try:
            width, height = parse_size(text)
        except ValueError as exc:
            # parse_size's words quote what was typed: literal text.
            raise ValueError(rich("`{name}` {problem}", name=name, problem=str(exc))) from None
        if width * height > limits.max_pixels:
            side = square_side(limits.max_pixels)
            raise ValueError(
                rich(
                    "`{name}` {width}x{height} is too large: at most {pixels:,} pixels "
                    "(e.g. `{name} {side}x{side}`)",
                    name=name,
                    width=width,
                    height=height,
                    pixels=limits.max_pixels,
                    side=side,
                )
            )
        return width, height

    return convert


def parse_aspect(text: str) -> tuple[int, int]:
    """'16:9' -> (16, 9); a ValueError names what is allowed."""
    match = _ASPECT_RE.match(text.strip())
    allowed = ", ".join(ASPECT_RATIOS)
    if not match or not int(match[1]) or not int(match[2]):
        raise ValueError(
            rich(
                "`--ar` takes a ratio W:H such as {allowed}; not {text!r}",
                allowed=allowed,
                text=text,
            )
        )
    width, height = int(match[1]), int(match[2])
    if max(width / height, height / width) > MAX_ASPECT + 1e-9:
        raise ValueError(
            rich(
                "`--ar {width}:{height}` is too narrow; the widest is 21:9 (or 9:21). "
                "Ratios: {allowed}",
                width=width,
                height=height,
                allowed=allowed,
            )
        )
    return width, height


def size_for_aspect(aspect: tuple[int, int], pixels: int, max_pixels: int) -> tuple[int, int]:
    """The size of this aspect ratio nearest `pixels` (the model's native pixel count), in
    multiples of 64, the way SDXL's training buckets are: 16:9 at 1024² gives 1344x768.

    Never over `max_pixels`; a ValueError when no size in multiples of 64 both fits and
    keeps the ratio within 25 %."""
    ratio = aspect[0] / aspect[1]
    target: float = min(pixels, max_pixels)
    while target >= ASPECT_MULTIPLE**2:
        width = max(
            ASPECT_MULTIPLE, round(math.sqrt(target * ratio) / ASPECT_MULTIPLE) * ASPECT_MULTIPLE
        )
        height = max(
            ASPECT_MULTIPLE, round(math.sqrt(target / ratio) / ASPECT_MULTIPLE) * ASPECT_MULTIPLE
        )
        if width * height <= max_pixels:
            if abs(width / height / ratio - 1) > 0.25:
                break
            return width, height
        target *= 0.9  # rounding went over the limit: aim a little lower
    raise ValueError(
        rich(
            "`--ar {w}:{h}` has no size within the limit of {pixels:,} pixels; use `--size`",
            w=aspect[0],
            h=aspect[1],
            pixels=max_pixels,
        )
    )


@dataclass(frozen=True)
class Option:
    name: str
    field: str
    takes: str  # how the value is shown in help
    convert: Callable[[LimitSettings], Callable[[str], object]]
    rest: bool = False  # takes all words up to the next option (for text values)
    help: str = ""
    aliases: tuple[str, ...] = ()
    flag: bool = False  # takes no value: its presence means True


def text_within(name: str) -> Callable[[LimitSettings], Callable[[str], str]]:
    def bounded(limits: LimitSettings) -> Callable[[str], str]:
        def convert(text: str) -> str:
            if len(text) > limits.max_prompt_chars:
                raise ValueError(
                    rich(
                        "`{name}` is {length:,} characters long; the limit is {limit:,}",
                        name=name,
                        length=len(text),
                        limit=limits.max_prompt_chars,
                    )
                )
            return text

        return convert

    return bounded


OPTIONS: dict[str, Option] = {
    opt.name: opt
    for opt in (
        Option(
            "seed",
            "seed",
            "N",
            lambda lim: number_in("--seed", int, 0, MAX_SEED),
            help="the same seed and prompt give the same picture",
        ),
        Option(
            "steps",
            "steps",
            "N",
            lambda lim: number_in("--steps", int, 1, lim.max_steps),
            help="denoising steps",
        ),
        Option(
            "size",
            "size",
            "WxH",
            lambda lim: size_within("--size", lim),
            help="picture size in pixels, multiples of 8",
        ),
        Option(
            "ar",
            "aspect",
            "W:H",
            lambda lim: parse_aspect,
            aliases=("aspect",),
            help="aspect ratio (" + ", ".join(LANDSCAPE_RATIOS) + " and portrait "
            "twins like 9:16), sized for the model",
        ),
        Option(
            "n",
            "count",
            "N",
            lambda lim: number_in("--n", int, 1, lim.max_images),
            help="several pictures (seeds S, S+1, …) and a contact sheet",
        ),
        Option(
            "style",
            "style",
            "NAME",
            lambda lim: normalise,
            rest=True,
            help="a style preset (`styles` lists them; `none` for no style)",
        ),
        Option(
            "guidance",
            "guidance",
            "X",
            lambda lim: number_in("--guidance", float, 0.0, 30.0),
            help="how closely to follow the prompt (0 for few-step models)",
        ),
        Option(
            "no",
            "negative_prompt",
            "TEXT",
            text_within("--no"),
            rest=True,
            help="what the picture should not show (needs `--guidance` above 1)",
        ),
        Option(
            "model",
            "model",
            "NAME",
            lambda lim: str.strip,
            help="one of the configured models (`models` lists them)",
        ),
        Option(
            "strength",
            "strength",
            "X",
            lambda lim: number_in("--strength", float, MIN_STRENGTH, 1.0),
            help="in a reply to a picture: how much of it is painted over, "
            f"{MIN_STRENGTH:g} to 1 (default {DEFAULT_STRENGTH:g})",
        ),
        Option(
            "enhance",
            "enhance",
            "",
            lambda lim: bool,
            flag=True,
            help="automatic contrast and sharpness on the result",
        ),
        Option(
            "fast",
            "fast",
            "",
            lambda lim: bool,
            flag=True,
            help="decode with the tiny decoder (quicker, a little softer; when the bot has one)",
        ),
    )
}
BY_SPELLING: dict[str, Option] = {
    spelling: opt for opt in OPTIONS.values() for spelling in (opt.name, *opt.aliases)
}

# Phones turn "--" into a dash; accept what people actually send.
_OPTION_RE = re.compile(r"^(?:--|—|–)([a-z][a-z-]*)(?:=(.*))?$", re.IGNORECASE)


def option_name(word: str) -> tuple[str, str | None] | None:
    match = _OPTION_RE.match(word)
    return (match[1].lower(), match[2]) if match else None


def parse_options(words: list[str], limits: LimitSettings) -> dict[str, object]:
    """The values of `--name value` words; raises ValueError with a message for a person."""
    values: dict[str, object] = {}
    i = 0
    while i < len(words):
        spelled = option_name(words[i])
        if spelled is None:
            raise ValueError(
                rich(
                    "{word!r} follows an option's value: write the whole prompt first, "
                    "then the options",
                    word=words[i],
                )
            )
        name, inline = spelled
        option = BY_SPELLING.get(name)
        if option is None:
            raise ValueError(
                rich(
                    "Unknown option {name}. Options are: {options} (`help options` says "
                    "what each does)",
                    name="--" + name,
                    options=", ".join(f"--{o}" for o in OPTIONS),
                )
            )
        if option.field in values:
            raise ValueError(rich("`--{name}` is given twice", name=option.name))
        i += 1
        if option.flag:
            if inline is not None:
                raise ValueError(rich("`--{name}` takes no value", name=option.name))
            values[option.field] = True
            continue
        if inline is not None:
            raw = inline
        else:
            end = i
            while end < len(words) and not option_name(words[end]):
                end += 1
                if not option.rest:
                    break
            raw = " ".join(words[i:end])
            i = end
        if not raw:
            raise ValueError(
                rich("`--{name}` needs a value ({takes})", name=option.name, takes=option.takes)
            )
        values[option.field] = option.convert(limits)(raw)
    if "size" in values and "aspect" in values:
        raise ValueError(rich("give `--size` or `--ar`, not both"))
    return values
