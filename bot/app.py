"""The composition root of `imgbot run`: builds every part once and hands it down."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from contextlib import suppress

from nio import AsyncClient, AsyncClientConfig, KeysUploadResponse

from generation.scheduling.queue import GenerationQueue
from generation.errors import ImgbotError
from generation.scheduling.runner import Runner

from bot.store import db as database
from bot.matrix import cross_signing, encryption
from bot.store import usage
from bot.config import Settings
from bot.chat.bot import Bot
from bot.ops.metrics import Health, Metrics, start_server
from bot.config.private import prepare_state_dir
from bot.store.retention import retention_task
from bot.matrix.session import log_in
from bot.matrix.sync import SYNC_TOKEN_KEY, SyncLoop
from bot.ops.disk import DiskWatch
from bot.ops.tasks import TaskOwner
from bot.ops.watchdog import Watchdog

log = logging.getLogger(__name__)

# How long a running job may take to finish once we are asked to stop.
SHUTDOWN_GRACE_SECONDS = 60.0


def check_parts(settings: Settings, upscaler: bool = True) -> None:
    """Check every folder and file the start loads (quick: no model weights are read), so
    that a typo stops the start with the key's name, not someone's job later. `imgbot
    check` checks the same list. Raises SystemExit."""
    from generation.models.preflight import check_parts as parts

    generation = settings.generation
    if generation.model is None:
        raise SystemExit(
            "generation.model is not set: point it at a local diffusers folder "
            "(or make one with `imgbot make-test-model DIR`)"
        )
    for part in parts(
        generation.catalogue_keys,
        vae=generation.vae,
        fast_decoder=generation.fast_decoder,
        upscaler=generation.upscaler if upscaler else None,
        edit_model=generation.edit_model,
        loras=generation.loras,
        quantize=generation.quantize,
        devices=generation.devices or [generation.device],
    ):
        if not part.ok:
            raise SystemExit(part.message)


def load_engines(settings: Settings) -> list[Runner]:
    """One loaded runner per device of `generation.devices` (or the one `device`)."""
    devices = settings.generation.devices or [settings.generation.device]
    return [load_engine(settings, device) for device in devices]


def load_engine(settings: Settings, device: str | None = None) -> Runner:
    """Load the default model (the only place the bot reaches into torch, lazily). With more
    models configured, the runner is a pool that loads each of the others on first use."""
    from generation.families.model_folder import ModelError
    from generation.models.recipe import diffusion_runner, warm_up

    check_parts(settings, upscaler=False)  # the upscaler is loaded beside it, by with_tools
    generation = settings.generation
    recipe = generation.recipe(settings.state_dir, device)
    try:
        runner = diffusion_runner(recipe)
    except ModelError as exc:
        key = "generation.vae" if "VAE" in str(exc) else "generation.fast_decoder"
        raise SystemExit(f"{key}: {exc}") from None
    if generation.compile and not generation.warm_up:
        log.warning(
            "generation.compile is on and generation.warm_up off: the first job "
            "waits for the compile (minutes when the cache is cold)"
        )
    try:
        runner.load()
    except ModelError as exc:  # a LoRA whose weights fit no layer of the model, say
        raise SystemExit(str(exc)) from None
    warm_up(runner, recipe)
    return runner


def make_client(settings: Settings) -> AsyncClient:
    encrypted = settings.matrix.encryption
    if encrypted:
        encryption.check_available()
    config = AsyncClientConfig(
        # Let connection errors reach our own loops, which back off with jitter; nio's own
        # 429 handling (waiting as long as the server says) stays on.
        max_timeouts=2,
        request_timeout=60,
        store_sync_tokens=False,
        encryption_enabled=encrypted,
        store=encryption.STORE,  # its SQLite file 0600, whatever the umask
    )
    store = str(encryption.store_path(settings.state_dir)) if encrypted else ""
    return AsyncClient(
        settings.matrix.homeserver_url, settings.matrix.user_id, config=config, store_path=store
    )


async def prepare_encryption(client: AsyncClient, settings: Settings) -> None:
    """Before the first sync: our device keys on the homeserver, and the device signed by
    the bot's own cross-signing identity, so that clients share their room keys with it."""
    if client.olm is None:
        return
    if client.should_upload_keys:
        uploaded = await client.keys_upload()
        if not isinstance(uploaded, KeysUploadResponse):
            raise cross_signing.CrossSigningFailed(
                f"the homeserver did not take the device keys ({uploaded.message})", retry=True
            )
    await encryption.keep_keys(client)
    if settings.matrix.cross_signing:
        await cross_signing.bootstrap(client, settings.matrix, settings.state_dir)
    else:
        log.warning(
            "matrix.cross_signing is off: clients that exclude insecure devices "
            "(Element's default) will not share their room keys with this bot"
        )


def with_tools(runner: Runner, settings: Settings, device: str | None = None) -> Runner:
    """The queue's runner: the model (or models), with the upscaler and the finishing
    touches beside it. A configured upscaler is loaded now, so that a wrong file stops the
    start (SystemExit) instead of someone's `!img upscale` later."""
    from generation.models.recipe import with_upscaler
    from generation.postprocess.upscale import UpscalerError

    if runner.finishing:
        return runner  # made whole already, or a remote worker (its host loads the tools)
    try:
        return with_upscaler(runner, settings.generation.recipe(settings.state_dir, device))
    except UpscalerError as exc:
        raise SystemExit(f"generation.upscaler: {exc}") from None


async def run_bot(
    settings: Settings,
    engine: Runner | list[Runner] | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when it is not given).

    The order matters: the login is checked before the model is loaded (a wrong password
    should not cost a minute of loading), and the jobs a previous run left are queued
    again before the first sync brings new ones."""
    stop = stop or _stop_on_signals()
    if engine is None:
        check_parts(settings)
    prepare_state_dir(settings.state_dir)  # 0700 when new; a warning when others can read it
    db = await database.connect(settings.state_dir / "imgbot.sqlite3")
    if interrupted := await usage.close_interrupted(db):
        log.warning(
            "%d jobs of an earlier run were never answered and cannot be resumed; marked as failed",
            interrupted,
        )
    client = make_client(settings)
    tasks = TaskOwner()
    disk = DiskWatch(settings.state_dir, settings.disk)
    queue: GenerationQueue | None = None
    link = None  # the Ray cluster's, with backend ray
    server = device_watch = None
    watchdog = Watchdog(settings.watchdog_seconds) if settings.watchdog_seconds else None
    try:
        # From the start: a disk that is full now is said before the login and the model.
        tasks.spawn(disk.run(stop), name="disk")
        if not await _unless_stopped(log_in(client, settings.matrix, settings.state_dir), stop):
            log.info("stopped while logging in")
            return
        await prepare_encryption(client, settings)
        if engine is None and settings.generation.backend == "ray":
            from bot import cluster

            link, engine = await asyncio.to_thread(cluster.connect, settings)
        elif engine is None:
            engine = await asyncio.to_thread(load_engines, settings)
        runners = engine if isinstance(engine, list) else [engine]
        devices = settings.generation.devices or [None] * len(runners)
        engine = [
            await asyncio.to_thread(with_tools, runner, settings, device)
            for runner, device in zip(runners, devices)
        ]
        queue = GenerationQueue(
            engine,
            max_size=settings.limits.queue_size,
            per_user=settings.limits.per_user_queued,
            max_batch=settings.generation.max_batch,
        )
        queue.start()
        metrics = Metrics(gpu_memory=_gpu_memory)
        bot = Bot(
            client,
            settings,
            db,
            queue,
            tasks,
            metrics,
            beat=watchdog.beat if watchdog else lambda: None,
            disk=disk,
        )
        # The compliance checks load now (a reference folder that changed is indexed): one
        # that cannot load stops the start, rather than withholding every picture later.
        screening = await bot.screener.load()
        if screening.broken:
            if screening.retry:  # a service down (the time-stamp authority): try later
                raise ServiceDown(screening.broken)
            raise SystemExit(screening.broken)
        await bot.poster.learn_upload_limit()
        await bot.replies.restore()
        await bot.resume()
        sync = SyncLoop(
            client,
            database.Kept(db, SYNC_TOKEN_KEY),
            bot.on_sync,
            beat=watchdog.beat if watchdog else None,
        )
        if settings.metrics.port is not None:
            server = await start_server(
                metrics,
                settings.metrics,
                Health.of(
                    queue, sync, disk.current, lambda: (bot.when_stored.waiting, len(bot.backlog))
                ),
            )
        tasks.spawn(retention_task(db, settings.usage, stop), name="retention")
        tasks.spawn(bot.undecrypted.run(stop), name="undecrypted")
        if ready is not None:
            tasks.spawn(_relay(sync.live, ready), name="ready")
        if watchdog is not None:
            watchdog.start()
        device_watch = asyncio.ensure_future(_stop_when(queue.failed, stop))
        log.info(
            "imgbot is running as %s with model %s on %d device(s)",
            client.user_id,
            queue.runner.name,
            len(queue.workers),
        )
        await sync.run(stop)
        log.info("stopping: no new commands; waiting for the running job")
    finally:
        stop.set()  # for the tasks that wait on it, whatever ended the run
        if device_watch is not None:
            device_watch.cancel()
        if watchdog is not None:
            watchdog.stop()
        # One deadline for all of it (systemd's TimeoutStopSec is above it): the running
        # job may finish and be sent; the waiting ones stay in SQLite.
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        if queue is not None:
            await queue.close(timeout=SHUTDOWN_GRACE_SECONDS)
        if link is not None:
            await asyncio.to_thread(link.stop)
        await tasks.wait(timeout=max(0.0, deadline - time.monotonic()))
        await tasks.cancel_all()
        if server is not None:
            await server.close()
        await client.close()
        await db.close()
    if queue is not None and queue.device_fault is not None:
        raise DeviceFault(
            f"the GPU failed ({queue.device_fault}); the job it was making is "
            "kept and is made again at the next start"
        )


class DeviceFault(ImgbotError):
    """The device can no longer be used by this process; a new process can."""


class ServiceDown(ImgbotError):
    """A service the configured checks need did not answer; a later start may work."""


async def _unless_stopped(step, stop: asyncio.Event) -> bool:
    """Await `step`, or cancel it when `stop` is set first (False): a SIGTERM while a
    rate-limited login waits minutes for its next try stops the bot at once."""
    task, stopped = asyncio.ensure_future(step), asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # run_bot itself cancelled: the step goes with it
        task.cancel()
        raise
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False
    task.result()  # its exception, if it failed
    return True


async def _stop_when(event: asyncio.Event, stop: asyncio.Event) -> None:
    await event.wait()
    stop.set()


def _gpu_memory():
    from generation.runtime.memory import gpu_memory

    return gpu_memory()


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
