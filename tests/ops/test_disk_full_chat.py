"""A full disk loses nothing, against the real homeserver: the bot's state_dir on a small
filesystem of its own (a tmpfs; CI runs as root) fills up while people send commands.

Every command sent while it is full gets exactly one answer once the space is back, a job
accepted before is delivered while it is full, its usage row is written afterwards, and the
database passes SQLite's integrity check; also when the bot is killed while the disk is full
and started again once there is space."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import aiohttp
import pytest
import yaml

from bot.local.localserver import _free_port
from tests.app.test_faults import Gated
from tests.helpers.chatting import Chat, bot_running, usage_rows
from tests.cli.test_cli import start_bot, write_config
from tests.ops.test_disk import fill, tmpfs

pytestmark = pytest.mark.synapse

BOT = "@imgbot:localhost"
DISK = {"warn_free_mib": 4, "full_free_mib": 2}


async def healthz(port: int, until=lambda status, body: True, seconds: float = 60) -> dict:
    """/healthz's body once `until(status, body)` holds (the watch reads every 10 s)."""
    last = None
    async with aiohttp.ClientSession() as http:
        for _ in range(int(seconds / 0.25)):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    last = (response.status, await response.json())
            except aiohttp.ClientConnectionError:
                last = None  # not listening yet
            if last is not None and until(*last):
                return last[1]
            await asyncio.sleep(0.25)
    raise AssertionError(f"/healthz never got there: {last}")


def integrity(state_dir: Path) -> str:
    db = sqlite3.connect(state_dir / "imgbot.sqlite3")
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


async def answers(alice: Chat, room: str, commands: list[str]) -> list[list[str]]:
    """Each command's answers as the room shows them: its pictures, and any notice that is
    not the status line the bot edits while a job waits."""
    await asyncio.sleep(2)  # an answer sent twice would have arrived by now
    await alice.sync(0)
    return [
        [
            reply["content"]["msgtype"]
            for reply in alice.replies(room, command)
            if reply["content"]["msgtype"] == "m.image"
            or "disk" in reply["content"].get("body", "")
        ]
        for command in commands
    ]


async def test_commands_sent_while_the_disk_is_full_are_each_answered_once(
    make_settings, engine, tmp_path, alice
):
    port = _free_port()
    gated = Gated(engine)
    with tmpfs(tmp_path / "small", "16m") as small:
        settings = make_settings(state_dir=small / "state", metrics={"port": port}, disk=DISK)
        async with bot_running(settings, gated) as bot:
            room = await alice.room_with(BOT)
            before = await alice.send(room, "!img made before the disk fills --seed 1")
            assert await asyncio.to_thread(gated.started.wait, 60)

            fill(small / "backup.tar")
            body = await healthz(
                port,
                lambda status, body: (
                    status == 503 and body["state_dir_free_bytes"] < 2 * 1024 * 1024
                ),
            )
            assert body["problems"], body
            during = [
                await alice.send(room, f"!img sent while full {i} --seed {i + 2}") for i in range(3)
            ]
            body = await healthz(port, lambda s, b: b["rooms_waiting_for_disk"] == 1)
            assert body["status"] == "unhealthy"  # the other two wait behind it in the lane

            # The job accepted before is delivered while the disk is still full; what it
            # records waits for space.
            gated.gate.set()
            await alice.wait_reply(room, before, "m.image", timeout=60)
            body = await healthz(port, lambda s, b: b["writes_put_off"] >= 1)
            assert body["status"] == "unhealthy"
            assert await answers(alice, room, during) == [[], [], []]

            (small / "backup.tar").unlink()
            for command in during:
                await alice.wait_reply(room, command, "m.image", timeout=90)
            body = await healthz(port, lambda status, body: status == 200)
            assert body["rooms_waiting_for_disk"] == body["writes_put_off"] == 0
            assert await answers(alice, room, [before, *during]) == [["m.image"]] * 4
            assert not bot.done()
        assert integrity(settings.state_dir) == "ok"
        rows = await usage_rows(settings)
        assert [row["status"] for row in rows] == ["ok"] * 4
        assert [row["images"] for row in rows] == [1] * 4


async def test_killed_while_the_disk_is_full_then_started_with_space(
    homeserver, test_model, tmp_path, alice
):
    port = _free_port()
    with tmpfs(tmp_path / "small", "16m") as small:
        state = small / "state"
        config = write_config(tmp_path / "config.yaml", homeserver, test_model, state)
        written = yaml.safe_load(config.read_text())
        config.write_text(yaml.safe_dump({**written, "metrics": {"port": port}, "disk": DISK}))
        log = tmp_path / "bot.log"
        bot = await start_bot(config, log)
        try:
            room = await alice.room_with(BOT)  # joined: the bot syncs
            first = await alice.send(room, "!img before --seed 1")
            await alice.wait_reply(room, first, "m.image", timeout=120)

            fill(small / "backup.tar")
            await healthz(port, lambda status, body: status == 503)
            during = [
                await alice.send(room, f"!img while full {i} --seed {i + 2}") for i in range(2)
            ]
            await healthz(port, lambda s, b: b["rooms_waiting_for_disk"] == 1)
        finally:
            bot.send_signal(signal.SIGKILL)
            await asyncio.wait_for(bot.wait(), 60)
        (small / "backup.tar").unlink()

        bot = await start_bot(config, log)
        try:
            for command in during:
                await alice.wait_reply(room, command, "m.image", timeout=120)
            assert await answers(alice, room, [first, *during]) == [["m.image"]] * 3
        finally:
            bot.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bot.wait(), 60) == 0, log.read_text()
        assert integrity(state) == "ok"
        db = sqlite3.connect(state / "imgbot.sqlite3")
        try:
            statuses = [row[0] for row in db.execute("SELECT status FROM usage ORDER BY id")]
        finally:
            db.close()
        assert statuses == ["ok"] * 3


async def closed(connecting) -> None:
    await (await connecting).close()


def test_a_start_whose_writes_the_full_disk_refuses_says_so_and_asks_for_a_retry(
    homeserver, test_model, tmp_path
):
    """A database closed cleanly must make its -shm file again (SQLite says "disk I/O
    error" when it cannot): on a full disk the start stops with a reason and the exit status
    that has systemd try again."""
    import subprocess

    from bot.store import db as database
    from tests.cli.test_cli import IMGBOT, ROOT

    with tmpfs(tmp_path / "small", "4m") as small:
        state = small / "state"
        state.mkdir(mode=0o700)
        asyncio.run(closed(database.connect(state / "imgbot.sqlite3")))  # made, then closed
        config = write_config(tmp_path / "config.yaml", homeserver, test_model, state)
        fill(small / "backup.tar")
        run = subprocess.run(
            [*IMGBOT, "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    assert run.returncode == 1, run.stderr
    assert f"state_dir {state} is out of disk space" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
