"""Faults, against the real homeserver: whatever happens to the homeserver, the bot or the
GPU in between, every accepted command gets exactly one answer.

The homeserver that is killed, or that has a small upload limit, is one of its own, so that
the other tests' homeserver is never disturbed.
"""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import threading
import time

import pytest
from PIL import Image

from bot import app
from bot.store import db as database
from bot.store import jobs
from bot.matrix import messages
from tests.helpers.chatting import Chat, bot_running, usage_rows
from tests.cli.test_cli import IMGBOT, ROOT, start_bot, write_config

pytestmark = pytest.mark.synapse

BOT = "@imgbot:localhost"


def images(chat: Chat, room: str, command: str) -> list[dict]:
    return chat.replies(room, command, "m.image")


class Gated:
    """The real engine, except that each generation waits until the test opens the gate:
    the test decides what happens while a picture is being made."""

    def __init__(self, engine):
        self.engine = engine
        self.started = threading.Event()
        self.gate = threading.Event()
        self.finished = threading.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, job):
        self.started.set()
        assert self.gate.wait(60), "the test never opened the gate"
        try:
            return self.engine.generate(job)
        finally:
            self.finished.set()


async def test_homeserver_killed_during_a_generation_then_back(own_server, make_settings, engine):
    server, alice = own_server
    gated = Gated(engine)
    settings = make_settings(matrix={"homeserver_url": server.url})
    async with bot_running(settings, gated):
        room = await alice.room_with(BOT)
        command = await alice.send(room, "!img a lighthouse in a storm --seed 3")
        assert await asyncio.to_thread(gated.started.wait, 30)
        server.kill()  # as a crash would: no goodbye to anyone
        gated.gate.set()  # the picture is finished while the homeserver is away
        # Longer than a quick reply's patience (15 s): the picture waits for the server.
        await asyncio.sleep(18)
        server.start()
        await alice.wait_reply(room, command, "m.image", timeout=120)
        await asyncio.sleep(2)  # a second copy, if one were coming, would be here by now
        await alice.sync(0)
    assert len(images(alice, room, command)) == 1
    (row,) = await usage_rows(settings)
    assert row["status"] == "ok" and row["images"] == 1


async def test_a_picture_over_the_upload_limit_is_sent_smaller(own_server, make_settings, engine):
    server, alice = own_server
    settings = make_settings(matrix={"homeserver_url": server.url})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        # A random-weight model's noisy 320×320 picture is about 300 KB as PNG.
        command = await alice.send(room, "!img static noise --seed 4 --size 320x320")
        (image,) = await alice.wait_reply(room, command, "m.image")
    content = image["content"]
    assert content["info"]["mimetype"] == "image/jpeg"
    assert "the server takes files up to 40 KiB" in content["body"]
    data = await alice.download(content["url"])
    assert len(data) <= 40 * 1024 and content["info"]["size"] == len(data)
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "JPEG"
        assert picture.size == (content["info"]["w"], content["info"]["h"])


async def test_a_send_repeated_after_a_crash_posts_nothing_twice(
    make_settings, engine, alice, tmp_path, monkeypatch
):
    """The bot dies after its picture was posted but before it wrote that down: the next
    start makes the picture again and sends it with the same transaction ID, which the
    homeserver recognises, so the room still sees one picture."""
    settings = make_settings(state_dir=tmp_path / "kept")
    sent = asyncio.Event()

    async def dies_before_writing(*args, **kwargs):
        sent.set()
        await asyncio.Event().wait()  # never returns: the "crash" is the cancel at stop

    monkeypatch.setattr(jobs, "finish", dies_before_writing)
    monkeypatch.setattr(app, "SHUTDOWN_GRACE_SECONDS", 1.0)
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        command = await alice.send(room, "!img a red kite --seed 21")
        await asyncio.wait_for(sent.wait(), 60)
    assert [r["status"] for r in await usage_rows(settings)] == ["queued"]

    monkeypatch.undo()
    async with bot_running(settings, engine):
        for _ in range(60):
            if [r["status"] for r in await usage_rows(settings)] == ["ok"]:
                break
            await asyncio.sleep(0.5)
    await alice.sync(0)
    assert len(images(alice, room, command)) == 1
    assert [r["status"] for r in await usage_rows(settings)] == ["ok"]


async def test_jobs_kept_at_a_stop_are_resumed_in_order_or_answered_when_too_old(
    make_settings, engine, alice, tmp_path
):
    settings = make_settings(state_dir=tmp_path / "kept", matrix={"admins": ["@alice:localhost"]})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        pause = await alice.send(room, "!img pause")
        await alice.wait_reply(room, pause, "m.notice")
        asked = [await alice.send(room, f"!img kept {i} --seed {i}") for i in range(3)]
        for command in asked:
            await alice.wait_reply(room, command, "m.notice")  # "Queued: … paused"
    assert [r["status"] for r in await usage_rows(settings)] == ["queued"] * 3

    # The first one was accepted two hours ago: too old to be made now.
    db = await database.connect(settings.state_dir / "imgbot.sqlite3")
    await db.execute(
        "UPDATE jobs SET created_at = created_at - 7200 WHERE event_id = ?", (asked[0],)
    )
    await db.commit()
    await db.close()
    async with bot_running(settings, engine):
        expired = (await alice.wait_reply(room, asked[0], "m.notice", count=2))[1]
        resume = await alice.send(room, "!img resume")
        for command in asked[1:]:
            await alice.wait_reply(room, command, "m.image")
    assert "not made" in expired["content"]["body"] and "2 hours old" in expired["content"]["body"]
    assert images(alice, room, asked[0]) == []
    order = [
        e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"]
        for e in alice.seen[room]
        if e["content"].get("msgtype") == "m.image"
    ]
    assert order == asked[1:]
    assert [len(alice.replies(room, c, "m.notice")) for c in asked] == [2, 1, 1]
    assert [r["status"] for r in await usage_rows(settings)] == ["error", "ok", "ok"]
    assert len(alice.replies(room, resume, "m.notice")) == 1


def breaking_engine(test_model, error: Exception):
    """A real engine whose UNet raises `error` on its first call, as a fault inside the
    pipeline would."""
    from generation.models.engine import Engine

    engine = Engine(test_model, "cpu")
    engine.load()
    broken = {"left": 1}

    def fault(module, args):
        if broken["left"]:
            broken["left"] -= 1
            raise error

    engine.pipe.unet.register_forward_pre_hook(fault)
    return engine


async def test_a_job_that_breaks_inside_the_pipeline_then_one_that_works(
    make_settings, test_model, alice
):
    engine = breaking_engine(test_model, ValueError("the scheduler was given a NaN"))
    settings = make_settings()
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img a broken one --seed 1")
        second = await alice.send(room, "!img a fine one --seed 2")
        (notice,) = await alice.wait_reply(room, first, "m.notice")
        await alice.wait_reply(room, second, "m.image")
    assert "the scheduler was given a NaN" in notice["content"]["body"]
    assert images(alice, room, first) == [] and len(images(alice, room, second)) == 1
    assert [r["status"] for r in await usage_rows(settings)] == ["error", "ok"]


async def test_a_device_fault_ends_the_run_and_the_job_is_made_after_a_restart(
    make_settings, test_model, engine, alice, tmp_path
):
    """A CUDA error leaves the device unusable for the whole process: the bot stops (for
    systemd to start a new one) and keeps the job, which the next run makes."""
    broken = breaking_engine(
        test_model, RuntimeError("CUDA error: an illegal memory access was encountered")
    )
    settings = make_settings(state_dir=tmp_path / "kept")
    stop, ready = asyncio.Event(), asyncio.Event()
    run = asyncio.create_task(app.run_bot(settings, broken, stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 60)
    room = await alice.room_with(BOT)
    command = await alice.send(room, "!img made by the next process --seed 6")
    with pytest.raises(app.DeviceFault, match="illegal memory access"):
        await asyncio.wait_for(run, 60)
    await alice.sync(0)
    assert alice.replies(room, command) == []  # no "Sorry": it is not the user's problem
    async with bot_running(settings, engine):
        await alice.wait_reply(room, command, "m.image")
    assert [r["status"] for r in await usage_rows(settings)] == ["ok"]


async def test_a_stop_lets_the_running_picture_finish_and_keeps_one_that_runs_late(
    make_settings, engine, alice, tmp_path, monkeypatch
):
    """A stop (what SIGTERM sets) waits for the running picture and sends it; a picture
    that takes longer than the deadline is not waited for, but kept and made at the next
    start."""
    settings = make_settings(state_dir=tmp_path / "kept")
    gated = Gated(engine)
    async with bot_running(settings, gated):
        room = await alice.room_with(BOT)
        finished = await alice.send(room, "!img finished in time --seed 1")
        assert await asyncio.to_thread(gated.started.wait, 30)
        # Leaving this block asks the bot to stop; the picture is done a second later.
        threading.Timer(1.0, gated.gate.set).start()
    await alice.wait_reply(room, finished, "m.image")

    monkeypatch.setattr(app, "SHUTDOWN_GRACE_SECONDS", 1.0)
    late = Gated(engine)
    async with bot_running(settings, late):
        command = await alice.send(room, "!img too slow for the deadline --seed 2")
        assert await asyncio.to_thread(late.started.wait, 30)
    assert images(alice, room, command) == []
    # The old worker thread ends; its result has no one waiting any more. (A real bot's
    # process has exited by now; here the engine is shared, so let that thread finish.)
    late.gate.set()
    assert await asyncio.to_thread(late.finished.wait, 30)
    async with bot_running(settings, engine):
        await alice.wait_reply(room, command, "m.image")
    assert [r["status"] for r in await usage_rows(settings)] == ["ok", "ok"]


async def test_a_picture_refused_as_too_large_is_sent_again_smaller(
    own_server, make_settings, engine, monkeypatch
):
    """The upload limit was not known at start (or changed since): the homeserver's
    M_TOO_LARGE makes the bot read it again and send a smaller file."""
    server, alice = own_server
    real = messages.upload_limit
    asked = []

    async def unknown_at_first(client):
        asked.append(1)
        return None if len(asked) == 1 else await real(client)

    monkeypatch.setattr(messages, "upload_limit", unknown_at_first)
    settings = make_settings(matrix={"homeserver_url": server.url})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        command = await alice.send(room, "!img static noise --seed 4 --size 320x320")
        (image,) = await alice.wait_reply(room, command, "m.image")
    assert len(asked) == 2
    assert image["content"]["info"]["mimetype"] == "image/jpeg"
    assert image["content"]["info"]["size"] <= 40 * 1024


async def test_unfinished_jobs_that_cannot_or_should_not_be_made_again_get_a_notice(
    make_settings, engine, alice, tmp_path
):
    """A job row this imgbot cannot read, and one that was started three times without
    an answer (it may be what crashes the bot), are answered with a notice, once."""
    settings = make_settings(state_dir=tmp_path / "kept", matrix={"admins": ["@alice:localhost"]})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        await alice.send(room, "!img pause")
        asked = [await alice.send(room, f"!img held {i} --seed {i}") for i in range(3)]
        for command in asked:
            await alice.wait_reply(room, command, "m.notice")
    db = await database.connect(settings.state_dir / "imgbot.sqlite3")
    await db.execute("UPDATE jobs SET job = '{\"prompt\": 1}' WHERE event_id = ?", (asked[0],))
    await db.execute("UPDATE jobs SET starts = 3 WHERE event_id = ?", (asked[1],))
    await db.commit()
    await db.close()
    async with bot_running(settings, engine):
        unreadable = (await alice.wait_reply(room, asked[0], "m.notice", count=2))[1]
        crashing = (await alice.wait_reply(room, asked[1], "m.notice", count=2))[1]
        await alice.send(room, "!img resume")
        await alice.wait_reply(room, asked[2], "m.image")
    assert "cannot read the request" in unreadable["content"]["body"]
    assert "stopped 3 times while making it" in crashing["content"]["body"]
    assert [r["status"] for r in await usage_rows(settings)] == ["error", "error", "ok"]


# ---- the bot as a process, stopped by signals ---------------------------------------------


def _config(path, homeserver, model, state):
    return write_config(path, homeserver, model, state, admins=["@alice:localhost"])


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
async def test_bot_stopped_with_three_jobs_queued_then_started_again(
    stop, homeserver, test_model, tmp_path, alice
):
    """SIGKILL: nothing is written at the end, yet nothing is lost. SIGTERM: a clean exit
    (status 0) that keeps the waiting jobs for the next start."""
    config = _config(tmp_path / "config.yaml", homeserver, test_model, tmp_path / "state")
    log = tmp_path / "bot.log"
    bot = await start_bot(config, log)
    try:
        room = await alice.room_with(BOT)
        pause = await alice.send(room, "!img pause")
        await alice.wait_reply(room, pause, "m.notice")
        asked = [await alice.send(room, f"!img queued {i} --seed {i}") for i in range(3)]
        for command in asked:
            await alice.wait_reply(room, command, "m.notice")
    finally:
        bot.send_signal(stop)
        code = await asyncio.wait_for(bot.wait(), 60)
    assert code == (0 if stop == signal.SIGTERM else -signal.SIGKILL), log.read_text()

    bot = await start_bot(config, log)
    try:
        resume = await alice.send(room, "!img resume")  # the pause outlived the restart
        for command in asked:
            await alice.wait_reply(room, command, "m.image", timeout=120)
        await alice.wait_reply(room, resume, "m.notice")
        await asyncio.sleep(2)
        await alice.sync(0)
    finally:
        bot.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(bot.wait(), 60) == 0, log.read_text()
    assert [len(images(alice, room, c)) for c in asked] == [1, 1, 1]
    assert [len(alice.replies(room, c, "m.notice")) for c in asked] == [1, 1, 1]
    order = [
        e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"]
        for e in alice.seen[room]
        if e["content"].get("msgtype") == "m.image"
    ]
    assert order == asked


# ---- a start that cannot work: a clear reason and a non-zero exit -------------------------


def _run(config_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*IMGBOT, "run", "-c", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_a_missing_model_folder_stops_the_start(homeserver, tmp_path):
    config = _config(
        tmp_path / "config.yaml", homeserver, tmp_path / "no-such-model", tmp_path / "state"
    )
    started = time.monotonic()
    result = _run(config)
    assert result.returncode == 2
    assert "generation.model" in result.stderr and "no-such-model" in result.stderr
    assert time.monotonic() - started < 60


def test_an_unreachable_homeserver_stops_the_start(test_model, tmp_path):
    class Nowhere:
        url = "http://127.0.0.1:9"  # discard: nothing listens there

    config = _config(tmp_path / "config.yaml", Nowhere, test_model, tmp_path / "state")
    result = _run(config)
    assert result.returncode == 1
    assert "cannot reach the homeserver at http://127.0.0.1:9" in result.stderr


def test_a_stalled_bot_is_ended_by_the_watchdog():
    """The watchdog thread ends the process with status 3 (systemd restarts it), even while
    the main thread is stuck."""
    script = (
        "import time\nfrom bot.ops.watchdog import Watchdog\n"
        "w = Watchdog(0.4)\nw.start()\ntime.sleep(30)\n"
    )
    result = subprocess.run(
        [IMGBOT[0], "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 3
