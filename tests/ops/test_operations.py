"""What an operator sees of a running bot: health and metrics, the privacy of the usage log,
and a clear end when the homeserver no longer accepts the bot's token."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets

import aiohttp
import pytest
from nio import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from bot.store import db as database
from bot.app import run_bot
from bot.local.localserver import _free_port
from bot.matrix.sync import TokenRejected
from tests.helpers.chatting import bot_running, usage_rows

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_healthz_and_metrics_of_a_running_bot(make_settings, engine, alice):
    port = _free_port()
    settings = make_settings(metrics={"port": port})
    base = f"http://127.0.0.1:{port}"
    async with bot_running(settings, engine), aiohttp.ClientSession() as http:
        room = await alice.room_with(BOT)
        command = await alice.send(room, "!img a weather vane --seed 8")
        await alice.wait_reply(room, command, "m.image")
        refused = await alice.send(room, "!img a weather vane --steps 9999")
        await alice.wait_reply(room, refused, "m.notice")
        async with http.get(f"{base}/healthz") as response:
            health = await response.json()
            assert response.status == 200, health
        for _ in range(20):  # the usage row and the counters follow the sent picture
            async with http.get(f"{base}/metrics") as response:
                metrics = samples(await response.text())
            if metrics.get(("imgbot_jobs_total", (("status", "ok"),))) == 1:
                break
            await asyncio.sleep(0.25)
    assert health["status"] == "ok" and health["worker_alive"] and health["queue_depth"] == 0
    assert metrics[("imgbot_jobs_total", (("status", "ok"),))] == 1
    assert metrics[("imgbot_jobs_total", (("status", "rejected"),))] == 1
    assert metrics[("imgbot_pictures_total", ())] == 1
    assert metrics[("imgbot_generation_seconds_count", ())] == 1
    assert metrics[("imgbot_queue_wait_seconds_count", ())] == 1
    assert metrics[("imgbot_queue_depth", ())] == 0
    assert metrics[("imgbot_worker_busy_seconds_total", ())] > 0
    assert metrics[("imgbot_worker_idle_while_waiting_seconds_total", ())] >= 0
    # Per worker (a local one is named by its device): up, its jobs, its busy seconds.
    assert metrics[("imgbot_workers_up", ())] == 1 and health["workers_up"] == 1
    assert metrics[("imgbot_gpu_worker_up", (("worker", "cpu"),))] == 1
    assert metrics[("imgbot_gpu_worker_jobs_total", (("worker", "cpu"),))] == 1
    assert metrics[("imgbot_gpu_worker_busy_seconds_total", (("worker", "cpu"),))] > 0
    (row,) = [r for r in await usage_rows(settings) if r["status"] == "ok"]
    assert row["worker"] == "cpu"


async def test_without_stored_prompts_the_log_keeps_only_a_hash(make_settings, engine, alice):
    settings = make_settings(usage={"store_prompts": False})
    prompt = "the secret product launch poster"
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        command = await alice.send(room, f"!img {prompt} --seed 5")
        await alice.wait_reply(room, command, "m.image")
        await asyncio.sleep(0.5)
    (row,) = await usage_rows(settings)
    assert row["status"] == "ok"
    assert row["prompt"] == "sha256:" + hashlib.sha256(prompt.encode()).hexdigest()
    assert prompt not in json.dumps(row)
    # The queued copy, which a restart would need, is gone once the job was answered.
    db = await database.connect(settings.state_dir / "imgbot.sqlite3")
    try:
        assert await (await db.execute("SELECT * FROM jobs")).fetchall() == []
    finally:
        await db.close()


async def test_a_revoked_token_ends_the_bot_with_a_clear_reason(make_settings, engine, homeserver):
    # A user of its own: with a token and no password, the bot could not replace a
    # cross-signing identity that other tests left on the shared user.
    settings = make_settings(
        matrix={"password": None, "access_token": None, **_fresh_token(homeserver)}
    )
    bot = settings.matrix.user_id
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_bot(settings, engine, stop=stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 60)
    saved = json.loads((settings.state_dir / "credentials.json").read_text())
    revoker = AsyncClient(homeserver.url, bot)
    revoker.restore_login(bot, saved["device_id"], saved["access_token"])
    await revoker.logout()
    await revoker.close()
    with pytest.raises(TokenRejected, match="rejected the access token"):
        await asyncio.wait_for(task, 90)


def _fresh_token(homeserver) -> dict:
    from tests.conftest import PASSWORD

    localpart = f"imgbot-{secrets.token_hex(4)}"
    homeserver.register(localpart, PASSWORD)
    return {
        "user_id": f"@{localpart}:{homeserver.server_name}",
        "access_token": homeserver.login(localpart, PASSWORD)["access_token"],
    }
