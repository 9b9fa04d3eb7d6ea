"""The bot with `generation.backend: ray` on a real two-node Ray cluster (loopback only,
token authentication on), against the real Synapse, with the tiny model: the commands are
answered by workers on both nodes, a node killed while it makes a picture loses no command
and answers none twice, a node that joins gets a worker."""

from __future__ import annotations

import asyncio
import time

from generation.png import read_parameters

from tests.chatting import bot_running, usage_rows

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


async def test_commands_are_answered_by_workers_on_both_nodes(ray_cluster,
                                                              make_cluster_settings, alice):
    ray_cluster.start_head()
    ray_cluster.add_node()
    settings = make_cluster_settings(ray_cluster, limits={"per_user_queued": 8},
                                     generation={"max_batch": 1})
    async with bot_running(settings, None):
        room = await alice.room_with(BOT)
        sent = [await alice.send(room, f"!img lighthouse {i} --seed {i}") for i in range(6)]
        for event_id in sent:
            await alice.wait_reply(room, event_id, "m.image", timeout=180)
        (image,) = alice.replies(room, sent[0], "m.image")
        params = read_parameters(await alice.download(image["content"]["url"]))
    assert all(len(alice.replies(room, e, "m.image")) == 1 for e in sent)
    assert params["seed"] == 0 and params["size"] == "64x64"
    assert "(node " in params["worker"]  # the picture names the worker that made it
    rows = await usage_rows(settings)
    assert [r["status"] for r in rows] == ["ok"] * 6
    assert len(_nodes(rows)) == 2, [r["worker"] for r in rows]
