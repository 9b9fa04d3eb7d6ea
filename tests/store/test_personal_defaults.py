"""Personal defaults (`bot/store/personal_defaults.py`) and their migration, on real SQLite
files in tmp_path."""

from __future__ import annotations

import sqlite3

import pytest

from bot.store import db as database
from bot.store import personal_defaults, room_defaults

ALICE = "@alice:x"
BOB = "@bob:x"
DB_NAME = "imgbot.sqlite3"


@pytest.fixture
async def db(tmp_path):
    conn = await database.connect(tmp_path / DB_NAME)
    yield conn
    await conn.close()


async def test_a_database_of_the_release_before_keeps_its_data_and_gains_the_table(tmp_path):
    # A bot of the release before (schema 6) with a room default set: after the upgrade
    # the room default is there, and people can keep their own.
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as old:
        for number, step in enumerate(database.MIGRATIONS[:6], start=1):
            old.executescript(f"BEGIN;\n{step}\nPRAGMA user_version = {number};\nCOMMIT;")
        old.execute("INSERT INTO room_defaults VALUES ('!a:x', 'style', 'photo', ?, 1.0)", (ALICE,))
    conn = await database.connect(path)
    try:
        assert await database.single(conn, "PRAGMA user_version") == len(database.MIGRATIONS)
        assert (await room_defaults.stored(conn, "!a:x"))["style"].value == "photo"
        await personal_defaults.store(conn, ALICE, "style", "anime")
        assert (await personal_defaults.stored(conn, ALICE))["style"].value == "anime"
    finally:
        await conn.close()


async def test_a_review_reads_the_defaults_beside_a_running_bot(db, tmp_path):
    await personal_defaults.store(db, ALICE, "steps", "8")
    review = await database.connect_readonly(tmp_path / DB_NAME)
    try:
        assert [h.user_id for h in await personal_defaults.holders(review)] == [ALICE]
    finally:
        await review.close()


async def test_each_person_keeps_their_own_and_setting_again_replaces(db):
    await personal_defaults.store(db, ALICE, "style", "photo", now=100.0)
    await personal_defaults.store(db, ALICE, "size", "16:9", now=110.0)
    await personal_defaults.store(db, BOB, "style", "anime", now=120.0)
    await personal_defaults.store(db, ALICE, "style", "comic", now=130.0)  # replaces, with when
    mine = await personal_defaults.stored(db, ALICE)
    assert {key: kept.value for key, kept in mine.items()} == {"style": "comic", "size": "16:9"}
    assert mine["style"].set_at == 130.0 and mine["size"].set_at == 110.0
    assert {k: v.value for k, v in (await personal_defaults.stored(db, BOB)).items()} == {
        "style": "anime"
    }
    assert await personal_defaults.stored(db, "@carol:x") == {}


async def test_reset_one_key_or_all_of_them_and_only_the_persons_own(db):
    for key, value in (("style", "photo"), ("steps", "8"), ("buttons", "off")):
        await personal_defaults.store(db, ALICE, key, value)
    await personal_defaults.store(db, BOB, "steps", "12")
    assert await personal_defaults.clear(db, ALICE, "steps") == 1
    assert set(await personal_defaults.stored(db, ALICE)) == {"style", "buttons"}
    assert await personal_defaults.clear(db, ALICE, "steps") == 0  # nothing left to clear
    assert await personal_defaults.clear(db, ALICE) == 2
    assert await personal_defaults.stored(db, ALICE) == {}
    assert set(await personal_defaults.stored(db, BOB)) == {"steps"}


async def test_who_has_defaults_for_the_admins(db):
    assert await personal_defaults.holders(db) == []
    await personal_defaults.store(db, BOB, "steps", "12", now=200.0)
    await personal_defaults.store(db, ALICE, "style", "photo", now=100.0)
    await personal_defaults.store(db, ALICE, "size", "16:9", now=300.0)
    holders = await personal_defaults.holders(db)
    assert [(h.user_id, h.values, h.last_set) for h in holders] == [
        (ALICE, {"size": "16:9", "style": "photo"}, 300.0),
        (BOB, {"steps": "12"}, 200.0),
    ]
