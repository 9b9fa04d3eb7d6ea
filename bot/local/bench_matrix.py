"""`imgbot bench --through-matrix`: the bench's workload sent through a throw-away local
homeserver and the bot, as a team would send it, to measure what the chat side costs.

Reported: pictures per second through the bot beside the GPU worker's own rate (pictures
per busy second), the share of time the worker sat idle while jobs were waiting, and each
reply's overhead: its latency (command sent to picture seen by the sender) minus its queue
wait and generation time, i.e. PNG encoding, upload, send and sync; and that overhead
broken down by where the bot spent it (timed around its own calls, in this process).

With buttons (chat.buttons, on by default) the bot places its reactions under each picture
after the room's pictures; they are not part of a reply (its latency ends when the sender
sees the picture), but they are events the homeserver and the sender's client handle while
later pictures come, so a run with buttons says how many the sender saw, and how long
after the last picture the last one came; its overheads say whether they held any later
picture up. `imgbot bench --through-matrix` runs the workload with buttons off and on,
back to back.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from nio import AsyncClient, RoomMessagesResponse
from prometheus_client.parser import text_string_to_metric_families

from bot.app import run_bot
from bot.config import Settings
from bot.config.chat import ChatSettings
from bot.local.demo import Shot, _read_timings, _room_with_bot, send_and_collect
from bot.local.localserver import LocalHomeserver, _free_port


@dataclass(frozen=True)
class MatrixFigures:
    pictures: int
    wall_seconds: float  # first command sent to last picture seen
    busy_seconds: float  # the GPU workers' time on these jobs, per worker
    idle_while_waiting_seconds: float
    overheads: list[float]  # per picture, seconds
    # Seconds the bot spent in each phase, all pictures together: "encode" (in a thread,
    # beside the event loop), "upload", "send picture", "send notice" (the "Queued" notices
    # and other text the bot sent meanwhile).
    phases: dict[str, float] = field(default_factory=dict)
    # chat.buttons in this run ([]: none), the bot's reactions under the pictures that the
    # sender saw, and seconds from the last picture to the last of them (server times).
    buttons: list[str] = field(default_factory=list)
    button_reactions: int = 0
    buttons_done_after_seconds: float | None = None
    # For each picture the bot sent, how many of its reactions were then on their way to
    # the homeserver (which orders a room's events one at a time: the picture waits).
    buttons_ahead: list[int] = field(default_factory=list)

    @property
    def buttons_expected(self) -> int:
        return self.pictures * len(self.buttons)

    @property
    def through_share(self) -> float:
        """Pictures per second through chat as a share of the engine's own rate."""
        return self.pictures_per_second / self.engine_pictures_per_second

    @property
    def median_overhead(self) -> float:
        return statistics.median(self.overheads)

    @property
    def pictures_per_second(self) -> float:
        return self.pictures / self.wall_seconds

    @property
    def engine_pictures_per_second(self) -> float:
        return self.pictures / self.busy_seconds if self.busy_seconds else float("nan")

    @property
    def idle_share(self) -> float:
        total = self.busy_seconds + self.idle_while_waiting_seconds
        return self.idle_while_waiting_seconds / total if total else 0.0

    def table(self) -> str:
        over = sorted(self.overheads)
        p90 = over[min(len(over) - 1, int(0.9 * len(over)))]
        return "\n".join(
            [
                "through the homeserver and the bot:",
                f"  pictures per second      {self.pictures_per_second:8.3f}  "
                f"({self.pictures} in {self.wall_seconds:.2f} s, first command to last picture)",
                f"  engine's own rate        {self.engine_pictures_per_second:8.3f}  "
                f"(pictures per second the GPU worker was busy)",
                f"  through the bot / engine {self.through_share:8.1%}",
                f"  worker idle while jobs waited {self.idle_share:6.2%}  "
                f"({self.idle_while_waiting_seconds:.3f} s of "
                f"{self.busy_seconds + self.idle_while_waiting_seconds:.2f} s)",
                f"  reply overhead per picture: median {self.median_overhead * 1000:.0f} ms, "
                f"p90 {p90 * 1000:.0f} ms, max {over[-1] * 1000:.0f} ms "
                f"(latency minus queue wait minus generation: encode, upload, send, sync)",
                *self._breakdown(),
                self._buttons_line(),
            ]
        )

    def _buttons_line(self) -> str:
        if not self.buttons:
            return "  buttons: off (chat.buttons: [])"
        after = (
            f", the last {self.buttons_done_after_seconds:.2f} s after the last picture"
            if self.buttons_done_after_seconds is not None
            else ""
        )
        behind = sum(1 for ahead in self.buttons_ahead if ahead)
        most = max(self.buttons_ahead, default=0)
        return (
            f"  buttons: {', '.join(self.buttons)}; {self.button_reactions} of "
            f"{self.buttons_expected} reactions seen under the pictures{after} "
            f"(not in any reply's latency); {behind} of {len(self.buttons_ahead)} pictures "
            f"sent with a button on its way (at most {most})"
        )

    def _breakdown(self) -> list[str]:
        if not self.phases:
            return []
        mean = statistics.mean(self.overheads)
        parts = {
            name: seconds / self.pictures
            for name, seconds in self.phases.items()
            if name != BUTTON_PHASE
        }
        # Encoding runs in a thread and uploads overlap the next generation, so the parts
        # may add up to more or less than the overhead; the rest is mostly the sync that
        # brings the picture to the sender.
        rest = mean - sum(parts.values())
        # The buttons' sends are after the picture, no part of its reply: shown apart.
        buttons = (
            f"; beside, not in it: {BUTTON_PHASE} {self.phases[BUTTON_PHASE] / self.pictures * 1000:.0f} ms"
            if BUTTON_PHASE in self.phases
            else ""
        )
        return [
            "  of which, per picture: "
            + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in parts.items())
            + f"; the rest {rest * 1000:.0f} ms (syncs, scheduling){buttons}"
        ]


BUTTON_PHASE = "send button"
# Seconds the bench waits, after the last picture, for the last button to be seen: the
# buttons wait at most bot.chat.jobs.buttons.MOST_WAIT a picture, never that long here.
BUTTONS_PATIENCE = 60.0


def through_matrix(
    engine,
    *,
    count: int,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    max_batch: int = 1,
    generation: dict | None = None,
    buttons: bool = True,
) -> MatrixFigures:
    """Run the workload through a local Synapse and the bot; `engine` is already loaded, or
    None with `generation` saying what the bot loads (a Ray cluster's workers, say).
    `buttons`: the bot places chat.buttons' default under each picture; False: none."""
    with tempfile.TemporaryDirectory(prefix="imgbot-bench-") as tmp:
        work = Path(tmp)
        with LocalHomeserver(
            work / "synapse", rate_limits=False, dynamic_thumbnails=True
        ) as server:
            return asyncio.run(
                _measure(
                    server,
                    engine,
                    work,
                    count,
                    width,
                    height,
                    steps,
                    guidance,
                    max_batch,
                    generation or {},
                    [str(name) for name in ChatSettings().buttons] if buttons else [],
                )
            )


async def _measure(
    server: LocalHomeserver,
    engine,
    work: Path,
    count: int,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    max_batch: int,
    generation: dict,
    buttons: list[str],
) -> MatrixFigures:
    bot_password, user_password = "bench-bot-password", "bench-user-password"
    bot_id = server.register("imgbot", bot_password)
    user_id = server.register("bench", user_password)
    port = _free_port()
    settings = Settings(
        matrix={"homeserver_url": server.url, "user_id": bot_id, "password": bot_password},
        state_dir=work / "state",
        generation={
            "size": f"{width}x{height}",
            "steps": steps,
            "guidance": guidance,
            "warm_up": False,
            "max_batch": max_batch,
            **generation,
        },
        limits={
            "per_user_queued": count,
            "queue_size": max(count, 100),
            "max_pixels": max(width * height, 64 * 64),
            "max_steps": max(steps, 1),
        },
        metrics={"port": port},
        chat={"buttons": buttons},
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    bot_task = asyncio.create_task(run_bot(settings, engine, stop=stop, ready=ready))
    user = AsyncClient(server.url, user_id)
    phases: dict[str, float] = defaultdict(float)
    made: dict[str, float] = {}  # each job's generation time, a batch's whole time
    ahead: list[int] = []  # the bot's reactions on their way as each picture was sent
    try:
        await user.login(user_password)
        await asyncio.wait_for(ready.wait(), 120)
        room_id = await _room_with_bot(user, bot_id)
        workers = generation.get("ray", {}).get("workers", 1)
        await _workers_up(port, workers)  # a cluster's workers load after the bot starts
        before = await _worker_seconds(port)
        shots = [Shot(f"bench picture {i}", seed=i) for i in range(count)]
        with _timed(bot_id, phases, made, ahead):
            await send_and_collect(user, room_id, shots, None, quiet=True)
            after = await _worker_seconds(port)
            # The buttons go out after the pictures: wait for them before the bot stops.
            seen, done_after = await _buttons_seen(
                user, room_id, bot_id, count * len(buttons), BUTTONS_PATIENCE
            )
        await _read_timings(settings, shots)
        for shot in shots:
            # The usage log keeps a batched job's share of its batch; its picture could
            # not be sent before the whole batch was made, so that is what is taken off.
            shot.generation_seconds = made.get(shot.event_id, shot.generation_seconds)
    finally:
        stop.set()
        await user.close()
        await bot_task
    wall = max(s.received_at for s in shots) - min(s.sent_at for s in shots)
    return MatrixFigures(
        pictures=count,
        wall_seconds=wall,
        busy_seconds=(after[0] - before[0]) / workers,
        idle_while_waiting_seconds=after[1] - before[1],
        overheads=[s.latency - s.queue_seconds - s.generation_seconds for s in shots],
        phases=dict(phases),
        buttons=list(buttons),
        button_reactions=seen,
        buttons_done_after_seconds=done_after,
        buttons_ahead=ahead,
    )


async def _buttons_seen(
    user: AsyncClient, room_id: str, bot_id: str, expected: int, patience: float
) -> tuple[int, float | None]:
    """The bot's reactions under its pictures as the sender's client reads the room, once
    `expected` of them are there or `patience` seconds have passed; and the seconds from the
    last picture to the last reaction, by the homeserver's clock (None without reactions)."""
    deadline = time.monotonic() + patience
    while True:
        reactions, last_picture = await _room_history(user, room_id, bot_id)
        if len(reactions) >= expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    if not reactions or last_picture is None:
        return len(reactions), None
    return len(reactions), (max(reactions) - last_picture) / 1000


async def _room_history(
    user: AsyncClient, room_id: str, bot_id: str
) -> tuple[list[int], int | None]:
    """The bot's reactions in the room (their server times, ms) and its last picture's."""
    reactions: list[int] = []
    last_picture: int | None = None
    start: str | None = None
    while True:
        page = await user.room_messages(room_id, start=start, limit=1000)
        if not isinstance(page, RoomMessagesResponse):
            raise RuntimeError(f"could not read the room: {page}")
        for event in page.chunk:
            source = event.source
            if source.get("sender") != bot_id:
                continue
            content, stamp = source.get("content", {}), source.get("origin_server_ts", 0)
            relation = content.get("m.relates_to") or {}
            if source.get("type") == "m.reaction" and relation.get("rel_type") == "m.annotation":
                reactions.append(stamp)
            elif content.get("msgtype") == "m.image":
                last_picture = max(last_picture or 0, stamp)
        if not page.chunk or not page.end or page.end == start:
            return reactions, last_picture
        start = page.end


@contextmanager
def _timed(bot_id: str, phases: dict[str, float], made: dict[str, float], ahead: list[int]):
    """Time the bot's encoding, uploads and sends (the bot runs in this process) while the
    block runs, note each job's generation time as delivery had it (`made`, by the
    command's event ID) and, as each picture is sent, how many of the bot's reactions are on
    their way (`ahead`); the user's own calls are not counted."""
    from bot.chat.jobs import posting
    from bot.chat.jobs.delivery import Delivery

    upload, room_send, encode = AsyncClient.upload, AsyncClient.room_send, posting._encode

    reacting = 0  # the bot's reactions on their way now

    def timed(original, phase_of):
        async def wrapper(self, *args, **kwargs):
            nonlocal reacting
            if self.user_id != bot_id:
                return await original(self, *args, **kwargs)
            phase = phase_of(args, kwargs)
            if phase == "send picture":
                ahead.append(reacting)
            reacting += phase == BUTTON_PHASE
            started = time.perf_counter()
            try:
                return await original(self, *args, **kwargs)
            finally:
                reacting -= phase == BUTTON_PHASE
                phases[phase] += time.perf_counter() - started

        return wrapper

    def timed_encode(*args, **kwargs):
        started = time.perf_counter()
        try:
            return encode(*args, **kwargs)
        finally:
            phases["encode"] += time.perf_counter() - started

    def send_phase(args, kwargs) -> str:
        kind = args[1] if len(args) > 1 else kwargs.get("message_type", "")
        content = args[2] if len(args) > 2 else kwargs.get("content", {})
        if kind == "m.reaction":
            return BUTTON_PHASE
        return "send picture" if content.get("msgtype") == "m.image" else "send notice"

    finish = Delivery.finish

    async def noted_finish(self, stored, **fields):
        if fields.get("generation_seconds") is not None:
            made[stored.event_id] = fields["generation_seconds"]
        return await finish(self, stored, **fields)

    Delivery.finish = noted_finish
    AsyncClient.upload = timed(upload, lambda *_: "upload")
    AsyncClient.room_send = timed(room_send, send_phase)
    posting._encode = timed_encode
    try:
        yield
    finally:
        AsyncClient.upload, AsyncClient.room_send, posting._encode = upload, room_send, encode
        Delivery.finish = finish


async def _workers_up(port: int, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while (await _metric(port, "imgbot_workers_up")) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bot's {count} workers were not up within {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def _metric(port: int, name: str) -> float:
    return (await _metrics(port)).get(name, 0.0)


async def _worker_seconds(port: int) -> tuple[float, float]:
    """(busy, idle while waiting) seconds of the GPU workers, read from the bot's /metrics."""
    values = await _metrics(port)
    return (
        values.get("imgbot_worker_busy_seconds_total", 0.0),
        values.get("imgbot_worker_idle_while_waiting_seconds_total", 0.0),
    )


async def _metrics(port: int) -> dict[str, float]:
    """The bot's /metrics: its unlabelled samples by name."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }
