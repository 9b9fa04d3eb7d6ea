"""The admins' usage report (`bot/report.py`): its HTML and plain text, and its chart.

Rows come from a real SQLite usage log; the chart is read back with Pillow.
"""

from __future__ import annotations

import io
import time
from html.parser import HTMLParser

import pytest
from PIL import Image

from bot.store import db as database
from bot.chat.replies import report
from bot.store import usage
from tests.store.test_usage_log import DAY, DB_NAME, add

# Local noon: a whole number of days back from it is still that many calendar days back,
# in any time zone, daylight saving or not.
NOON = time.mktime((2023, 11, 14, 12, 0, 0, 0, 0, -1))
ALLOWED_TAGS = {"table", "thead", "tbody", "tr", "th", "td", "b", "strong", "p", "br", "code", "em"}
HOSTILE_USER = '@<img src=x onerror="alert(1)">&amp;:evil.example'
HOSTILE_ROOM = "!evil:evil.example"
HOSTILE_NAME = "</td></table><script>alert('room')</script>\nline two"


@pytest.fixture
async def db(tmp_path):
    conn = await database.connect(tmp_path / DB_NAME)
    yield conn
    await conn.close()


async def fill(db) -> list[dict]:
    await add(db, created_at=NOON - 3 * DAY, images=2)
    await add(db, created_at=NOON - 2 * DAY, user="@bob:localhost", room="!room2:localhost")
    await add(db, created_at=NOON - DAY, images=4)
    await add(db, created_at=NOON - 60, status="error", images=0)
    await add(db, created_at=NOON - 30, user="@bob:localhost", status="rejected", images=0)
    return await usage.query(db)


class Tags(HTMLParser):
    def __init__(self, markup: str):
        super().__init__()
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        assert not attrs, f"<{tag}> has attributes {attrs}"
        self.tags.add(tag)

    def handle_data(self, data):
        self.text.append(data)


# ---- the text report ----------------------------------------------------------------------


async def test_report_sums_up_and_tables_users_and_rooms(db):
    rows = await fill(db)
    plain, markup = report.usage_report(
        rows,
        span_label="in the last 7 days",
        user=None,
        now=NOON,
        room_names={"!room2:localhost": "Cats"},
    )
    lines = plain.splitlines()
    assert lines[0].startswith("Usage in the last 7 days (as of 2023-11-14 12:00")
    assert lines[1] == (
        "5 jobs, 7 pictures, 2 users, 2 rooms, 5.0 GPU seconds, 1 failed, 1 rejected"
    )
    users = lines[lines.index("") + 1 :]
    assert users[0].split() == ["user", "pictures", "jobs", "failed", "GPU", "s"]
    assert users[1].split() == ["@alice:localhost", "6", "3", "1", "3.8"]
    assert users[2].split() == ["@bob:localhost", "1", "2", "0", "1.2"]
    rooms = lines[len(lines) - lines[::-1].index("") :]
    assert rooms[0].split() == ["room", "pictures", "users", "failed", "GPU", "s"]
    assert rooms[1].split() == ["!room1:localhost", "6", "2", "1", "3.8"]
    assert rooms[2].split() == ["Cats", "1", "1", "0", "1.2"]  # its display name

    parsed = Tags(markup)
    assert parsed.tags <= ALLOWED_TAGS and "table" in parsed.tags
    assert markup.count("<table>") == 2
    assert "<td>@alice:localhost</td><td>6</td><td>3</td><td>1</td><td>3.8</td>" in markup
    assert "<td>Cats</td>" in markup


async def test_report_escapes_hostile_user_ids_and_room_names(db):
    await add(db, created_at=NOON, user=HOSTILE_USER, room=HOSTILE_ROOM, images=3)
    rows = await usage.query(db)
    plain, markup = report.usage_report(
        rows,
        span_label="over all time",
        user=None,
        now=NOON,
        room_names={HOSTILE_ROOM: HOSTILE_NAME},
    )
    parsed = Tags(markup)
    assert parsed.tags <= ALLOWED_TAGS
    assert "<script" not in markup and "<img" not in markup
    text = "".join(parsed.text)
    assert '@<img src=x onerror="alert(1)">&amp;:evil.example' in text  # shown as typed
    assert "</td></table><script>" in text
    # The name's newline does not break the plain table: the row stays on one line.
    [row] = [line for line in plain.splitlines() if "</td></table>" in line]
    assert row.split()[-4:] == ["3", "1", "0", "1.2"]
    assert not any(line.startswith("line two") for line in plain.splitlines())


async def test_long_tables_stop_at_fifteen_rows(db):
    for n in range(report.MAX_TABLE_ROWS + 3):
        await add(
            db,
            created_at=NOON,
            user=f"@user{n:02}:localhost",
            room=f"!room{n:02}:localhost",
            images=n + 1,
        )
    rows = await usage.query(db)
    plain, markup = report.usage_report(rows, span_label="in the last 30 days", user=None, now=NOON)
    assert "… and 3 more users" in plain and "… and 3 more rooms" in plain
    assert "<p><em>… and 3 more users</em></p>" in markup
    assert markup.count("<tr>") == 2 * (1 + report.MAX_TABLE_ROWS)
    assert "@user17:localhost" in plain and "@user02:localhost" not in plain  # most first


async def test_report_for_one_user_has_no_table_of_users(db):
    await fill(db)
    rows = await usage.query(db, user="@bob:localhost")
    plain, markup = report.usage_report(
        rows, span_label="in the last 7 days", user="@bob:localhost", now=NOON
    )
    assert plain.startswith("Usage in the last 7 days for @bob:localhost")
    assert markup.count("<table>") == 1 and "<th>room</th>" in markup


def test_report_of_nothing_says_so():
    plain, markup = report.usage_report([], span_label="in the last 7 days", user=None, now=NOON)
    assert plain.splitlines()[1] == "No jobs."
    assert "<table>" not in markup and Tags(markup).tags <= ALLOWED_TAGS


# ---- the chart ----------------------------------------------------------------------------


def bar_pixels(png: bytes) -> list[int]:
    """How many bar-coloured pixels each column of the picture has."""
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (report.WIDTH, report.HEIGHT))
    pixels = image.convert("RGB").load()
    return [
        sum(pixels[x, y] == report.BAR_COLOUR for y in range(image.height))
        for x in range(image.width)
    ]


def bars(png: bytes) -> list[int]:
    """The height of each bar, left to right (runs of bar-coloured columns)."""
    heights, previous = [], 0
    for column in bar_pixels(png):
        if column and not previous:
            heights.append(column)
        previous = column
    return heights


async def test_chart_is_a_png_whose_bars_follow_the_pictures(db):
    rows = await fill(db)  # 2, 1 and 4 pictures 3, 2 and 1 days ago; nothing today
    png = report.pictures_per_day_chart(rows, days=7, now=NOON)
    heights = bars(png)
    assert len(heights) == 3
    assert heights[2] > heights[0] > heights[1]
    columns = bar_pixels(png)
    # The tallest bar is yesterday's: in the right part of the chart, not in today's slot.
    tallest = columns.index(max(columns))
    assert report.WIDTH * 5 / 7 < tallest < report.WIDTH * 6 / 7


async def test_chart_differs_for_different_data_and_is_deterministic(db):
    rows = await fill(db)
    png = report.pictures_per_day_chart(rows, days=7, now=NOON)
    assert report.pictures_per_day_chart(rows, days=7, now=NOON) == png
    await add(db, created_at=NOON, images=8)
    more = report.pictures_per_day_chart(await usage.query(db), days=7, now=NOON)
    assert more != png and len(bars(more)) == 4


async def test_chart_leaves_out_failed_jobs_and_days_outside_the_span(db):
    rows = await fill(db)
    png = report.pictures_per_day_chart(rows, days=7, now=NOON)
    await add(db, created_at=NOON, status="error", images=5)
    await add(db, created_at=NOON - 7 * DAY, images=5)  # the day before the 7 days
    assert report.pictures_per_day_chart(await usage.query(db), days=7, now=NOON) == png


async def test_chart_of_all_time_has_a_bar_a_day_then_a_bar_a_week(db):
    for n in range(200):
        await add(db, created_at=NOON - n * DAY)
    rows = await usage.query(db)
    assert len(bars(report.pictures_per_day_chart(rows, days=None, now=NOON))) == 200 // 7 + 1
    recent = [r for r in rows if r["created_at"] > NOON - 60 * DAY]
    assert len(bars(report.pictures_per_day_chart(recent, days=None, now=NOON))) == 60


def test_chart_of_nothing_is_still_a_chart():
    assert bars(report.pictures_per_day_chart([], days=30, now=NOON)) == []
    assert bars(report.pictures_per_day_chart([], days=None, now=NOON)) == []


def test_chart_refuses_an_empty_span():
    with pytest.raises(ValueError, match="at least 1"):
        report.pictures_per_day_chart([], days=0, now=NOON)
