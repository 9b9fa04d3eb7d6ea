"""The bot with `generation.backend: ray` on a real two-node Ray cluster (loopback only,
token authentication on), against the real Synapse, with the tiny model: the commands are
answered by workers on both nodes, a node killed while it makes a picture loses no command
and answers none twice, a node that joins gets a worker."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time

import aiohttp

from generation.postprocess.png import read_parameters

from tests.chat.jobs.test_progress_matrix import edits_of
from tests.helpers.chatting import bot_running, usage_rows
from tests.cluster.raycluster import free_port

BOT = "@imgbot:localhost"


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.2)


def _nodes(rows: list[dict]) -> set[str]:
    """The Ray nodes that made the pictures (a worker's name ends with its node)."""
    return {row["worker"].rsplit("(node ", 1)[1] for row in rows if row["worker"]}


async def test_commands_are_answered_by_workers_on_both_nodes(
    ray_cluster, make_cluster_settings, alice, caplog
):
    caplog.set_level(logging.INFO)
    ray_cluster.start_head()
    ray_cluster.add_node()
    settings = make_cluster_settings(
        ray_cluster,
        limits={"per_user_queued": 8},
        generation={"max_batch": 1},
        progress={"interval_seconds": 1},
        compliance={"embed_worker": True},
    )
    async with bot_running(settings, None):
        room = await alice.room_with(BOT)
        # Both loaded first: else the first one up may make every quick picture alone.
        await _until(lambda: caplog.text.count(" is up (") >= 2, 120, "both workers up")
        sent = [await alice.send(room, f"!img lighthouse {i} --seed {i}") for i in range(6)]
        for event_id in sent:
            await alice.wait_reply(room, event_id, "m.image", timeout=180)
        (image,) = alice.replies(room, sent[0], "m.image")
        params = read_parameters(await alice.download(image["content"]["url"]))
        # A slow picture on a remote worker: its steps reach the room's status edits.
        slow = await alice.send(room, "!img a slow one --steps 50 --size 640x640")
        (status,) = await alice.wait_reply(room, slow, "m.notice", timeout=180)
        await alice.wait_reply(room, slow, "m.image", timeout=180)
        await alice.wait_for(
            room,
            lambda _: any(
                text.startswith("Done") for text in edits_of(alice, room, status["event_id"])
            ),
        )
    said = [status["content"]["body"], *edits_of(alice, room, status["event_id"])]
    steps = [int(m.group(1)) for text in said if (m := re.search(r"step (\d+) of 50", text))]
    assert len(steps) >= 2 and steps == sorted(steps) and steps[0] < steps[-1], said
    assert all(len(alice.replies(room, e, "m.image")) == 1 for e in sent)
    assert params["seed"] == 0 and params["size"] == "64x64"
    assert "(node " in params["worker"]  # the picture names the worker that made it
    rows = await usage_rows(settings)
    assert [r["status"] for r in rows] == ["ok"] * 7  # the six, and the slow one
    assert len(_nodes(rows)) == 2, [r["worker"] for r in rows]


async def test_a_node_killed_while_it_makes_a_picture_loses_no_command(
    ray_cluster, make_cluster_settings, alice, caplog
):
    """SIGKILL of the second node's raylet (its whole process group) while it makes a
    picture, with more jobs queued: every command is answered exactly once, the lost job by
    the worker that is left."""
    caplog.set_level(logging.INFO)
    ray_cluster.start_head()
    second = ray_cluster.add_node()
    # Pictures of about a second each on one thread, so that the kill lands in one.
    settings = make_cluster_settings(
        ray_cluster, limits={"per_user_queued": 8}, generation={"max_batch": 1}
    )
    async with bot_running(settings, None):
        room = await alice.room_with(BOT)
        await _until(lambda: caplog.text.count(" is up (") >= 2, 120, "both workers up")
        sent = [
            await alice.send(room, f"!img harbour {i} --seed {i} --steps 20 --size 256x256")
            for i in range(6)
        ]
        await alice.wait_reply(room, sent[0], "m.image", timeout=180)
        await asyncio.sleep(0.3)  # both workers are at their next picture now
        ray_cluster.kill(second)
        for event_id in sent:
            await alice.wait_reply(room, event_id, "m.image", timeout=240)
        await asyncio.sleep(2)  # room for a second answer, were one to come
    assert "was lost while making job(s)" in caplog.text
    assert [len(alice.replies(room, e, "m.image")) for e in sent] == [1] * 6
    rows = await usage_rows(settings)
    assert [r["status"] for r in rows] == ["ok"] * 6


async def test_with_no_worker_jobs_wait_and_nodes_that_join_get_workers(
    ray_cluster, make_cluster_settings, alice, caplog
):
    """A head without GPU workers: a command waits, told so, `!img queue` and /healthz say
    so; a node that joins gets a worker and makes the picture; a second one gets the other
    worker, and both then answer commands."""
    caplog.set_level(logging.INFO)
    ray_cluster.start_head(worker=False)
    port = free_port()
    settings = make_cluster_settings(
        ray_cluster,
        limits={"per_user_queued": 8},
        generation={"max_batch": 1},
        metrics={"port": port},
    )
    async with bot_running(settings, None), aiohttp.ClientSession() as http:
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img a first picture --seed 1")
        (status,) = await alice.wait_reply(room, first, "m.notice")
        assert status["content"]["body"].startswith(
            "Queued: no GPU worker is available right now"
        ), status
        asked = await alice.send(room, "!img queue")
        (answer,) = await alice.wait_reply(room, asked, "m.notice")
        assert "No GPU worker is available right now" in answer["content"]["body"]
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            health = await response.json()
        assert response.status == 503 and health["workers_up"] == 0
        assert any("no GPU worker is up (0 of 2)" in p for p in health["problems"]), health

        ray_cluster.add_node()
        await alice.wait_reply(room, first, "m.image", timeout=180)
        ray_cluster.add_node()
        await _until(lambda: caplog.text.count(" is up (") >= 2, 120, "a worker on each node")
        sent = [
            await alice.send(room, f"!img lighthouse {i} --seed {i} --steps 8") for i in range(6)
        ]
        for event_id in sent:
            await alice.wait_reply(room, event_id, "m.image", timeout=180)
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
    rows = await usage_rows(settings)
    assert len(_nodes(rows)) == 2, [r["worker"] for r in rows]
    assert [r["status"] for r in rows] == ["ok"] * 7


async def test_a_host_without_the_model_folder_has_its_worker_fail_and_the_rest_go_on(
    ray_cluster, make_cluster_settings, test_model, alice, caplog
):
    caplog.set_level(logging.INFO)
    ray_cluster.start_head()
    ray_cluster.add_node(hide=test_model.parent)  # this host lacks the models
    settings = make_cluster_settings(ray_cluster, generation={"max_batch": 1})
    async with bot_running(settings, None):
        room = await alice.room_with(BOT)
        await _until(
            lambda: "a GPU worker could not start" in caplog.text,
            120,
            "the worker on the host without the folder fails",
        )
        sent = [await alice.send(room, f"!img a lighthouse {i} --seed {i}") for i in range(3)]
        for event_id in sent:
            await alice.wait_reply(room, event_id, "m.image", timeout=180)
    failure = next(
        r.getMessage() for r in caplog.records if "a GPU worker could not start" in r.getMessage()
    )
    assert f"folder {test_model} is not on this host" in failure, failure
    assert f"the worker on {socket.gethostname()} could not start" in failure, failure
    rows = await usage_rows(settings)
    assert [r["status"] for r in rows] == ["ok"] * 3 and len(_nodes(rows)) == 1


async def test_the_head_going_away_and_back_loses_no_command(
    ray_cluster, make_cluster_settings, alice, caplog
):
    """The whole cluster gone (head and node killed): the bot keeps its queue and its chat
    side, a command waits; a new head at the same address, and the command is answered."""
    caplog.set_level(logging.INFO)
    ray_cluster.start_head()
    settings = make_cluster_settings(ray_cluster, workers=1, generation={"max_batch": 1})
    async with bot_running(settings, None):
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img before --seed 1")
        await alice.wait_reply(room, first, "m.image", timeout=180)
        for node in ray_cluster.alive():
            ray_cluster.kill(node)
        waiting = await alice.send(room, "!img while the cluster is away --seed 2")
        asked = await alice.send(room, "!img help")  # the chat side goes on meanwhile
        await alice.wait_reply(room, asked, "m.notice", timeout=30)
        await _until(lambda: "is not usable" in caplog.text, 120, "the bot notices")
        assert alice.replies(room, waiting, "m.image") == []
        await asyncio.to_thread(ray_cluster.start_head)
        await alice.wait_reply(room, waiting, "m.image", timeout=240)
    rows = await usage_rows(settings)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert len(alice.replies(room, waiting, "m.image")) == 1
