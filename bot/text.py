"""Wording shared by the bot's replies and reports: counts, text cut to a length, and spans
of time as people write them ("7d")."""

from __future__ import annotations

import re
import time


def plural(count: int, noun: str) -> str:
    """'1 picture', '3 pictures' (regular English plurals only)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def shorten(text: str, length: int) -> str:
    """At most `length` characters, the last one an ellipsis when something was cut."""
    return text if len(text) <= length else text[: length - 1] + "…"


# Five digits at most: 99999w is already longer than any usage log, and a longer number
# would overflow the date arithmetic.
MAX_SPAN = 99_999
_SPAN_RE = re.compile(rf"^(\d{{1,{len(str(MAX_SPAN))}}})([mhdw])$")
_SPAN_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float | None:
    """'7d' -> the unix time 7 days ago; 'all' -> None. Raises ValueError otherwise."""
    text = text.strip().lower()
    if text == "all":
        return None
    match = _SPAN_RE.match(text)
    if not match:
        raise ValueError(f"{text!r}: write a span like 30m, 24h, 7d, 4w, or all")
    now = time.time() if now is None else now
    return now - int(match[1]) * _SPAN_SECONDS[match[2]]
