"""The free space of state_dir's filesystem (`bot/ops/disk.py`): what the operator sees when
it runs low and when it is full, in the log, on /healthz and /metrics, and in `imgbot check`.
statvfs is faked at the boundary, except in the last test, which fills a real tmpfs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from bot.config import ConfigError, DiskSettings, MetricsSettings, load_settings
from bot.ops.check import check_disk
from bot.ops.disk import MIB, DiskWatch, Level, is_disk_full, refused_for_space, space
from bot.ops.metrics import Health, Metrics, start_server
from tests.helpers.chatting import bot_running
from tests.ops.test_metrics import scrape

SETTINGS = DiskSettings(warn_free_mib=512, full_free_mib=16)


def statvfs(free_mib: float, *, inodes: int = 1000, free_inodes: int = 500) -> os.statvfs_result:
    """What os.statvfs says of a filesystem with `free_mib` free to the bot's user (4 KiB
    blocks; the blocks kept for root are free, but not to it)."""
    blocks = int(free_mib * MIB) // 4096
    return os.statvfs_result(
        (
            4096,
            4096,
            10 * 1024 * 256,
            blocks + 1000,
            blocks,
            inodes,
            free_inodes,
            free_inodes,
            0,
            255,
        )
    )


class FakeDisk:
    """statvfs of state_dir, as the test sets it."""

    def __init__(self, free_mib: float):
        self.free_mib = free_mib
        self.asked: list[Path] = []

    def __call__(self, path: Path) -> os.statvfs_result:
        self.asked.append(path)
        return statvfs(self.free_mib)


# -- the verdict ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "free_mib, level, reason",
    [
        (2048, Level.OK, "state_dir's filesystem has 2048 MiB free"),
        (512, Level.OK, "state_dir's filesystem has 512 MiB free"),
        (511, Level.LOW, "state_dir's filesystem has 511 MiB free (warning below 512 MiB)"),
        (16, Level.LOW, "state_dir's filesystem has 16 MiB free (warning below 512 MiB)"),
        (15, Level.FULL, "state_dir's filesystem has 15 MiB free (limit 16 MiB)"),
        (0.4, Level.FULL, "state_dir's filesystem has 0.4 MiB free (limit 16 MiB)"),
        (0, Level.FULL, "state_dir's filesystem has 0.0 MiB free (limit 16 MiB)"),
    ],
)
def test_the_verdict_on_the_free_space(free_mib, level, reason):
    found = space(statvfs(free_mib), warn_free_mib=512, full_free_mib=16)
    assert (found.level, found.reason) == (level, reason)
    assert found.free_bytes == int(free_mib * MIB) // 4096 * 4096
    assert found.full == (level is Level.FULL)


def test_the_blocks_kept_for_root_do_not_count():
    # 100 MiB free in all, but the bot's user may write only 10 of them.
    stat = os.statvfs_result((4096, 4096, 10**6, 100 * 256, 10 * 256, 100, 50, 50, 0, 255))
    assert space(stat, 512, 16).reason == "state_dir's filesystem has 10 MiB free (limit 16 MiB)"


def test_no_free_inode_is_full_and_a_filesystem_without_a_count_is_not():
    out_of_inodes = space(statvfs(2048, inodes=1000, free_inodes=0), 512, 16)
    assert out_of_inodes.full
    assert out_of_inodes.reason == (
        "state_dir's filesystem has 2048 MiB free but no free inodes (of 1000): no file can be made"
    )
    # btrfs says 0 inodes in all: it makes them as it goes, there is none to run out of.
    assert space(statvfs(2048, inodes=0, free_inodes=0), 512, 16).level is Level.OK


def test_the_settings_and_their_order(tmp_path):
    assert (DiskSettings().warn_free_mib, DiskSettings().full_free_mib) == (512, 16)
    config = tmp_path / "config.yaml"
    config.write_text(
        "matrix: {homeserver_url: 'https://m.example.org', "
        "user_id: '@bot:example.org', access_token: t}\n"
        "disk: {warn_free_mib: 10, full_free_mib: 20}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ConfigError,
        match=r"disk: full_free_mib \(20\) is above "
        r"warn_free_mib \(10\)",
    ):
        load_settings(config)


# -- the log says it once ---------------------------------------------------------------


def test_the_log_says_each_change_once_over_many_checks(tmp_path, caplog):
    disk = FakeDisk(2048)
    watch = DiskWatch(tmp_path, SETTINGS, statvfs=disk)
    caplog.set_level(logging.INFO, logger="bot.ops.disk")

    for free in (2048, 2048, 300, 290, 280, 10, 9, 8, 100, 90, 1024, 1024, 1024):
        disk.free_mib = free
        watch.check()

    said = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert said == [
        (
            "WARNING",
            "state_dir's filesystem has 300 MiB free (warning below 512 MiB): free "
            "some space before it runs out (below 16 MiB it counts as full)",
        ),
        (
            "ERROR",
            "state_dir's filesystem has 10 MiB free (limit 16 MiB): the disk counts as "
            "full (/healthz answers 503); commands sent meanwhile wait, and are taken "
            "once space is freed",
        ),
        (
            "WARNING",
            "state_dir's filesystem has 100 MiB free (warning below 512 MiB): no "
            "longer full, but still low",
        ),
        (
            "INFO",
            "state_dir's filesystem has 1024 MiB free again, above disk.warn_free_mib (512 MiB)",
        ),
    ]
    assert disk.asked == [tmp_path] * 13


def test_a_disk_full_from_the_start_is_said_at_the_first_check(tmp_path, caplog):
    watch = DiskWatch(tmp_path, SETTINGS, statvfs=FakeDisk(3))
    assert watch.current() is None  # nothing read yet: nothing claimed
    watch.check()
    watch.check()
    assert [record.levelname for record in caplog.records] == ["ERROR"]
    assert watch.current().full


def test_a_statvfs_that_fails_is_said_once_and_claims_nothing(tmp_path, caplog):
    def gone(path):
        raise FileNotFoundError(2, "No such file or directory")

    watch = DiskWatch(tmp_path / "gone", SETTINGS, statvfs=gone)
    watch.check()
    watch.check()
    assert watch.current() is None
    assert [record.getMessage() for record in caplog.records] == [
        f"cannot read the free space of state_dir {tmp_path / 'gone'}: No such file or directory"
    ]


# -- /healthz and /metrics ----------------------------------------------------------------


async def test_healthz_answers_503_with_why_while_the_disk_is_full_and_200_after(tmp_path):
    disk = FakeDisk(2048)
    watch = DiskWatch(tmp_path, SETTINGS, statvfs=disk)
    health = Health(lambda: 1.0, lambda: True, lambda: 0, lambda: False, disk=watch.current)
    metrics = Metrics()
    server = await start_server(
        metrics, MetricsSettings.model_construct(host="127.0.0.1", port=0), health
    )
    try:

        async def healthz() -> tuple[int, dict]:
            async with aiohttp.ClientSession() as session:
                async with session.get(server.url + "/healthz") as response:
                    return response.status, json.loads(await response.text())

        watch.check()
        status, body = await healthz()
        assert status == 200 and body["status"] == "ok" and body["problems"] == []
        assert body["state_dir_free_bytes"] == 2048 * MIB
        samples = await scrape(server)
        assert samples["imgbot_state_dir_free_bytes"] == 2048 * MIB
        assert samples["imgbot_disk_full"] == 0

        disk.free_mib = 300  # low is a warning in the log, not unhealthy
        watch.check()
        assert (await healthz())[0] == 200

        disk.free_mib = 5
        watch.check()
        status, body = await healthz()
        assert status == 503 and body["status"] == "unhealthy"
        assert body["problems"] == ["state_dir's filesystem has 5.0 MiB free (limit 16 MiB)"]
        assert body["state_dir_free_bytes"] == 5 * MIB
        samples = await scrape(server)
        assert samples["imgbot_state_dir_free_bytes"] == 5 * MIB
        assert samples["imgbot_disk_full"] == 1

        disk.free_mib = 1024
        watch.check()
        status, body = await healthz()
        assert status == 200 and body["problems"] == []
        assert (await scrape(server))["imgbot_disk_full"] == 0
    finally:
        await server.close()


def test_a_full_disk_before_the_first_sync_is_unhealthy_not_starting(tmp_path):
    from bot.ops.metrics import health_report

    watch = DiskWatch(tmp_path, SETTINGS, statvfs=FakeDisk(1))
    watch.check()
    status, body = health_report(
        Health(lambda: None, lambda: True, lambda: 0, lambda: False, disk=watch.current)
    )
    assert (status, body["status"]) == (503, "unhealthy")
    assert body["problems"] == [
        "no successful sync with the homeserver yet",
        "state_dir's filesystem has 1.0 MiB free (limit 16 MiB)",
    ]


# -- SQLite's own "database or disk is full" ---------------------------------------------


def sqlite_full_error(tmp_path: Path) -> sqlite3.OperationalError:
    """A real SQLITE_FULL: a database allowed two pages, asked to hold a megabyte."""
    db = sqlite3.connect(tmp_path / "small.sqlite3")
    try:
        db.execute("PRAGMA max_page_count = 2")
        db.execute("CREATE TABLE t (x BLOB)")
        with pytest.raises(sqlite3.OperationalError) as raised:
            db.execute("INSERT INTO t VALUES (zeroblob(1000000))")
        return raised.value
    finally:
        db.close()


async def test_sqlite_saying_the_disk_is_full_anywhere_in_the_log_counts(tmp_path, caplog):
    error = sqlite_full_error(tmp_path)
    assert str(error) == "database or disk is full" and is_disk_full(error)
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    now = [1000.0]
    disk = FakeDisk(2048)  # a quota, say: statvfs shows space, SQLite cannot write
    watch = DiskWatch(tmp_path, SETTINGS, statvfs=disk, clock=lambda: now[0])
    stop = asyncio.Event()
    running = asyncio.create_task(watch.run(stop))
    try:
        await asyncio.sleep(0.1)
        assert not watch.current().full
        try:  # as the sync loop's or a handler's own code catches and logs it
            try:
                raise error
            except sqlite3.OperationalError as exc:
                raise RuntimeError("could not store the job") from exc
        except RuntimeError:
            asked = len(disk.asked)
            logging.getLogger("bot.chat.intake").exception("could not handle an event")
            # The logger only notes it: a statvfs may block, and the loop may be the caller.
            assert len(disk.asked) == asked
        assert watch.current().full
        assert watch.current().reason == (
            "SQLite could not write in state_dir: database or "
            "disk is full (statvfs shows 2048 MiB free)"
        )
        watch.check()  # the same free space: still full, and said once
        assert watch.current().full
        watch.check()
        assert (
            sum(
                record.getMessage().startswith("SQLite could not write")
                for record in caplog.records
            )
            == 1
        )

        now[0] += 61  # said no more for a minute: it was a burst, it is over
        watch.check()
        assert watch.current().level is Level.OK

        logging.getLogger("bot.matrix.sync").error("could not save the sync token", exc_info=error)
        assert watch.current().full
        watch.check()  # the free space when it was said: read by the next check, not the logger
        assert watch.current().full
        disk.free_mib = 2049  # space was freed
        watch.check()
        assert not watch.current().full
    finally:
        stop.set()
        await running
    # Stopped, the watch listens no more.
    logging.getLogger("bot.chat.intake").error("late", exc_info=error)
    assert not watch.current().full


# -- imgbot check -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "free_mib, line",
    [
        (
            2048,
            "ok    disk: state_dir's filesystem has 2048 MiB free (a warning below 512 MiB, "
            "full below 16 MiB)",
        ),
        (
            300,
            "WARN  disk: state_dir's filesystem has 300 MiB free (warning below 512 MiB): free "
            "some space; below 16 MiB (disk.full_free_mib) it counts as full",
        ),
        (
            3,
            "FAIL  disk: state_dir's filesystem has 3.0 MiB free (limit 16 MiB): the disk counts "
            "as full and the bot cannot keep its state there; free some space",
        ),
    ],
)
def test_check_names_the_free_space_and_the_threshold(tmp_path, free_mib, line):
    disk = FakeDisk(free_mib)
    assert check_disk(tmp_path, SETTINGS, statvfs=disk).line() == line
    assert disk.asked == [tmp_path.resolve()]


def test_check_reads_the_folder_that_will_hold_a_missing_state_dir(tmp_path):
    disk = FakeDisk(2048)
    assert check_disk(tmp_path / "state" / "deeper", SETTINGS, statvfs=disk).status == "ok"
    assert disk.asked == [tmp_path.resolve()]


# -- a real small filesystem ----------------------------------------------------------------


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` of its own at `where` (needs root, as CI runs; skipped where mount
    is refused), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount refused here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture
def small_filesystem(tmp_path):
    with tmpfs(tmp_path / "small", "4m") as where:
        yield where


def fill(path: Path) -> None:
    """Write until the filesystem says no more (ENOSPC). Unbuffered: a buffered file keeps
    what it could not write and raises ENOSPC once more when it is closed."""
    with open(path, "wb", buffering=0) as out:
        with pytest.raises(OSError) as raised:
            while True:
                out.write(b"\0" * 65536)
                os.fsync(out.fileno())
    assert raised.value.errno == 28  # ENOSPC


def test_a_real_filesystem_filled_up_and_freed(small_filesystem, caplog):
    state_dir = small_filesystem / "state"
    state_dir.mkdir()
    settings = DiskSettings(warn_free_mib=3, full_free_mib=1)
    caplog.set_level(logging.INFO, logger="bot.ops.disk")
    db = sqlite3.connect(state_dir / "imgbot.sqlite3")
    db.execute("CREATE TABLE t (x BLOB)")
    db.commit()
    watch = DiskWatch(state_dir, settings)
    try:
        assert watch.check().level is Level.OK
        assert check_disk(state_dir, settings).status == "ok"

        fill(small_filesystem / "backup.tar")

        assert watch.check().full
        assert watch.current().reason.startswith("state_dir's filesystem has 0.0 MiB free")
        line = check_disk(state_dir, settings).line()
        assert line.startswith(
            "FAIL  disk: state_dir's filesystem has 0.0 MiB free (limit 1 MiB)"
        ), line
        # SQLite says so in the words the watch listens for.
        with pytest.raises(sqlite3.OperationalError) as raised:
            db.execute("INSERT INTO t VALUES (zeroblob(1000000))")
            db.commit()
        assert is_disk_full(raised.value), raised.value
        db.rollback()

        (small_filesystem / "backup.tar").unlink()

        assert watch.check().level is Level.OK
        assert check_disk(state_dir, settings).status == "ok"
        db.execute("INSERT INTO t VALUES (zeroblob(1000000))")
        db.commit()
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    assert [record.levelname for record in caplog.records if record.name == "bot.ops.disk"] == [
        "ERROR",
        "INFO",
    ]


@pytest.mark.synapse
async def test_a_running_bot_whose_state_dir_fills_up(make_settings, engine, tmp_path, caplog):
    """The whole bot, its state_dir on a 16 MiB filesystem of its own: /healthz and /metrics
    say full while a file fills it, and healthy again once it is deleted."""
    from bot.local.localserver import _free_port

    caplog.set_level(logging.INFO, logger="bot.ops.disk")
    with tmpfs(tmp_path / "small", "16m") as small:
        port = _free_port()
        settings = make_settings(
            state_dir=small / "state",
            metrics={"port": port},
            disk={"warn_free_mib": 4, "full_free_mib": 2},
        )
        base = f"http://127.0.0.1:{port}"

        async def scrape_text(page) -> dict:
            from prometheus_client.parser import text_string_to_metric_families

            return {
                sample.name: sample.value
                for family in text_string_to_metric_families(await page.text())
                for sample in family.samples
            }

        async def until(status: int, also=lambda metrics: True) -> tuple[dict, dict]:
            for _ in range(100):  # the watch reads every 10 s
                async with http.get(f"{base}/healthz") as response:
                    health = await response.json()
                    if response.status == status:
                        async with http.get(f"{base}/metrics") as page:
                            metrics = await scrape_text(page)
                        if also(metrics):
                            return health, metrics
                await asyncio.sleep(0.25)
            raise AssertionError(f"/healthz did not answer {status}: {health}")

        async with bot_running(settings, engine) as bot, aiohttp.ClientSession() as http:
            health, metrics = await until(200)
            assert health["state_dir_free_bytes"] > 4 * MIB
            assert metrics["imgbot_disk_full"] == 0

            fill(small / "backup.tar")

            # SQLite's "disk is full" (the sync token's save) may be heard before the next
            # reading: 503 at once, the free bytes read by the watch's next check.
            health, metrics = await until(
                503, lambda metrics: metrics["imgbot_state_dir_free_bytes"] < 2 * MIB
            )
            assert health["status"] == "unhealthy"
            assert any(
                problem.startswith("state_dir's filesystem has 0.0 MiB free")
                or problem.startswith("SQLite could not write in state_dir")
                for problem in health["problems"]
            ), health["problems"]
            assert metrics["imgbot_disk_full"] == 1
            assert metrics["imgbot_state_dir_free_bytes"] < 2 * MIB

            (small / "backup.tar").unlink()

            health, metrics = await until(200)
            assert health["problems"] == [] and metrics["imgbot_disk_full"] == 0
            assert not bot.done()
    # Said once each way, however many readings and failed writes there were meanwhile.
    assert [record.levelname for record in caplog.records if record.name == "bot.ops.disk"] == [
        "ERROR",
        "INFO",
    ]


def test_what_counts_as_a_write_refused_for_want_of_space():
    full, roomy = space(statvfs(1), 512, 16), space(statvfs(2048), 512, 16)
    io_error = sqlite3.OperationalError("disk I/O error")  # no -shm file could be made
    assert refused_for_space(sqlite3.OperationalError("database or disk is full"), roomy)
    assert refused_for_space(OSError(28, "No space left on device"), roomy)
    assert refused_for_space(io_error, full)
    assert not refused_for_space(io_error, roomy)  # a failing disk, not a full one
    assert not refused_for_space(io_error, None)
    assert not refused_for_space(sqlite3.OperationalError("database is locked"), full)
    assert not refused_for_space(OSError(13, "Permission denied"), full)
