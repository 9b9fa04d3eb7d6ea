"""Parsing chat commands: pure functions from text to a command or a usage error.

No I/O here. `parse` is the one entry point; handlers receive what it returns. Sub-commands
(in `subcommands.py`) and options (in `options.py`) are declarative tables, so adding one is
adding a row.

The first word after the prefix decides: a sub-command's word is that sub-command, and what
it does not take gets one notice, never a picture of the words. A prompt that starts with
such a word puts the word in quotes: `!img "cancel" culture` draws "cancel culture".
"""

from __future__ import annotations

import re

from bot.chat.language.commands import Command, Help, UsageError
from bot.chat.language.options import OPTIONS, size_limit
from bot.chat.language.prompts import parse_generate
from bot.chat.language.subcommands import SUBCOMMANDS, not_taken
from bot.config import LimitSettings, QuotaSettings

# Straight and typographic quotes (phones type “ ” and ‘ ’); a trailing .,!?:; is not part
# of the word, so that `!img help?` is help.
_QUOTES = "\"'“”„‘’«»"
_FIRST_WORD = re.compile(rf"^([{_QUOTES}]?)([a-z]+)([{_QUOTES}]?)([.,!?:;]*)$", re.IGNORECASE)


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
    rest = text[len(prefix) :].strip()
    if not rest:
        return Help()
    first, *after = rest.split(None, 1)
    after_text = after[0].strip() if after else ""
    word = _FIRST_WORD.match(first)
    sub = SUBCOMMANDS.get(word[2].lower()) if word else None
    if sub is not None and word is not None:
        opened, closed = bool(word[1]), bool(word[3])
        if not opened and not closed:
            command = sub.parse(after_text, limits, prefix)
            return not_taken(sub, after_text, prefix) if command is None else command
        if opened and closed:  # `"cancel" culture`: the word, unquoted, starts a prompt
            rest = f"{word[2]}{word[4]} {after_text}".strip()
    return parse_generate(rest, limits, prefix)


def help_text(
    prefix: str,
    limits: LimitSettings,
    quotas: QuotaSettings | None = None,
    defaults: str = "",
    editing: bool = False,
) -> str:
    """The help; `edit` is in it only when the bot can edit (bot.chat.language.editing.available)."""
    lines = [
        f"{prefix} <prompt> [options] — make a picture, e.g. `{prefix} Albert Einstein, "
        "oil painting --seed 42`",
        "Options, after the prompt, in any order:",
    ]
    for opt in OPTIONS.values():
        lines.append(f"  --{opt.name}{' ' + opt.takes if opt.takes else ''} — {opt.help}")
    lines.append("Commands:")
    for sub in SUBCOMMANDS.values():
        if sub.needs_editing and not editing:
            continue
        who = f" ({sub.who})" if sub.who else ""
        lines.append(f"  {prefix} {sub.name} — {sub.help}{who}")
    if defaults:  # the room's and the bot's (bot.chat.language.rooms.in_effect)
        lines.append(defaults)
    lines.append(
        f"Limits: prompt up to {limits.max_prompt_chars:,} characters, up to "
        f"{limits.max_steps} steps, pictures up to {size_limit(limits.max_pixels)}, up to "
        f"{limits.max_images} pictures at once, {limits.per_user_queued} queued jobs per person."
    )
    per = (
        [
            f"{n} per {span}"
            for n, span in ((quotas.pictures_per_hour, "hour"), (quotas.pictures_per_day, "day"))
            if n is not None
        ]
        if quotas
        else []
    )
    if per:
        lines.append(f"Quota: {' and '.join(per)} pictures per person.")
    lines.append(
        f"Reply to any picture with `{prefix} <prompt>` to paint it over "
        "(image-to-image; --strength sets how much)."
    )
    lines.append(
        f"A command's word starts a prompt when it is in quotes: "
        f'`{prefix} "cancel" culture, oil painting`.'
    )
    lines.append(
        "A job that waits or takes a while gets one status notice, edited as it "
        "goes (its place, then its steps and the time left); a quick one shows the "
        "bot typing."
    )
    lines.append(
        "Redacting a command that is still queued cancels it. A command in a thread "
        "is answered in the thread."
    )
    return "\n".join(lines)
