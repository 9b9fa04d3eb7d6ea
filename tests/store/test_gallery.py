"""The bot's posted pictures (`bot/store/gallery.py`): found by event and room, and the usage
row of the job that made each, which a picture's card reads."""

from __future__ import annotations

import pytest

from bot.store import db as database
from bot.store import gallery, usage
from generation.job import Job


@pytest.fixture
async def db(tmp_path):
    conn = await database.connect(tmp_path / "imgbot.sqlite3")
    yield conn
    await conn.close()


async def test_a_pictures_usage_row_is_found_in_its_room_only(db):
    job = Job(prompt="a cat", seed=5, steps=2, width=64, height=64, count=2)
    row = await usage.record_job(
        db, usage.NewJob("$cmd", "!room", "@alice:localhost", "a cat", job.record(), 5, "tiny")
    )
    await usage.finish_job(
        db,
        row,
        status=usage.JobStatus.OK,
        images=2,
        queue_seconds=0.5,
        generation_seconds=1.25,
        worker="cuda:0",
    )
    await gallery.remember(db, "$pic", "!room", row, job.record(), "a cat", 1)
    posted = await gallery.find(db, "$pic", "!room")
    assert posted is not None and (posted.job, posted.picture) == (job, 1)
    found = await gallery.usage_of(db, "$pic", "!room")
    assert found is not None
    assert (found["user_id"], found["generation_seconds"], found["worker"]) == (
        "@alice:localhost",
        1.25,
        "cuda:0",
    )
    assert await gallery.usage_of(db, "$pic", "!elsewhere") is None
    assert await gallery.usage_of(db, "$other", "!room") is None
    # The usage row gone (usage.retention_days), the picture is still known.
    async with database.writing(db):
        await db.execute("DELETE FROM usage")
    assert await gallery.usage_of(db, "$pic", "!room") is None
    assert await gallery.find(db, "$pic", "!room") is not None
