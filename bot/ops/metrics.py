"""`/healthz` and Prometheus `/metrics` for the operator, on a small aiohttp server.

Counters and histograms are pushed by the handler as jobs end (`job_finished`,
`job_rejected`); everything that describes the present (queue depth, sync age, worker,
GPU memory) is read through callables at scrape time, so nothing has to keep it updated.
Each `Metrics` has its own registry, never the process-global one, so several bots (or
tests) in one process do not clash. No prompt, user or token ever becomes a label.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bot import version
from bot.ops.disk import Space
from bot.store.usage import JobStatus

log = logging.getLogger(__name__)

# How a job can end (a queued one has not): the label values of imgbot_jobs_total.
STATUSES = tuple(s.value for s in JobStatus if s is not JobStatus.QUEUED)
# From one step of a distilled model (~0.05 s) to a long wait behind a full queue (10 min).
SECONDS_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2,
    3,
    5,
    7.5,
    10,
    15,
    20,
    30,
    45,
    60,
    90,
    120,
    180,
    300,
    600,
)
STALE_AFTER_SECONDS = 300.0  # no good sync for this long: /healthz says unhealthy

GpuMemory = Callable[[], Mapping[str, int] | None]


class _Queue(Protocol):
    depth: int
    paused: bool
    worker_alive: bool

    def worker_stats(self) -> list[tuple[str, bool, int, float]]: ...


class _Sync(Protocol):
    last_success: float


@dataclass(frozen=True)
class Health:
    """What /healthz and the live gauges read, as plain callables (easy to fake)."""

    # seconds since the last good sync; None before the first
    last_sync_age: Callable[[], float | None]
    worker_alive: Callable[[], bool]
    queue_depth: Callable[[], int]
    paused: Callable[[], bool]
    # seconds the worker spent on jobs, and seconds it sat idle while jobs were waiting
    worker_seconds: Callable[[], tuple[float, float]] | None = None
    # each GPU worker: (name, up, jobs made, busy seconds); a remote one may be down
    workers: Callable[[], list[tuple[str, bool, int, float]]] | None = None
    # the free space of state_dir's filesystem (a `DiskWatch`'s `current`); None unread
    disk: Callable[[], Space | None] | None = None
    # what waits for the full disk to have space: (rooms whose next command could not be
    # stored, writes put off)
    waiting: Callable[[], tuple[int, int]] | None = None

    @classmethod
    def of(
        cls,
        queue: _Queue,
        sync: _Sync,
        disk: Callable[[], Space | None] | None = None,
        waiting: Callable[[], tuple[int, int]] | None = None,
    ) -> Health:
        """Read a running bot's `GenerationQueue`, `SyncLoop`, `DiskWatch.current` and what
        waits for disk space."""

        def last_sync_age() -> float | None:
            # `last_success` starts at construction time; `live` says a sync really happened.
            if not sync.live.is_set():
                return None
            return time.monotonic() - sync.last_success

        return cls(
            last_sync_age,
            lambda: queue.worker_alive,
            lambda: queue.depth,
            lambda: queue.paused,
            lambda: (queue.busy_seconds, queue.idle_while_waiting_seconds),
            lambda: queue.worker_stats(),
            disk,
            waiting,
        )


class Metrics:
    def __init__(self, gpu_memory: GpuMemory | None = None):
        self.registry = CollectorRegistry()
        self.health: Health | None = None
        self._gpu_memory = gpu_memory
        self.jobs = Counter(
            "imgbot_jobs", "Jobs by how they ended", ["status"], registry=self.registry
        )
        for status in STATUSES:  # present at 0 from the start, so rate() works at once
            self.jobs.labels(status)
        self.pictures = Counter(
            "imgbot_pictures", "Pictures delivered to rooms", registry=self.registry
        )
        self.generation = Histogram(
            "imgbot_generation_seconds",
            "GPU time of a job (all its pictures)",
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "imgbot_queue_wait_seconds",
            "Time a job waited in the queue before it ran",
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        Info("imgbot_build", "The running imgbot", registry=self.registry).info(
            {"version": version() or "unknown"}
        )
        self.registry.register(_LiveCollector(self))

    def watch(self, health: Health) -> None:
        """Read the live gauges (queue depth, sync age, worker, paused) from `health`;
        until then they are left out."""
        self.health = health

    def job_finished(
        self,
        status: JobStatus | str,
        pictures: int = 0,
        generation_seconds: float | None = None,
        queue_seconds: float | None = None,
    ) -> None:
        """A job ended: `ok`, `error` or `cancelled` (use `job_rejected` for refusals)."""
        if status not in STATUSES:
            raise ValueError(f"job status {status!r}: use one of {', '.join(STATUSES)}")
        self.jobs.labels(JobStatus(status).value).inc()
        if pictures:
            self.pictures.inc(pictures)
        if generation_seconds is not None:
            self.generation.observe(generation_seconds)
        if queue_seconds is not None:
            self.queue_wait.observe(queue_seconds)

    def job_rejected(self) -> None:
        """A command was refused before it reached the queue (bad input, quota, queue full)."""
        self.jobs.labels(JobStatus.REJECTED.value).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    """Gauges read at scrape time; a value nobody can give (yet) is left out, not faked."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self) -> list:
        return []  # unknown until collected; keeps registration from calling collect()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        health = self.metrics.health
        if health is not None:
            yield GaugeMetricFamily(
                "imgbot_queue_depth", "Jobs waiting or running", value=health.queue_depth()
            )
            yield GaugeMetricFamily(
                "imgbot_queue_paused",
                "1 while an admin holds the queue",
                value=int(health.paused()),
            )
            yield GaugeMetricFamily(
                "imgbot_worker_up",
                "1 while the GPU worker thread runs",
                value=int(health.worker_alive()),
            )
            age = health.last_sync_age()
            if age is not None:
                yield GaugeMetricFamily(
                    "imgbot_last_sync_age_seconds",
                    "Seconds since the last successful sync",
                    value=age,
                )
            if health.worker_seconds is not None:
                busy, idle = health.worker_seconds()
                yield CounterMetricFamily(
                    "imgbot_worker_busy_seconds",
                    "Seconds the GPU worker spent making pictures",
                    value=busy,
                )
                yield CounterMetricFamily(
                    "imgbot_worker_idle_while_waiting_seconds",
                    "Seconds the GPU worker sat idle while jobs were waiting",
                    value=idle,
                )
            if health.workers is not None:
                yield from _per_worker(health.workers())
            space = health.disk() if health.disk is not None else None
            if space is not None:
                yield GaugeMetricFamily(
                    "imgbot_state_dir_free_bytes",
                    "Bytes the bot may still write on state_dir's filesystem",
                    value=space.free_bytes,
                )
                yield GaugeMetricFamily(
                    "imgbot_disk_full",
                    "1 while state_dir's filesystem counts as full "
                    "(below disk.full_free_mib, or SQLite said so)",
                    value=int(space.full),
                )
            if health.waiting is not None:
                rooms, writes = health.waiting()
                yield GaugeMetricFamily(
                    "imgbot_rooms_waiting_for_disk",
                    "Rooms whose next command the full disk could not "
                    "store: taken once space is back, the room's later "
                    "events behind it",
                    value=rooms,
                )
                yield GaugeMetricFamily(
                    "imgbot_writes_put_off",
                    "Writes of delivered jobs put off by the full disk",
                    value=writes,
                )
        memory = self._gpu_memory()
        if memory:
            family = GaugeMetricFamily(
                "imgbot_gpu_memory_bytes", "GPU memory of this process", labels=["kind"]
            )
            for kind in ("allocated", "reserved"):
                if kind in memory:
                    family.add_metric([kind], memory[kind])
            yield family

    def _gpu_memory(self) -> Mapping[str, int] | None:
        read = self.metrics._gpu_memory
        if read is None:
            return None
        try:
            return read()
        except Exception:  # a scrape must not fail because the driver hiccupped
            log.debug("reading GPU memory failed", exc_info=True)
            return None


def _per_worker(workers: list[tuple[str, bool, int, float]]) -> Iterator:
    """Workers up, and each worker's state, jobs and busy seconds, labelled by its name (a
    device, or a Ray worker's host, slot and node)."""
    yield GaugeMetricFamily(
        "imgbot_workers_up",
        "GPU workers that can take a job now",
        value=sum(1 for _, up, _, _ in workers if up),
    )
    up = GaugeMetricFamily(
        "imgbot_gpu_worker_up", "1 while this GPU worker can take a job", labels=["worker"]
    )
    jobs = CounterMetricFamily(
        "imgbot_gpu_worker_jobs", "Jobs this GPU worker made", labels=["worker"]
    )
    busy = CounterMetricFamily(
        "imgbot_gpu_worker_busy_seconds",
        "Seconds this GPU worker spent making pictures",
        labels=["worker"],
    )
    for name, is_up, made, seconds in workers:
        up.add_metric([name], int(is_up))
        jobs.add_metric([name], made)
        busy.add_metric([name], seconds)
    yield from (up, jobs, busy)


def health_report(
    health: Health, stale_after: float = STALE_AFTER_SECONDS
) -> tuple[int, dict[str, Any]]:
    """The /healthz answer: (HTTP status, JSON body)."""
    age = health.last_sync_age()
    alive = health.worker_alive()
    problems = []
    if age is None:
        problems.append("no successful sync with the homeserver yet")
    elif age > stale_after:
        problems.append(
            f"no successful sync with the homeserver for {age:.0f} s (limit {stale_after:.0f} s)"
        )
    if not alive:
        problems.append("the generation worker thread is not running")
    workers = health.workers() if health.workers is not None else []
    workers_up = sum(1 for _, up, _, _ in workers if up)
    if workers and not workers_up:
        problems.append(f"no GPU worker is up (0 of {len(workers)}): jobs wait for one")
    space = health.disk() if health.disk is not None else None
    disk_full = space is not None and space.full
    if disk_full:
        problems.append(space.reason)
    if not problems:
        status = "ok"
    elif age is None and alive and not disk_full:
        status = "starting"
    else:
        status = "unhealthy"
    body = {
        "status": status,
        "last_sync_age_seconds": None if age is None else round(age, 1),
        "queue_depth": health.queue_depth(),
        "worker_alive": alive,
        "workers_up": workers_up if workers else None,
        "paused": health.paused(),
        "problems": problems,
    }
    if space is not None:
        body["state_dir_free_bytes"] = space.free_bytes
    if health.waiting is not None:
        body["rooms_waiting_for_disk"], body["writes_put_off"] = health.waiting()
    return (200 if status == "ok" else 503), body


class MetricsServer:
    """The running server; `port` is the bound one (useful when asked for port 0)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int):
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_server(
    metrics: Metrics, settings, health: Health, *, stale_after: float = STALE_AFTER_SECONDS
) -> MetricsServer:
    """Serve /metrics and /healthz on `settings.host`:`settings.port` (a `MetricsSettings`;
    port 0 takes a free one) until `close()`. Also makes `metrics` read `health`."""
    metrics.watch(health)
    if not is_loopback(settings.host):
        log.warning(
            "metrics.host %r is not a loopback address: /metrics and /healthz are "
            "served without authentication to whoever can reach it",
            settings.host,
        )

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(request: web.Request) -> web.Response:
        status, body = health_report(health, stale_after)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)  # a scrape every 15 s is not news
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    server = MetricsServer(runner, settings.host, port)
    log.info("health and metrics on %s/healthz and %s/metrics", server.url, server.url)
    return server


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name: we cannot tell, so say so
        return False
