"""The SQLite database in state_dir: one connection, WAL, numbered migrations."""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.config.private import private_file, warn_if_shared
from generation.errors import ImgbotError

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's files beside the database
# SQLite's result codes, as sqlite3 names them from Python 3.11 on (3.10 has no names).
SQLITE_IOERR = 10
SQLITE_FULL = 13

# Each entry moves the schema from version N to N+1. Never edit one that has shipped:
# add a new one, so every existing database takes the same path.
MIGRATIONS: list[str] = [
    # 1: the usage log and the events already handled
    """
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,          -- unix time the command arrived
        finished_at REAL,
        event_id TEXT UNIQUE,              -- the command's Matrix event (NULL for CLI jobs)
        room_id TEXT,
        user_id TEXT NOT NULL,
        prompt TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{}',   -- JSON of the resolved parameters
        seed INTEGER,
        model TEXT,
        status TEXT NOT NULL CHECK (status IN ('queued','ok','error','rejected','cancelled')),
        error TEXT,
        images INTEGER NOT NULL DEFAULT 0,
        queue_seconds REAL,
        generation_seconds REAL
    );
    CREATE INDEX usage_created ON usage(created_at);
    CREATE INDEX usage_user ON usage(user_id, created_at);
    CREATE TABLE handled_events (
        event_id TEXT PRIMARY KEY,
        handled_at REAL NOT NULL
    );
    CREATE TABLE bot_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: per-room defaults, as typed by the room's moderators
    """
    CREATE TABLE room_defaults (
        room_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        set_by TEXT NOT NULL,
        set_at REAL NOT NULL,
        PRIMARY KEY (room_id, key)
    );
    """,
    # 3: accepted jobs not yet answered, kept so that a stop or a crash loses none of them
    """
    CREATE TABLE jobs (
        event_id TEXT PRIMARY KEY,         -- the command
        usage_id INTEGER NOT NULL,         -- its row in the usage log
        created_at REAL NOT NULL,          -- when it was accepted
        room_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        command TEXT NOT NULL,             -- JSON: what a reply needs of the command event
        prompt TEXT NOT NULL,              -- as typed, before any style
        job TEXT NOT NULL,                 -- JSON of the resolved generation.job.Job
        starts INTEGER NOT NULL DEFAULT 0, -- how often a run queued it: 1 at first
        parts_sent INTEGER NOT NULL DEFAULT 0  -- replies already posted (pictures, a notice)
    );
    """,
    # 4: the pictures the bot posted, so that a reply to one can continue from it
    """
    CREATE TABLE pictures (
        event_id TEXT PRIMARY KEY,         -- the m.image event the bot posted
        room_id TEXT NOT NULL,
        usage_id INTEGER,                  -- the job's row in the usage log
        job TEXT NOT NULL,                 -- JSON of the job (prompts hashed unless stored)
        prompt TEXT NOT NULL,              -- as typed (hashed unless stored)
        picture INTEGER,                   -- which of the job's pictures; NULL: the sheet
        created_at REAL NOT NULL
    );
    CREATE INDEX pictures_created ON pictures(created_at);
    """,
    # 5: what the compliance checks found in each picture of a job (JSON list; NULL: none ran)
    """
    ALTER TABLE usage ADD COLUMN compliance TEXT;
    """,
    # 6: the GPU worker that made a job's pictures: a local device (cuda:0), or a Ray
    # worker's host, slot and node (NULL: nothing was made, or an older bot)
    """
    ALTER TABLE usage ADD COLUMN worker TEXT;
    """,
    # 7: personal defaults (`!img me set`), as each person typed them: they follow the
    # person into every room, below the room's own defaults
    """
    CREATE TABLE personal_defaults (
        user_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        set_at REAL NOT NULL,
        PRIMARY KEY (user_id, key)
    );
    """,
    # 8: a job's status notice (for removing it with the picture), and who removed the
    # job's pictures with 🗑️ and when (NULL: no one)
    """
    ALTER TABLE usage ADD COLUMN status_event TEXT;
    ALTER TABLE usage ADD COLUMN deleted_at REAL;
    ALTER TABLE usage ADD COLUMN deleted_by TEXT;
    """,
]


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and what it was raised from or during, nearest first (at most 8: a chain is
    short, and a cycle must not hang us)."""
    seen = 0
    while exc is not None and seen < 8:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether a write failed for want of space: SQLite's "database or disk is full", or a
    file's ENOSPC (EDQUOT: a quota), also as the cause of another exception."""
    return any(
        (
            isinstance(cause, sqlite3.OperationalError)
            and (
                getattr(cause, "sqlite_errorcode", None) == SQLITE_FULL
                or "database or disk is full" in str(cause)
            )
        )
        or (isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT))
        for cause in causes(exc)
    )


async def connect(path: Path) -> aiosqlite.Connection:
    """Open the database, switch on WAL and bring the schema up to date. It holds the
    prompts: a new one is made 0600 (its -wal and -shm files take its mode), and one that
    others can read is warned about."""
    for part in (path, *(Path(f"{path}{suffix}") for suffix in SIDE_FILES)):
        warn_if_shared(part, "the usage log (prompts included)")
    db = await aiosqlite.connect(private_file(path))
    try:
        db.row_factory = aiosqlite.Row
        # WAL lets `imgbot usage` read while the bot writes; NORMAL sync is durable in WAL
        # mode against a process crash, which is the fault we guard against here.
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        await migrate(db)
    except BaseException:
        # aiosqlite's thread would otherwise keep the process alive after the error.
        await db.close()
        raise
    return db


class SchemaMismatch(ImgbotError, RuntimeError):
    """The database is at another schema version than this imgbot's: a newer one when the
    bot starts (it migrates an older one), either when it is opened read-only. Still a
    RuntimeError, as the start's refusal was before it had a class of its own."""


def wal_in_use(path: Path) -> bool:
    """Whether the database has a -wal file: a bot has it open (or stopped without closing
    it). A bot that closed it cleanly took the file away with its last checkpoint."""
    return Path(f"{path}-wal").exists()


async def connect_readonly(path: Path) -> aiosqlite.Connection:
    """Open an existing database to read it, for reviews beside a running bot.

    Nothing is created, migrated or written: a missing file raises sqlite3.OperationalError,
    and a schema other than this imgbot's raises SchemaMismatch (the bot migrates on start).
    With a -wal file (a bot runs) it reads the bot's latest commits through it; without one
    it opens the file immutable, since a plain read-only open of a WAL database would leave
    new -wal and -shm files behind. A bot that starts during such a read leaves the file
    as it is until a checkpoint: a caller that must be sure reads again when `wal_in_use`
    has turned true meanwhile (`imgbot usage` does).
    """
    if not path.is_file():
        # Said before aiosqlite starts its thread: when its connect fails, the thread's
        # stop is answered after the caller's event loop may have closed (an "Exception in
        # thread" on the way out of `imgbot usage`).
        raise sqlite3.OperationalError(f"unable to open database file {path}")
    mode = "mode=ro" if wal_in_use(path) else "mode=ro&immutable=1"
    db = await aiosqlite.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
    try:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA busy_timeout=5000")  # the bot may be writing right now
        version = await single(db, "PRAGMA user_version")
        if version != len(MIGRATIONS):
            older = version < len(MIGRATIONS)
            raise SchemaMismatch(
                f"the database is at schema version {version}, "
                f"{'older' if older else 'newer'} than this imgbot's ({len(MIGRATIONS)}); "
                + ("start the bot once to migrate it" if older else "upgrade imgbot")
            )
    except BaseException:
        await db.close()  # see connect
        raise
    return db


async def single(db: aiosqlite.Connection, sql: str, parameters: tuple = ()) -> Any:
    """The value of a query that always answers one row of one column (a PRAGMA, an
    aggregate)."""
    row = await (await db.execute(sql, parameters)).fetchone()
    if row is None:
        raise sqlite3.DatabaseError(f"no row for {sql!r}")
    return row[0]


async def migrate(db: aiosqlite.Connection) -> None:
    version = await single(db, "PRAGMA user_version")
    if version > len(MIGRATIONS):
        raise SchemaMismatch(
            f"the database is at schema version {version}, newer than this imgbot "
            f"({len(MIGRATIONS)}); upgrade imgbot"
        )
    for number in range(version, len(MIGRATIONS)):
        log.info("migrating the database to version %d", number + 1)
        # One transaction per step: a failed step leaves the previous version intact.
        await db.executescript(
            "BEGIN;\n" + MIGRATIONS[number] + f"\nPRAGMA user_version = {number + 1};\nCOMMIT;"
        )


_write_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@asynccontextmanager
async def writing(db: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """One transaction: the writes inside are committed together, or rolled back together
    (an exception, a cancel). Every write goes through here: the bot shares one connection,
    and without the lock another task's commit could land between two writes that belong
    together (a job and the claim on its command) and commit one without the other."""
    lock = _write_locks.setdefault(db, asyncio.Lock())
    async with lock:
        try:
            yield db
        except BaseException:
            await asyncio.shield(db.rollback())
            raise
        await db.commit()


async def get_state(db: aiosqlite.Connection, key: str) -> str | None:
    row = await (await db.execute("SELECT value FROM bot_state WHERE key = ?", (key,))).fetchone()
    return row[0] if row else None


async def set_state(db: aiosqlite.Connection, key: str, value: str) -> None:
    async with writing(db):
        await db.execute(
            "INSERT INTO bot_state(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


class Kept:
    """One value of the state table under its key: the place a part that must not know the
    database (the sync loop's token) loads from and saves to."""

    def __init__(self, db: aiosqlite.Connection, key: str):
        self.db = db
        self.key = key

    async def load(self) -> str | None:
        return await get_state(self.db, self.key)

    async def save(self, value: str) -> None:
        await set_state(self.db, self.key, value)


async def was_handled(db: aiosqlite.Connection, event_id: str) -> bool:
    row = await (
        await db.execute("SELECT 1 FROM handled_events WHERE event_id = ?", (event_id,))
    ).fetchone()
    return row is not None


async def insert_claim(db: aiosqlite.Connection, event_id: str, now: float) -> bool:
    """Inside `writing`: mark an event as handled; False when it already was."""
    cursor = await db.execute(
        "INSERT OR IGNORE INTO handled_events(event_id, handled_at) VALUES (?, ?)",
        (event_id, now),
    )
    return cursor.rowcount == 1


async def claim_event(db: aiosqlite.Connection, event_id: str, now: float) -> bool:
    """Mark an event as handled; False when it already was (so it is never answered twice)."""
    async with writing(db):
        return await insert_claim(db, event_id, now)
