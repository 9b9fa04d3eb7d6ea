"""The composition root of `imgbot run`: builds every part once and hands it down."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress

from nio import AsyncClient, AsyncClientConfig

from generation.queue import GenerationQueue, Runner

from . import db as database
from . import usage
from .config import Settings
from .handler import Bot
from .session import log_in
from .sync import SyncLoop
from .tasks import TaskOwner

log = logging.getLogger(__name__)

# How long a running job may take to finish once we are asked to stop.
SHUTDOWN_GRACE_SECONDS = 60.0


def load_engine(settings: Settings) -> Runner:
    """Load the default model (the only place the bot reaches into torch, lazily). With more
    models configured, the runner is a pool that loads each of the others on first use."""
    from generation.engine import Engine, ModelError, inspect_model
    from generation.pool import ModelPool

    generation = settings.generation
    if generation.model is None:
        raise SystemExit("generation.model is not set: point it at a local diffusers folder "
                         "(or make one with `imgbot make-test-model DIR`)")
    catalogue = generation.catalogue
    # Every folder is checked now, so that a typo stops the start, not someone's job later.
    for name, folder in catalogue.items():
        try:
            inspect_model(folder)
        except ModelError as exc:
            key = f"generation.models.{name}" if name in generation.models else "generation.model"
            raise SystemExit(f"{key} (model {name}): {exc}") from None
    if generation.models:
        runner = ModelPool(catalogue, next(iter(catalogue)), generation.device,
                           generation.max_loaded_models)
    else:
        runner = Engine(generation.model, generation.device)
    runner.load()
    if generation.warm_up:
        runner.warm_up(*generation.width_height)
    return runner


def make_client(settings: Settings) -> AsyncClient:
    config = AsyncClientConfig(
        # Let connection errors reach our own loops, which back off with jitter; nio's own
        # 429 handling (waiting as long as the server says) stays on.
        max_timeouts=2,
        request_timeout=60,
        store_sync_tokens=False,
    )
    return AsyncClient(settings.matrix.homeserver_url, settings.matrix.user_id, config=config)


async def run_bot(settings: Settings, engine: Runner, stop: asyncio.Event | None = None,
                  ready: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when it is not given)."""
    stop = stop or _stop_on_signals()
    db = await database.connect(settings.state_dir / "imgbot.sqlite3")
    if interrupted := await usage.close_interrupted(db):
        log.warning("%d jobs of the previous run were never answered; marked as failed",
                    interrupted)
    client = make_client(settings)
    queue = GenerationQueue(engine, max_size=settings.limits.queue_size,
                            per_user=settings.limits.per_user_queued)
    tasks = TaskOwner()
    try:
        await log_in(client, settings.matrix, settings.state_dir)
        queue.start()
        bot = Bot(client, settings, db, queue, tasks)
        await bot.replies.restore()
        sync = SyncLoop(client, db, bot.on_sync)
        if ready is not None:
            tasks.spawn(_relay(sync.live, ready), name="ready")
        log.info("imgbot is running as %s with model %s", client.user_id, engine.name)
        await sync.run(stop)
        log.info("stopping: no new commands; waiting for the running job")
    finally:
        await queue.close(timeout=SHUTDOWN_GRACE_SECONDS)
        await tasks.wait(timeout=SHUTDOWN_GRACE_SECONDS)
        await tasks.cancel_all()
        await client.close()
        await db.close()


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
