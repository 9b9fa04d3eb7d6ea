"""What a user sees in a room, against a real Synapse and the tiny real model."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import stat

import pytest
from PIL import Image

from bot.store import db as database
from generation.postprocess.png import read_parameters
from tests.helpers.chatting import bot_running, usage_rows

pytestmark = pytest.mark.synapse
BOT = "@imgbot:localhost"


async def test_picture_arrives_as_reply_with_parameters(make_settings, engine, alice):
    settings = make_settings()
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        command = await alice.send(
            room, "!img Albert Einstein, oil painting --seed 42 --steps 3 --size 128x96"
        )
        (image,) = await alice.wait_reply(room, command, "m.image")

    content = image["content"]
    assert image["sender"] == BOT
    assert content["info"]["mimetype"] == "image/png"
    assert (content["info"]["w"], content["info"]["h"]) == (128, 96)
    png = await alice.download(content["url"])
    assert content["info"]["size"] == len(png)
    assert "thumbnail_url" not in content["info"]  # small enough to be its own thumbnail
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.size == (128, 96)
    params = read_parameters(png)
    # The prompt stays out of the file unless compliance.embed_prompt is on.
    assert "prompt" not in params and "Albert Einstein" not in png.decode("latin-1")
    assert (params["seed"], params["steps"], params["size"]) == (42, 3, "128x96")
    assert params["model"] == engine.name
    # The caption says what was made and how long it took.
    caption = content["body"]
    for expected in ("seed 42", "3 steps", "128×96", " s (waited "):
        assert expected in caption
    assert content["m.mentions"] == {"user_ids": [alice.user_id]}


async def test_same_seed_same_picture(make_settings, engine, alice):
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img a red apple --seed 7")
        second = await alice.send(room, "!img a red apple --seed 7")
        (a,) = await alice.wait_reply(room, first, "m.image")
        (b,) = await alice.wait_reply(room, second, "m.image")
    pixels = [
        Image.open(io.BytesIO(await alice.download(e["content"]["url"]))).tobytes() for e in (a, b)
    ]
    assert pixels[0] == pixels[1]


@pytest.mark.parametrize(
    "command, says",
    [
        ("!img a cat --bogus 3", "Unknown option --bogus"),
        ("!img a cat --steps 500", "`--steps` must be from 1 to 50"),
        ("!img a cat --steps two", "`--steps` takes a whole number"),
        ("!img a cat --size 8192x8192", "too large: at most 2,359,296 pixels"),
        ("!img a cat --size 100x100", "multiples of 8"),
        ("!img --seed 4", "The prompt is empty"),
        ("!img " + "x" * 1001, "the limit is 1,000"),
        ("!img a cat --seed -1", "`--seed` must be from 0 to 4294967295"),
    ],
)
async def test_bad_input_gets_a_notice_and_no_picture(make_settings, engine, alice, command, says):
    settings = make_settings()
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        bad = await alice.send(room, command)
        (notice,) = await alice.wait_reply(room, bad, "m.notice")
        # The bot answers in order: once a later command is answered, the bad one is done.
        good = await alice.send(room, "!img a dog --seed 1")
        await alice.wait_reply(room, good, "m.image")
    assert says in notice["content"]["body"]
    assert alice.replies(room, bad) == [notice]
    rows = await usage_rows(settings)
    assert [r["status"] for r in rows] == ["rejected", "ok"]
    assert says in rows[0]["error"]


async def test_help(make_settings, engine, alice):
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        asked = await alice.send(room, "!img help")
        (notice,) = await alice.wait_reply(room, asked, "m.notice")
        options = await alice.send(room, "!img help options")
        (listed,) = await alice.wait_reply(room, options, "m.notice")
        # Read back from the homeserver: Synapse keeps and serves the formatted body.
        served = await alice.client.room_get_event(room, notice["event_id"])
    content = served.event.source["content"]
    assert content["format"] == "org.matrix.custom.html"
    assert "<code>!img &lt;prompt&gt;</code>" in content["formatted_body"]
    assert "<ul><li><code>!img again</code>" in content["formatted_body"]
    assert content["body"] == notice["content"]["body"]
    assert "`!img <prompt>`" in content["body"] and "<code>" not in content["body"]
    assert len(content["body"].splitlines()) <= 15  # a phone screen
    assert "`!img help options`" in content["body"]
    for option in ("--seed", "--steps", "--size", "--no", "--guidance"):
        assert f"<code>{option} " in listed["content"]["formatted_body"]
        assert f"`{option} " in listed["content"]["body"]


async def test_outsider_gets_nothing(make_settings, engine, alice, mallory):
    settings = make_settings()
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        await alice.client.room_invite(room, mallory.user_id)
        await mallory.client.join(room)
        ignored = await mallory.send(room, "!img a forged banknote")
        answered = await alice.send(room, "!img help")
        await alice.wait_reply(room, answered, "m.notice")
        # An invite from an outsider is declined, not accepted.
        own = await mallory.client.room_create(name="mallory's room", invite=[BOT])
        await mallory.wait_for(
            own.room_id,
            lambda events: any(
                e["type"] == "m.room.member"
                and e.get("state_key") == BOT
                and e["content"].get("membership") == "leave"
                for e in events
            ),
            timeout=30,
        )
    assert alice.replies(room, ignored) == []
    assert all(r["user_id"] != mallory.user_id for r in await usage_rows(settings))


async def test_notices_edits_and_own_messages_are_ignored(make_settings, engine, alice):
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        notice = await alice.client.room_send(
            room, "m.room.message", {"msgtype": "m.notice", "body": "!img from another bot"}
        )
        original = await alice.send(room, "!img a boat --seed 3")
        edit = await alice.send(
            room,
            "* !img a ship --seed 3",
            **{
                "m.new_content": {"msgtype": "m.text", "body": "!img a ship --seed 3"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": original},
            },
        )
        after = await alice.send(room, "!img help")
        await alice.wait_reply(room, original, "m.image")
        await alice.wait_reply(room, after, "m.notice")
    assert alice.replies(room, notice.event_id) == []
    assert alice.replies(room, edit) == []
    assert len(alice.replies(room, original)) == 1


async def test_four_commands_at_once_each_get_their_picture(make_settings, engine, alice):
    # One picture a call, so that the later ones wait behind the first (jobs made in one
    # batch with it would not be "ahead": see the batching test below).
    settings = make_settings(limits={"per_user_queued": 4}, generation={"max_batch": 1})
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        sent = await asyncio.gather(
            *(alice.send(room, f"!img lighthouse number {i} --seed {i}") for i in range(4))
        )
        for event_id in sent:
            await alice.wait_reply(room, event_id, "m.image")
    seeds = set()
    for event_id in sent:
        (image,) = alice.replies(room, event_id, "m.image")
        seeds.add(read_parameters(await alice.download(image["content"]["url"]))["seed"])
    assert seeds == {0, 1, 2, 3}
    # Their waits are far shorter than progress.interval_seconds: they look like quick
    # jobs (typing), and a status comes only to one still unanswered after the interval.
    notices = [n for e in sent for n in alice.replies(room, e, "m.notice")]
    assert all(n["content"]["body"].startswith(("Queued: ", "Making", "Done")) for n in notices), (
        notices
    )
    rows = await usage_rows(settings)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert all(r["generation_seconds"] > 0 and r["queue_seconds"] >= 0 for r in rows)
    assert {r["room_id"] for r in rows} == {room}
    assert all(r["images"] == 1 and r["model"] == engine.name for r in rows)


async def test_per_user_queue_limit(make_settings, engine, alice):
    settings = make_settings(
        limits={"per_user_queued": 1}, generation={"size": "512x512", "steps": 8}
    )
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        first = await alice.send(room, "!img slow one --seed 1")
        second = await alice.send(room, "!img too many --seed 2")
        (refusal,) = await alice.wait_reply(room, second, "m.notice")
        await alice.wait_reply(room, first, "m.image")
    assert "limit is 1" in refusal["content"]["body"]
    assert alice.replies(room, second, "m.image") == []


async def test_restart_answers_nothing_twice_and_keeps_the_device(
    make_settings, engine, alice, tmp_path
):
    settings = make_settings(state_dir=tmp_path / "kept")
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        before = await alice.send(room, "!img before the restart --seed 1")
        await alice.wait_reply(room, before, "m.image")
    credentials = settings.state_dir / "credentials.json"
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    device = json.loads(credentials.read_text())["device_id"]

    while_down = await alice.send(room, "!img while it was down --seed 2")
    async with bot_running(settings, engine):
        after = await alice.send(room, "!img after the restart --seed 3")
        await alice.wait_reply(room, after, "m.image")
        await alice.wait_reply(room, while_down, "m.image")
    assert json.loads(credentials.read_text())["device_id"] == device
    for event_id in (before, while_down, after):
        assert len(alice.replies(room, event_id, "m.image")) == 1


async def test_lost_sync_token_skips_history(make_settings, engine, alice, tmp_path):
    settings = make_settings(state_dir=tmp_path / "kept")
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        answered = await alice.send(room, "!img answered once --seed 1")
        await alice.wait_reply(room, answered, "m.image")
    unanswered = await alice.send(room, "!img sent while its token was lost --seed 2")
    db = await database.connect(settings.state_dir / "imgbot.sqlite3")
    await db.execute("DELETE FROM bot_state")
    await db.commit()
    await db.close()
    async with bot_running(settings, engine):
        later = await alice.send(room, "!img help")
        await alice.wait_reply(room, later, "m.notice")
    assert len(alice.replies(room, answered)) == 1
    assert alice.replies(room, unanswered) == []


async def test_reply_in_thread_stays_in_thread(make_settings, engine, alice):
    async with bot_running(make_settings(), engine):
        room = await alice.room_with(BOT)
        root = await alice.send(room, "a thread about apples")
        command = await alice.send(
            room,
            "!img an apple --seed 5",
            **{
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": root},
                }
            },
        )
        (image,) = await alice.wait_reply(room, command, "m.image")
    relation = image["content"]["m.relates_to"]
    assert relation["rel_type"] == "m.thread" and relation["event_id"] == root


async def test_default_rate_limits_are_waited_out(tmp_path, make_settings, engine, caplog):
    """Synapse's own defaults (10 messages in a burst, then one per 5 s): the bot waits as
    long as the server says, and every command still gets exactly one picture. The queue is
    paused while they come in, so each also gets a "Queued" status, edited as it goes."""
    from bot.local.localserver import LocalHomeserver
    from tests.helpers.chatting import Chat
    from tests.conftest import PASSWORD

    with LocalHomeserver(tmp_path / "strict", rate_limits=True) as strict:
        for name in ("imgbot", "alice"):
            strict.register(name, PASSWORD)
        settings = make_settings(
            matrix={"homeserver_url": strict.url, "admins": ["@alice:localhost"]},
            limits={"per_user_queued": 10},
        )
        alice = await Chat.login(strict, "alice", PASSWORD)
        try:
            async with bot_running(settings, engine):
                room = await alice.room_with(BOT)
                await alice.send(room, "!img pause")
                asked = [await alice.send(room, f"!img picture {i} --seed {i}") for i in range(6)]
                await alice.send(room, "!img resume")
                for event_id in asked:
                    await alice.wait_reply(room, event_id, "m.image", timeout=120)
        finally:
            await alice.close()
    assert all(len(alice.replies(room, e, "m.image")) == 1 for e in asked)
    assert any("429" in r.getMessage() for r in caplog.records), "no 429 was ever returned"
    # With progress on (status notices, their edits, typing), no send failed or gave up.
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failed, failed


async def test_commands_behind_a_long_gap_are_answered_after_a_restart(
    make_settings, engine, alice, tmp_path
):
    """More messages arrive while the bot is down than one sync returns: the bot fetches
    the gap instead of skipping the commands in it."""
    settings = make_settings(state_dir=tmp_path / "kept")
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
    early = await alice.send(room, "!img help")
    await asyncio.gather(*(alice.send(room, f"chatter {i}") for i in range(120)))
    late = await alice.send(room, "!img help")
    async with bot_running(settings, engine):
        await alice.wait_reply(room, late, "m.notice")
        await alice.wait_reply(room, early, "m.notice")
    assert len(alice.replies(room, early)) == 1 and len(alice.replies(room, late)) == 1


async def test_commands_waiting_together_are_made_as_one_batch(make_settings, engine, alice):
    """Jobs of one shape that wait together share a pipeline call; each still gets its
    own picture, with its own seed, and the caption says the time was a batch's."""
    settings = make_settings(
        compliance={"embed_prompt": True},
        matrix={"admins": ["@alice:localhost"]},
        limits={"per_user_queued": 10},
        generation={"max_batch": 4},
    )
    async with bot_running(settings, engine):
        room = await alice.room_with(BOT)
        await alice.send(room, "!img pause")
        asked = [await alice.send(room, f"!img batch member {i} --seed {40 + i}") for i in range(4)]
        for command in asked:
            await alice.wait_reply(room, command, "m.notice")
        await alice.send(room, "!img resume")
        pictures = [(await alice.wait_reply(room, c, "m.image"))[0] for c in asked]
        alone = await alice.send(room, "!img batch member 0 --seed 40")
        (solo,) = await alice.wait_reply(room, alone, "m.image")
    batch_seconds = set()
    for i, picture in enumerate(pictures):
        body = picture["content"]["body"]
        whole, each = re.search(
            r"([\d.]+) s for a batch of 4 pictures, ([\d.]+) s each", body
        ).groups()
        # The whole is printed to 0.1 s and the share to 0.01 s: they agree to within
        # half of each rounding step.
        assert abs(float(whole) / 4 - float(each)) <= 0.05 / 4 + 0.005 + 1e-9, body
        batch_seconds.add(whole)
        params = read_parameters(await alice.download(picture["content"]["url"]))
        assert params["seed"] == 40 + i and params["prompt"] == f"batch member {i}"
    # The usage log keeps each job's share: the four add up to the one call's time.
    shares = [r["generation_seconds"] for r in await usage_rows(settings) if r["event_id"] in asked]
    (whole,) = batch_seconds
    assert abs(sum(shares) - float(whole)) <= 0.1 and max(shares) - min(shares) < 1e-6
    assert "batch" not in solo["content"]["body"].split(" — ")[1]
    first = Image.open(io.BytesIO(await alice.download(pictures[0]["content"]["url"])))
    again = Image.open(io.BytesIO(await alice.download(solo["content"]["url"])))
    # The same seed alone makes the same picture (batched kernels may differ in the last bit).
    pairs = zip(first.convert("L").getdata(), again.convert("L").getdata())
    assert max(abs(a - b) for a, b in pairs) <= 2


async def test_two_devices_take_jobs_from_one_queue(make_settings, engine, test_model, alice):
    """generation.devices: one worker per device, each with its own pipeline (here two CPU
    engines stand in for two GPUs)."""
    from generation.models.engine import Engine

    second = Engine(test_model, "cpu")
    second.load()
    used = []

    class Counting:
        def __init__(self, inner, name):
            self.inner, self.label = inner, name

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

        def generate(self, job):
            used.append(self.label)
            return self.inner.generate(job)

    settings = make_settings(
        limits={"per_user_queued": 10},
        generation={"max_batch": 1},
        matrix={"admins": ["@alice:localhost"]},
    )
    async with bot_running(settings, [Counting(engine, "one"), Counting(second, "two")]):
        room = await alice.room_with(BOT)
        await alice.send(room, "!img pause")  # so that all four wait, and both workers wake
        asked = [
            await alice.send(room, f"!img device test {i} --seed {i} --size 256x256")
            for i in range(4)
        ]
        for command in asked:
            await alice.wait_reply(room, command, "m.notice")
        await alice.send(room, "!img resume")
        for command in asked:
            await alice.wait_reply(room, command, "m.image")
    assert sorted(set(used)) == ["one", "two"] and len(used) == 4
