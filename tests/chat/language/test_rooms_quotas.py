"""Room defaults (`bot/rooms.py`) and quotas (`bot/quotas.py`) on real SQLite files."""

from __future__ import annotations

import pytest

from bot.store import db as database
from bot.chat.jobs import quotas
from bot.chat.language import rooms
from bot.matrix import power
from bot.store import room_defaults, usage
from bot.config import GenerationSettings, LimitSettings, QuotaSettings
from bot.chat.language.resolve import Catalogue, RoomDefaults
from bot.chat.language.styles import BUILTIN

NOW = 1_700_000_000.0
HOUR = 3600.0
ALICE = "@alice:x"
LIMITS = LimitSettings(max_steps=20, max_pixels=1024 * 1024)
CATALOGUE = Catalogue("base", {"base": (1024, 1024), "small": (512, 512)}, BUILTIN)


@pytest.fixture
async def db(tmp_path):
    conn = await database.connect(tmp_path / "imgbot.sqlite3")
    yield conn
    await conn.close()


# ---- room defaults --------------------------------------------------------------------------


async def test_room_defaults_are_kept_per_room_and_reset(db):
    await room_defaults.store(db, "!a:x", "style", "photo", ALICE)
    await room_defaults.store(db, "!a:x", "steps", "8", ALICE)
    await room_defaults.store(db, "!b:x", "style", "anime", "@bob:x")
    await room_defaults.store(db, "!a:x", "style", "comic", "@bob:x")  # replaces, with who and when
    values = await room_defaults.stored(db, "!a:x")
    assert {k: v.value for k, v in values.items()} == {"style": "comic", "steps": "8"}
    assert values["style"].set_by == "@bob:x"
    assert await room_defaults.clear(db, "!a:x", "steps") == 1
    assert set(await room_defaults.stored(db, "!a:x")) == {"style"}
    assert await room_defaults.clear(db, "!a:x") == 1
    assert await room_defaults.stored(db, "!a:x") == {}
    assert set(await room_defaults.stored(db, "!b:x")) == {"style"}


@pytest.mark.parametrize(
    "key, typed, kept",
    [
        ("style", "Oil Painting", "oil-painting"),
        ("style", "none", "none"),
        ("size", "512X768", "512x768"),
        ("steps", "20", "20"),
        ("model", "small", "small"),
        ("negative", " text, watermark ", "text, watermark"),
    ],
)
def test_canonical_values(key, typed, kept):
    assert rooms.canonical(key, typed, LIMITS, CATALOGUE) == kept


@pytest.mark.parametrize(
    "key, typed, says",
    [
        ("style", "vaporwave", "no style 'vaporwave'"),
        ("model", "huge", "no model 'huge'"),
        ("steps", "21", "1 to 20"),
        ("size", "2048x2048", "too large"),
    ],
)
def test_canonical_refuses_what_is_unknown_or_over_the_limits(key, typed, says):
    with pytest.raises(ValueError, match=says):
        rooms.canonical(key, typed, LIMITS, CATALOGUE)


async def test_stored_values_over_todays_limits_are_not_used(db):
    # Set when the limits were higher, or before a model was removed from the config.
    for key, value in (
        ("steps", "30"),
        ("size", "1024x1024"),
        ("model", "gone"),
        ("style", "photo"),
        ("guidance", "4.5"),
    ):
        await room_defaults.store(db, "!a:x", key, value, ALICE)
    values = await room_defaults.stored(db, "!a:x")
    lowered = LimitSettings(max_steps=20, max_pixels=512 * 512)
    defaults, ignored = rooms.usable(values, lowered, CATALOGUE)
    assert defaults == RoomDefaults(style="photo", guidance=4.5)
    assert set(ignored) == {"steps", "size", "model"}
    text = rooms.describe(values, ignored, GenerationSettings(size="512x512"), CATALOGUE).plain()
    assert "steps: 4 — the room's '30' is not used" in text
    assert "style: photo (set by @alice:x" in text
    assert "negative: none (the bot's default)" in text


# ---- quotas -----------------------------------------------------------------------------------


async def add(db, *, ago: float, status: str = "ok", pictures: int = 1, user: str = ALICE):
    row = await usage.record_job(
        db, usage.NewJob(None, "!a:x", user, "a cat", {"count": pictures}, 1, "base")
    )
    if status != "queued":
        await usage.finish_job(db, row, status=status, images=pictures if status == "ok" else 0)
    await db.execute("UPDATE usage SET created_at = ? WHERE id = ?", (NOW - ago, row))
    await db.commit()


async def refusal(db, wanted=1, user=ALICE, exempt=False, **limits):
    """The quota's notice as its plain body, or None."""
    said = await quotas.refusal(db, user, wanted, QuotaSettings(**limits), exempt=exempt, now=NOW)
    return None if said is None else said.plain()


async def test_no_quota_configured_means_no_refusal(db):
    for _ in range(5):
        await add(db, ago=60, pictures=4)
    assert await refusal(db, wanted=4) is None


async def test_hourly_quota_says_when_the_user_may_go_on(db):
    await add(db, ago=50 * 60, pictures=2)  # leaves the hour in 10 minutes
    await add(db, ago=10 * 60, pictures=1)
    assert await refusal(db, wanted=1, pictures_per_hour=4) is None
    message = await refusal(db, wanted=2, pictures_per_hour=3)
    assert (
        "3 pictures made or queued in the last hour" in message and "limit is 3 per hour" in message
    )
    assert "in 10 minutes" in message
    # Two wanted, one left: say both what is possible now and when all of it is.
    message = await refusal(db, wanted=2, pictures_per_hour=4)
    assert "1 more now (with `--n 1`), or 2 in 10 minutes" in message


async def test_failed_rejected_and_cancelled_jobs_do_not_count(db):
    for status in ("error", "rejected", "cancelled"):
        await add(db, ago=60, status=status, pictures=4)
    assert await refusal(db, wanted=2, pictures_per_hour=2) is None


async def test_queued_jobs_count_what_they_asked_for(db):
    await add(db, ago=60, status="queued", pictures=3)
    assert "3 pictures made or queued" in await refusal(db, wanted=1, pictures_per_hour=3)


async def test_older_pictures_and_other_users_do_not_count(db):
    await add(db, ago=2 * HOUR, pictures=4)
    await add(db, ago=60, pictures=4, user="@bob:x")
    assert await refusal(db, wanted=2, pictures_per_hour=2) is None


async def test_daily_quota(db):
    await add(db, ago=20 * HOUR, pictures=4)
    await add(db, ago=2 * HOUR, pictures=4)
    message = await refusal(db, wanted=1, pictures_per_hour=10, pictures_per_day=8)
    assert "in the last day" in message and "in 4.0 hours" in message


async def test_more_than_the_quota_at_once_is_refused_plainly(db):
    message = await refusal(db, wanted=4, pictures_per_hour=3)
    assert "asked for 4 pictures at once; the limit is 3 per hour" in message


async def test_exempt_users_have_no_quota(db):
    await add(db, ago=60, pictures=4)
    assert await refusal(db, wanted=4, exempt=True, pictures_per_hour=1) is None


async def test_unreadable_options_count_as_one_picture(db):
    await add(db, ago=60, status="queued")
    await db.execute("UPDATE usage SET options = 'not json'")
    await db.commit()
    assert "You have 1 picture made or queued" in await refusal(db, wanted=1, pictures_per_hour=1)


# ---- power levels -------------------------------------------------------------------------


class StateClient:
    """Answers /state with the events given, or with an error."""

    def __init__(self, events: list[dict] | None):
        self.events = events

    async def room_get_state(self, room_id):
        from nio import RoomGetStateError, RoomGetStateResponse

        if self.events is None:
            return RoomGetStateError("M_FORBIDDEN", "You are not in this room")
        return RoomGetStateResponse(self.events, room_id)


def create(sender: str, version: str, **content) -> dict:
    return {
        "type": "m.room.create",
        "state_key": "",
        "sender": sender,
        "content": {"room_version": version, **content},
    }


def levels(users: dict, **content) -> dict:
    return {
        "type": "m.room.power_levels",
        "state_key": "",
        "sender": "@c:x",
        "content": {"users": users, **content},
    }


@pytest.mark.parametrize(
    "events, user, level",
    [
        # Room version 12: creators have unlimited power and are not in the power levels.
        ([create("@c:x", "12"), levels({})], "@c:x", float("inf")),
        ([create("@c:x", "12", additional_creators=["@d:x"]), levels({})], "@d:x", float("inf")),
        ([create("@c:x", "12"), levels({"@m:x": 50})], "@m:x", 50),
        ([create("@c:x", "12"), levels({}, users_default=10)], "@anyone:x", 10),
        # Older rooms: the creator's level is what the power levels say.
        ([create("@c:x", "10"), levels({"@c:x": 100})], "@c:x", 100),
        ([create("@c:x", "10"), levels({})], "@c:x", 0),
        # No power levels event at all: the creator 100, everyone else 0.
        ([create("@c:x", "10")], "@c:x", 100),
        ([create("@c:x", "10")], "@m:x", 0),
        # Malformed levels are nobody's power.
        ([create("@c:x", "10"), levels({"@m:x": "lots"})], "@m:x", 0),
        ([create("@c:x", "10"), levels("not a mapping")], "@m:x", 0),
    ],
)
async def test_power_level(events, user, level):
    assert await power.power_level(StateClient(events), "!r:x", user) == level


async def test_power_level_unknown_when_the_server_will_not_say():
    assert await power.power_level(StateClient(None), "!r:x", "@c:x") is None


async def test_jobs_left_queued_by_a_crash_are_closed_as_failed(db):
    await add(db, ago=60, status="queued", pictures=2)
    await add(db, ago=60, status="ok")
    assert await usage.close_interrupted(db) == 1
    statuses = sorted(row["status"] for row in await usage.query(db))
    assert statuses == ["error", "ok"]
    # ... and they no longer count against the quota.
    assert await refusal(db, wanted=2, pictures_per_hour=3) is None
