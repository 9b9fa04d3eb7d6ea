"""`imgbot demo`: the showcase, end to end on real parts, on a fresh machine.

A throw-away Synapse, the bot, and a demo user who sends "Albert Einstein" in four styles.
The pictures come back through Matrix like any user's would; the demo saves them, a
contact sheet and a timing table, then stops everything.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nio import AsyncClient, DownloadError, RoomCreateResponse, RoomSendResponse, SyncResponse

from bot.store import db as database
from bot.app import load_engine, run_bot
from bot.config import ConfigError, Settings, load_settings
from bot.local.localserver import LocalHomeserver
from bot.chat.jobs.sheet import contact_sheet as tile

log = logging.getLogger(__name__)

STYLES = ("oil painting", "watercolor", "pencil sketch", "studio photograph")
SUBJECT = "Albert Einstein"
TIMEOUT_PER_PICTURE = 300.0


@dataclass
class Shot:
    prompt: str
    seed: int
    event_id: str = ""
    sent_at: float = 0.0
    received_at: float = 0.0
    file: Path | None = None
    queue_seconds: float = 0.0
    generation_seconds: float = 0.0

    @property
    def latency(self) -> float:
        return self.received_at - self.sent_at


def showcase(count: int) -> list[Shot]:
    return [Shot(f"{SUBJECT}, {STYLES[i % len(STYLES)]}", seed=1000 + i) for i in range(count)]


def run_demo(model: str | None, count: int, out: Path, config: str | None = None) -> int:
    if count < 1:
        raise SystemExit("imgbot demo: --count must be at least 1")
    with tempfile.TemporaryDirectory(prefix="imgbot-demo-") as tmp:
        work = Path(tmp)
        generation: dict = {}
        if config is not None:
            try:
                loaded = load_settings(config, secrets=False)  # the demo logs in nowhere
                generation = loaded.generation.model_dump(exclude_none=True)
            except ConfigError as exc:
                raise SystemExit(f"imgbot demo: {exc}") from None
        model = model or generation.get("model")
        if model is None:
            from generation.testing.tiny import make_test_model

            print(
                "No model given: using a tiny random-weight test model. Its pictures are "
                "noise; pass --model DIR for real ones."
            )
            model = make_test_model(work / "random-weight-test-model", "sd")
        out.mkdir(parents=True, exist_ok=True)
        print("Starting a throw-away Synapse homeserver…")
        with LocalHomeserver(work / "synapse") as server:
            return asyncio.run(
                _showcase(server, {**generation, "model": Path(model)}, count, out, work)
            )


async def _showcase(
    server: LocalHomeserver, generation: dict, count: int, out: Path, work: Path
) -> int:
    bot_password, user_password = "demo-bot-password", "demo-user-password"
    bot_id = server.register("imgbot", bot_password)
    user_id = server.register("demo", user_password)
    settings = Settings(
        matrix={"homeserver_url": server.url, "user_id": bot_id, "password": bot_password},
        state_dir=work / "state",
        generation=generation,
        limits={"per_user_queued": count, "queue_size": max(count, 100)},
        compliance={"embed_prompt": True},  # a showcase: its pictures say what they show
    )
    print(f"Loading {generation['model'].name}…")
    engine = await asyncio.to_thread(load_engine, settings)
    stop, ready = asyncio.Event(), asyncio.Event()
    bot_task = asyncio.create_task(run_bot(settings, engine, stop=stop, ready=ready))
    user = AsyncClient(server.url, user_id)
    try:
        await user.login(user_password)
        await asyncio.wait_for(ready.wait(), 120)
        shots = showcase(count)
        room_id = await _room_with_bot(user, bot_id)
        started = time.monotonic()
        print(f"Sending {count} prompts; the pictures come as they are made…")
        await send_and_collect(user, room_id, shots, out)
        total = time.monotonic() - started
        await _read_timings(settings, shots)
    finally:
        stop.set()
        await user.close()
        await bot_task
    sheet = contact_sheet(shots, out / "contact-sheet.png")
    table = timing_table(shots, total, engine)
    (out / "timings.txt").write_text(table + "\n", encoding="utf-8")
    _write_csv(shots, out / "timings.csv")
    print(table)
    print(f"\nSaved {count} pictures, {sheet.name}, timings.txt and timings.csv in {out}/")
    return 0


async def _room_with_bot(user: AsyncClient, bot_id: str) -> str:
    created = await user.room_create(name="imgbot demo", invite=[bot_id])
    if not isinstance(created, RoomCreateResponse):
        raise RuntimeError(f"could not create the demo room: {created}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        members = await user.joined_members(created.room_id)
        if bot_id in {m.user_id for m in getattr(members, "members", [])}:
            return created.room_id
        await asyncio.sleep(0.2)
    raise RuntimeError("the bot did not join the demo room within 60 s")


async def send_and_collect(
    user: AsyncClient, room_id: str, shots: list[Shot], out: Path | None, quiet: bool = False
) -> None:
    """Send each shot's command and wait for its picture; with `out`, save it there.

    The user syncs while it sends, as a chat client does, so that a picture that comes
    while later commands are still being sent is seen when it comes (a collector started
    after the last send would count that wait as the bot's)."""
    await user.sync(timeout=0, full_state=False)  # a since token: only what comes next
    seen: dict[str, tuple[float, str]] = {}  # command -> when its picture came, its mxc
    sending = asyncio.ensure_future(_send(user, room_id, shots))
    try:
        await _collect(user, room_id, shots, seen, sending, out, quiet)
    finally:
        sending.cancel()


async def _send(user: AsyncClient, room_id: str, shots: list[Shot]) -> None:
    for shot in shots:
        shot.sent_at = time.monotonic()
        response = await user.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": f"!img {shot.prompt} --seed {shot.seed}"},
        )
        if not isinstance(response, RoomSendResponse):
            raise RuntimeError(f"could not send a command: {response}")
        shot.event_id = response.event_id


async def _collect(
    user: AsyncClient,
    room_id: str,
    shots: list[Shot],
    seen: dict[str, tuple[float, str]],
    sending: asyncio.Future,
    out: Path | None,
    quiet: bool,
) -> None:
    deadline = time.monotonic() + TIMEOUT_PER_PICTURE * len(shots)
    done: set[int] = set()
    while len(done) < len(shots):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(shots) - len(done)} pictures did not arrive in time")
        if sending.done() and sending.exception() is not None:
            raise sending.exception()
        # A timeline limit above any count: a busy moment must not come as a gap.
        sync = await user.sync(timeout=1000, sync_filter={"room": {"timeline": {"limit": 1000}}})
        if isinstance(sync, SyncResponse):
            room = sync.rooms.join.get(room_id)
            for event in room.timeline.events if room else []:
                await _note(user, event.source.get("content", {}), event.sender, seen, quiet)
        for index, shot in enumerate(shots):
            if index in done or shot.event_id not in seen:
                continue
            done.add(index)
            shot.received_at, url = seen[shot.event_id]
            if out is not None:
                await _save(user, shot, url, index, len(shots), out)


async def _note(
    user: AsyncClient, content: dict, sender: str, seen: dict[str, tuple[float, str]], quiet: bool
) -> None:
    if content.get("msgtype") == "m.notice" and sender != user.user_id and not quiet:
        print(f"  bot: {content.get('body')}")
    reply_to = (content.get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
    if content.get("msgtype") == "m.image" and reply_to and reply_to not in seen:
        seen[reply_to] = (time.monotonic(), content.get("url", ""))


async def _save(user: AsyncClient, shot: Shot, url: str, index: int, count: int, out: Path) -> None:
    data = await user.download(mxc=url)
    if isinstance(data, DownloadError):
        raise RuntimeError(f"could not download {url}: {data.message}")
    shot.file = out / f"{index + 1:02d}-{shot.prompt.split(', ')[1].replace(' ', '-')}.png"
    shot.file.write_bytes(data.body)
    print(f"  {index + 1:2d}/{count} {shot.prompt} (seed {shot.seed}) after {shot.latency:.1f} s")


async def _read_timings(settings: Settings, shots: list[Shot]) -> None:
    """Queue wait and generation time as the bot recorded them in its usage log."""
    db = await database.connect(settings.state_dir / "imgbot.sqlite3")
    try:
        for shot in shots:
            row = await (
                await db.execute(
                    "SELECT queue_seconds, generation_seconds FROM usage WHERE event_id = ?",
                    (shot.event_id,),
                )
            ).fetchone()
            if row is not None:
                shot.queue_seconds, shot.generation_seconds = row[0] or 0.0, row[1] or 0.0
    finally:
        await db.close()


def contact_sheet(shots: list[Shot], target: Path) -> Path:
    """All pictures in one tiled image, in the order they were asked for, each labelled."""
    from PIL import Image

    pictures, labels = [], []
    for i, shot in enumerate(shots):
        with Image.open(shot.file) as picture:
            pictures.append(picture.convert("RGB"))
        labels.append(f"{i + 1}. {shot.prompt.split(', ', 1)[-1]} · seed {shot.seed}")
    tile(pictures, labels).save(target)
    return target


def timing_table(shots: list[Shot], total: float, engine) -> str:
    lines = [f"{'#':>3}  {'prompt':<36} {'seed':>5} {'queue s':>8} {'gen s':>7} {'reply s':>8}"]
    for i, s in enumerate(shots, 1):
        lines.append(
            f"{i:>3}  {s.prompt:<36} {s.seed:>5} {s.queue_seconds:>8.2f} "
            f"{s.generation_seconds:>7.2f} {s.latency:>8.2f}"
        )
    gen = sum(s.generation_seconds for s in shots)
    device = "?" if engine.placement is None else engine.placement.device
    lines += [
        "",
        f"{len(shots)} pictures in {total:.1f} s total ({total / len(shots):.2f} s per picture "
        f"end to end), generation {gen:.1f} s ({gen / len(shots):.2f} s per picture) "
        f"on {device} with {engine.name}",
        "(gen s: a picture's share of its batch, the batch's time divided by the pictures "
        "made in it)",
    ]
    return "\n".join(lines)


def _write_csv(shots: list[Shot], target: Path) -> None:
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["file", "prompt", "seed", "queue_seconds", "generation_seconds", "reply_seconds"]
        )
        for s in shots:
            writer.writerow(
                [
                    s.file.name if s.file else "",
                    s.prompt,
                    s.seed,
                    f"{s.queue_seconds:.3f}",
                    f"{s.generation_seconds:.3f}",
                    f"{s.latency:.3f}",
                ]
            )
