"""The admins' usage report for chat: tables as HTML with a plain-text fallback, and a chart.

Pure functions over the rows of `usage.query`; sending them is the caller's business.
"""

from __future__ import annotations

import html
import io
import math
import time
import unicodedata
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from bot.store import usage
from bot.store.usage import JobStatus
from bot.text import plural, shorten

MAX_TABLE_ROWS = 15
MAX_LABEL = 60  # characters of a user ID or room name in a table cell


# ---- the text report ------------------------------------------------------------------------


def usage_report(
    rows: list[dict[str, Any]],
    *,
    span_label: str,
    user: str | None,
    now: float,
    room_names: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """(plain text, HTML for an org.matrix.custom.html formatted_body) summing up `rows`.

    span_label reads after "Usage": "in the last 7 days", "over all time". `user` is the
    user the rows were filtered to, if any (then the table per user is left out: it would
    be one line). room_names maps room IDs to display names for the table per room.
    Every ID and name is escaped: they are chosen by whoever made the account or room.
    """
    heading = f"Usage {span_label}" + (f" for {_clean(user)}" if user else "")
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(now))
    plain = [f"{heading} (as of {stamp})"]
    markup = [f"<p><b>{_esc(heading)}</b> (as of {stamp})<br>"]
    if not rows:
        plain.append("No jobs.")
        markup.append("No jobs.</p>")
        return "\n".join(plain), "".join(markup)
    total = usage.totals("", rows)
    line = (
        f"{plural(total.jobs, 'job')}, {plural(total.pictures, 'picture')}, "
        f"{plural(total.users, 'user')}, {plural(total.rooms, 'room')}, "
        f"{total.gpu_seconds:.1f} GPU seconds, {total.failed} failed, "
        f"{total.rejected} rejected"
    )
    plain.append(line)
    markup.append(f"{_esc(line)}</p>")
    tables = [] if user else [_user_table(rows)]
    tables.append(_room_table(rows, room_names or {}))
    for header, cells, more, noun in tables:
        plain += ["", *_plain_table(header, cells)]
        markup.append(_html_table(header, cells))
        if more:
            plain.append(f"… and {more} more {noun}")
            markup.append(f"<p><em>… and {more} more {noun}</em></p>")
    return "\n".join(plain), "".join(markup)


_Table = tuple[tuple[str, ...], list[tuple[str, ...]], int, str]  # header, cells, more, noun


def _user_table(rows: list[dict[str, Any]]) -> _Table:
    groups = usage.group(rows, "user")
    cells = [
        (_clean(g.key), str(g.pictures), str(g.jobs), str(g.failed), f"{g.gpu_seconds:.1f}")
        for g in groups[:MAX_TABLE_ROWS]
    ]
    return (
        ("user", "pictures", "jobs", "failed", "GPU s"),
        cells,
        len(groups) - len(cells),
        "users",
    )


def _room_table(rows: list[dict[str, Any]], room_names: Mapping[str, str]) -> _Table:
    groups = usage.group(rows, "room")
    cells = [
        (
            _clean(room_names.get(g.key) or g.key or "(no room)"),
            str(g.pictures),
            str(g.users),
            str(g.failed),
            f"{g.gpu_seconds:.1f}",
        )
        for g in groups[:MAX_TABLE_ROWS]
    ]
    return (
        ("room", "pictures", "users", "failed", "GPU s"),
        cells,
        len(groups) - len(cells),
        "rooms",
    )


def _plain_table(header: tuple[str, ...], cells: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        # The name on the left, the numbers right-aligned so their digits line up.
        return "  ".join(
            [row[0].ljust(widths[0])]
            + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        )

    return [line(header)] + [line(row) for row in cells]


def _html_table(header: tuple[str, ...], cells: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _clean(text: str) -> str:
    """One line of at most MAX_LABEL characters: no newlines, controls or direction overrides
    from an untrusted name can break the plain-text table or disguise what it says."""
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    text = " ".join(text.split())
    return shorten(text, MAX_LABEL)


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


# ---- the chart ------------------------------------------------------------------------------

WIDTH, HEIGHT = 640, 240
MAX_BARS = 90  # beyond this a bar a day gets too thin to see, so a bar holds a week or more
BACKGROUND = (255, 255, 255)
BAR_COLOUR = (66, 110, 180)
AXIS_COLOUR = (150, 150, 150)
TEXT_COLOUR = (40, 40, 40)
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, WIDTH - 16, 32, HEIGHT - 26  # the plot area


def pictures_per_day_chart(rows: list[dict[str, Any]], *, days: int | None, now: float) -> bytes:
    """A PNG bar chart of the pictures delivered per local calendar day, ending today.

    It covers the last `days` days, today included, or with days=None from the first row's
    day. Days without pictures are bars of height 0. Over MAX_BARS days, each bar sums a
    week (or as many whole weeks as keep the bars at most MAX_BARS), and the title says so:
    every picture stays on the chart. The same rows and `now` give the same bytes.
    """
    if days is not None and days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    today = date.fromtimestamp(now)
    if days is None:
        first = min((date.fromtimestamp(r["created_at"]) for r in rows), default=today)
        days = (today - first).days + 1
    per_bar = 1 if days <= MAX_BARS else 7 * math.ceil(days / (7 * MAX_BARS))
    bars = math.ceil(days / per_bar)
    start = today - timedelta(days=bars * per_bar - 1)
    counts = [0] * bars
    for row in rows:
        offset = (date.fromtimestamp(row["created_at"]) - start).days
        if row["status"] == JobStatus.OK and 0 <= offset <= (today - start).days:
            counts[offset // per_bar] += row["images"]
    unit = {1: "day", 7: "week"}.get(per_bar, f"{per_bar} days")
    title = f"Pictures per {unit}, {start} to {today}: {sum(counts)} in all"
    return _draw(counts, title, str(start), str(today))


def _draw(counts: list[int], title: str, first: str, last: str) -> bytes:
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    draw.text((_LEFT, 8), title, fill=TEXT_COLOUR, font=font)
    peak = max(counts)
    for label, y in ((str(peak), _TOP), ("0", _BOTTOM - 12)):
        draw.text(
            (_LEFT - 6 - draw.textlength(label, font=font), y), label, fill=TEXT_COLOUR, font=font
        )
    draw.text((_LEFT, _BOTTOM + 6), first, fill=TEXT_COLOUR, font=font)
    draw.text(
        (_RIGHT - draw.textlength(last, font=font), _BOTTOM + 6), last, fill=TEXT_COLOUR, font=font
    )
    draw.line([(_LEFT, _TOP), (_LEFT, _BOTTOM), (_RIGHT, _BOTTOM)], fill=AXIS_COLOUR)
    slot = (_RIGHT - _LEFT) / len(counts)
    width = min(slot - 2, 48)  # a gap between bars; a week's seven bars are not one slab
    for i, count in enumerate(counts):
        if count:
            # At least a pixel high: a day with pictures never looks like one without.
            height = max(1, round((_BOTTOM - 1 - _TOP) * count / peak))
            middle = _LEFT + 1 + (i + 0.5) * slot
            draw.rectangle(
                [
                    round(middle - width / 2),
                    _BOTTOM - height,
                    round(middle + width / 2) - 1,
                    _BOTTOM - 1,
                ],
                fill=BAR_COLOUR,
            )
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
