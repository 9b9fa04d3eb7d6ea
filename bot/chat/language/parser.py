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
from bot.chat.language.prompts import parse_generate
from bot.chat.language.subcommands import SUBCOMMANDS, not_taken
from bot.config import LimitSettings

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
