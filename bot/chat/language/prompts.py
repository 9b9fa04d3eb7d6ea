"""A prompt and its `--options`: where the prompt ends, whether it shows anything, and the
Generate command they make. Pure, like the rest of the parser."""

from __future__ import annotations

import unicodedata

from bot.chat.language.commands import Generate, UsageError
from bot.chat.language.options import parse_options, option_name
from bot.chat.language.rich import RichText, reason, rich
from bot.config import LimitSettings

# Characters that draw nothing: spaces and separators, format and control characters
# (U+202E RIGHT-TO-LEFT OVERRIDE, zero-width spaces, …) and combining marks, which show
# only on a visible character before them.
_INVISIBLE_CATEGORIES = ("Cf", "Cc", "Zs", "Zl", "Zp")
# Letters and symbols that are blank all the same (Hangul fillers, the blank braille cell).
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def visible(text: str) -> bool:
    """Whether the text shows at least one character; a prompt that does not is empty."""
    return any(
        ch not in _BLANK
        and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES
        and not unicodedata.category(ch).startswith("M")
        for ch in text
    )


def empty_prompt(prefix: str) -> UsageError:
    return UsageError(
        rich(
            "The prompt is empty: write what to draw before any `--options`, "
            "e.g. `{prefix} a lighthouse at dawn --seed 7`.",
            prefix=prefix,
        )
    )


def _no_name(word: str) -> RichText:
    return rich(
        "{word!r} is not an option: write the prompt first, then options, each `--` and "
        "its name, e.g. `--seed 7`",
        word=word,
    )


def prompt_and_options(
    text: str, limits: LimitSettings, prefix: str = "!img"
) -> tuple[str, dict[str, object]] | UsageError:
    """The prompt (the words before the first option) and the options' values."""
    words = text.split()
    first_option = next((i for i, w in enumerate(words) if option_name(w)), len(words))
    # `--` with no name: at the start the prompt would begin with it, at the end it marks
    # an option left out; between words it is a dash in the text ("a cat -- asleep").
    if words and words[0].startswith("--") and not option_name(words[0]):
        return UsageError(_no_name(words[0]) + ".")
    if words and words[-1] == "--":
        return UsageError(_no_name("--") + ".")
    prompt = " ".join(words[:first_option])
    if not visible(prompt):
        return empty_prompt(prefix)
    if len(prompt) > limits.max_prompt_chars:
        return UsageError(
            rich(
                "The prompt is {length:,} characters long; **the limit is {limit:,}**.",
                length=len(prompt),
                limit=limits.max_prompt_chars,
            )
        )
    try:
        values = parse_options(words[first_option:], limits)
    except ValueError as exc:
        return UsageError(reason(exc) + ".")
    if "size" in values:
        values["width"], values["height"] = values.pop("size")  # type: ignore[misc]
    return prompt, values


def parse_generate(text: str, limits: LimitSettings, prefix: str = "!img") -> Generate | UsageError:
    """`<prompt> [options]`, the text after the prefix."""
    parsed = prompt_and_options(text, limits, prefix)
    if isinstance(parsed, UsageError):
        return parsed
    prompt, values = parsed
    return Generate(prompt=prompt, **values)  # type: ignore[arg-type]
