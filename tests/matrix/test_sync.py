"""The sync loop's promise with a fake homeserver: a gap that cannot be fetched is not skipped."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import aiohttp
from nio import RoomMessagesResponse, SyncResponse

from bot.store import db as database
from bot.matrix.sync import SYNC_TOKEN_KEY, SyncLoop

ROOM = "!room:example.org"


def message(n: int) -> dict:
    return {
        "type": "m.room.message",
        "event_id": f"$e{n}",
        "sender": "@alice:example.org",
        "origin_server_ts": n,
        "content": {"msgtype": "m.text", "body": f"!img {n}"},
    }


def sync_response(next_batch: str, events: list[dict], limited: bool) -> SyncResponse:
    return SyncResponse.from_dict(
        {
            "next_batch": next_batch,
            "rooms": {
                "join": {
                    ROOM: {
                        "timeline": {
                            "events": events,
                            "limited": limited,
                            "prev_batch": "gap-start",
                        },
                        "state": {"events": []},
                    }
                }
            },
        }
    )


class GapServer:
    """One sync with a limited timeline; /messages fails the first time, then answers."""

    def __init__(self):
        self.syncs: list[str | None] = []
        self.message_calls = 0

    async def sync(self, timeout=None, since=None, full_state=None, sync_filter=None):
        self.syncs.append(since)
        if len(self.syncs) > 2:
            await asyncio.sleep(3600)  # a long poll with nothing new
        return sync_response("after", [message(3)], limited=True)

    async def room_messages(self, room_id, start=None, end=None, limit=10):
        self.message_calls += 1
        if self.message_calls == 1:
            raise aiohttp.ClientConnectionError("connection reset")
        # The gap holds two events; paginating past them gives an empty page.
        chunk = [message(2), message(1)] if start == "gap-start" else []
        return RoomMessagesResponse.from_dict(
            {"chunk": chunk, "start": start, "end": "gap-end"}, room_id
        )


async def test_an_unfetchable_gap_is_retried_not_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr("bot.matrix.sync.backoff_delay", lambda failures: 0.01)
    db = await database.connect(tmp_path / "db.sqlite3")
    await database.set_state(db, SYNC_TOKEN_KEY, "before")
    server, seen, stop = GapServer(), [], asyncio.Event()

    async def on_sync(response, first):
        seen.append([e.source["event_id"] for e in response.rooms.join[ROOM].timeline.events])
        stop.set()

    try:
        sync = SyncLoop(server, database.Kept(db, SYNC_TOKEN_KEY), on_sync)
        await asyncio.wait_for(sync.run(stop), 10)
        token = await database.get_state(db, SYNC_TOKEN_KEY)
    finally:
        await db.close()
    # The failed gap fetch was not handed on; the retry started from the same token and
    # delivered the commands of the gap before the newest one.
    assert server.syncs == ["before", "before"]
    assert seen == [["$e1", "$e2", "$e3"]]
    assert token == "after"


class Syncs:
    """A homeserver whose syncs bring nothing, numbered s1, s2, …; after `count` of them, a
    long poll with nothing new."""

    def __init__(self, count: int):
        self.count = count
        self.served = 0

    async def sync(self, timeout=None, since=None, full_state=None, sync_filter=None):
        if self.served >= self.count:
            await asyncio.sleep(3600)
        self.served += 1
        return sync_response(f"s{self.served}", [], limited=False)


class FullPlace:
    """The token's place, on a disk that is full while `full` is set."""

    def __init__(self):
        self.full = False
        self.saved: list[str] = []

    async def load(self):
        return "s0"

    async def save(self, value: str) -> None:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        self.saved.append(value)


async def test_a_token_the_full_disk_refused_is_covered_by_the_next_and_none_skips(caplog):
    """The token is saved only once its sync's events are handled; a save the full disk
    refuses does not stop the later ones (the next covers its events too), and no token
    passes a sync whose events still wait (a command waiting for space)."""
    caplog.set_level(logging.INFO, logger="bot.matrix.sync")
    place, server, stop = FullPlace(), Syncs(3), asyncio.Event()
    waiting = asyncio.get_running_loop().create_future()  # s2's events wait for space
    handed = iter([None, waiting, None])

    async def on_sync(response, first):
        done = next(handed)
        if done is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
        return done

    place.full = True
    sync = SyncLoop(server, place, on_sync)
    running = asyncio.ensure_future(sync.run(stop))
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if server.served == 3:
                break
        await asyncio.sleep(0.1)
        assert place.saved == []  # s1's save failed; s2 and s3 wait for s2's events
        place.full = False
        waiting.set_result(None)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if place.saved:
                break
        assert place.saved == ["s2", "s3"]
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    said = [r.getMessage() for r in caplog.records if r.name == "bot.matrix.sync"]
    assert (
        said.count(
            "could not save the sync token; a restart before a later one is "
            "saved fetches these events again (those taken are recognised)"
        )
        == 1
    )
    assert "the sync token is saved again" in said
