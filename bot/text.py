"""Wording shared by the bot's replies and reports: counts, and text cut to a length."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """'1 picture', '3 pictures' (regular English plurals only)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def shorten(text: str, length: int) -> str:
    """At most `length` characters, the last one an ellipsis when something was cut."""
    return text if len(text) <= length else text[:length - 1] + "…"
