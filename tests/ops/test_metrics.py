"""/healthz and /metrics (`bot/metrics.py`) on a real server on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import MetricsSettings
from bot.ops.metrics import Health, Metrics, health_report, is_loopback, start_server
from generation.runtime.memory import gpu_memory
from tests.helpers.runners import StubRunner


class FakeBot:
    """The state /healthz reads, set directly by each test."""

    def __init__(
        self,
        age: float | None = 1.0,
        alive: bool = True,
        depth: int = 0,
        paused: bool = False,
        workers: list | None = None,
    ):
        self.age, self.alive, self.depth, self.paused = age, alive, depth, paused
        self.workers = workers

    def health(self) -> Health:
        return Health(
            lambda: self.age,
            lambda: self.alive,
            lambda: self.depth,
            lambda: self.paused,
            workers=None if self.workers is None else lambda: self.workers,
        )


@pytest.fixture
async def serve():
    servers = []

    async def start(metrics: Metrics, bot: FakeBot, **kwargs):
        settings = MetricsSettings.model_construct(host="127.0.0.1", port=0)
        server = await start_server(metrics, settings, bot.health(), **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def get(server, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + path) as response:
            return response.status, response.headers["Content-Type"], await response.text()


async def scrape(server) -> dict[str, float]:
    """Every sample as `name{label="value",…}` → value."""
    status, content_type, text = await get(server, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_metrics_count_jobs_pictures_and_times(serve):
    metrics = Metrics()
    server = await serve(metrics, FakeBot())
    assert server.port > 0

    before = await scrape(server)
    for status in ("ok", "error", "rejected", "cancelled"):
        assert before[f'imgbot_jobs_total{{status="{status}"}}'] == 0
    assert before["imgbot_pictures_total"] == 0

    metrics.job_finished("ok", pictures=4, generation_seconds=1.5, queue_seconds=0.2)
    metrics.job_finished("ok", pictures=1, generation_seconds=12.0, queue_seconds=30.0)
    metrics.job_finished("error", generation_seconds=None, queue_seconds=3.0)
    metrics.job_finished("cancelled", queue_seconds=5.0)
    metrics.job_rejected()
    metrics.job_rejected()

    after = await scrape(server)
    assert after['imgbot_jobs_total{status="ok"}'] == 2
    assert after['imgbot_jobs_total{status="error"}'] == 1
    assert after['imgbot_jobs_total{status="cancelled"}'] == 1
    assert after['imgbot_jobs_total{status="rejected"}'] == 2
    assert after["imgbot_pictures_total"] == 5
    # None seconds are not observed: two generation times, four queue waits.
    assert after["imgbot_generation_seconds_count"] == 2
    assert after["imgbot_generation_seconds_sum"] == pytest.approx(13.5)
    assert after['imgbot_generation_seconds_bucket{le="2.0"}'] == 1
    assert after['imgbot_generation_seconds_bucket{le="+Inf"}'] == 2
    assert after["imgbot_queue_wait_seconds_count"] == 4
    assert after["imgbot_queue_wait_seconds_sum"] == pytest.approx(38.2)
    assert after['imgbot_queue_wait_seconds_bucket{le="0.05"}'] == 0
    assert after['imgbot_queue_wait_seconds_bucket{le="0.25"}'] == 1
    assert after['imgbot_queue_wait_seconds_bucket{le="600.0"}'] == 4


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="'done'"):
        Metrics().job_finished("done")


async def test_live_gauges_follow_the_callables(serve):
    bot = FakeBot(age=2.5, depth=3)
    server = await serve(Metrics(), bot)
    samples = await scrape(server)
    assert samples["imgbot_queue_depth"] == 3
    assert samples["imgbot_queue_paused"] == 0
    assert samples["imgbot_worker_up"] == 1
    assert samples["imgbot_last_sync_age_seconds"] == 2.5

    bot.depth, bot.paused, bot.alive, bot.age = 7, True, False, None
    samples = await scrape(server)
    assert samples["imgbot_queue_depth"] == 7
    assert samples["imgbot_queue_paused"] == 1
    assert samples["imgbot_worker_up"] == 0
    assert "imgbot_last_sync_age_seconds" not in samples  # no sync yet: left out, not 0


async def test_gpu_memory_gauges(serve):
    memory = {"allocated": 1_000, "reserved": 4_096}
    server = await serve(Metrics(gpu_memory=lambda: memory), FakeBot())
    samples = await scrape(server)
    assert samples['imgbot_gpu_memory_bytes{kind="allocated"}'] == 1_000
    assert samples['imgbot_gpu_memory_bytes{kind="reserved"}'] == 4_096


@pytest.mark.parametrize(
    "read", [None, lambda: None, lambda: 1 / 0], ids=["no-reader", "no-gpu", "fails"]
)
async def test_gpu_memory_left_out_without_a_gpu(serve, read):
    server = await serve(Metrics(gpu_memory=read), FakeBot())
    samples = await scrape(server)
    assert not any(name.startswith("imgbot_gpu_memory_bytes") for name in samples)
    assert "imgbot_queue_depth" in samples  # the rest of the scrape still works


def test_gpu_memory_is_none_on_a_cpu_machine():
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("a GPU is in use here")
    assert gpu_memory() is None


async def test_healthz_ok(serve):
    server = await serve(Metrics(), FakeBot(age=4.0, depth=2, paused=True))
    status, content_type, text = await get(server, "/healthz")
    assert status == 200 and content_type.startswith("application/json")
    assert json.loads(text) == {
        "status": "ok",
        "last_sync_age_seconds": 4.0,
        "queue_depth": 2,
        "worker_alive": True,
        "workers_up": None,
        "paused": True,
        "problems": [],
    }


@pytest.mark.parametrize(
    "state, status, problem",
    [
        (dict(age=301.0), "unhealthy", "no successful sync with the homeserver for 301 s"),
        (dict(alive=False), "unhealthy", "worker thread is not running"),
        (dict(age=None), "starting", "no successful sync with the homeserver yet"),
        (dict(age=None, alive=False), "unhealthy", "worker thread is not running"),
        (
            dict(workers=[("gpu-host #0 (node 1a2b3c4d)", False, 3, 1.5)]),
            "unhealthy",
            "no GPU worker is up (0 of 1): jobs wait for one",
        ),
    ],
)
async def test_healthz_unhealthy(serve, state, status, problem):
    server = await serve(Metrics(), FakeBot(**state), stale_after=300)
    code, _, text = await get(server, "/healthz")
    body = json.loads(text)
    assert code == 503
    assert body["status"] == status
    assert any(problem in p for p in body["problems"]), body["problems"]


def test_health_reads_the_real_queue_and_sync_shapes():
    """`Health.of` against objects shaped like GenerationQueue and SyncLoop."""
    queue = SimpleNamespace(
        depth=2, paused=False, worker_alive=False, worker_stats=lambda: [("cuda:0", True, 0, 0.0)]
    )
    sync = SimpleNamespace(live=asyncio.Event(), last_success=time.monotonic())
    health = Health.of(queue, sync)

    assert health_report(health)[1]["problems"] == [
        "no successful sync with the homeserver yet",
        "the generation worker thread is not running",
    ]
    queue.worker_alive = True
    sync.live.set()
    sync.last_success = time.monotonic() - 10
    code, body = health_report(health)
    assert code == 200 and body["queue_depth"] == 2
    assert 10 <= body["last_sync_age_seconds"] < 60
    queue.worker_alive = False
    assert health_report(health)[0] == 503


async def test_non_loopback_host_is_served_with_a_warning(caplog):
    settings = MetricsSettings.model_construct(host="0.0.0.0", port=0)
    with caplog.at_level(logging.WARNING, logger="bot.ops.metrics"):
        server = await start_server(Metrics(), settings, FakeBot().health())
    try:
        assert any("not a loopback address" in r.message for r in caplog.records)
        status, _, _ = await get(SimpleNamespace(url=f"http://127.0.0.1:{server.port}"), "/healthz")
        assert status == 200
    finally:
        await server.close()


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    assert not is_loopback("metrics.example.org")


async def test_health_of_a_real_queue():
    from generation.scheduling.queue import GenerationQueue

    runner = StubRunner(
        name="fake", models=["fake"], native_size=lambda name="": (64, 64), generate=lambda job: []
    )
    queue = GenerationQueue(runner, max_size=4, per_user=2)
    sync = SimpleNamespace(live=asyncio.Event(), last_success=time.monotonic())
    sync.live.set()
    health = Health.of(queue, sync)
    assert health_report(health)[0] == 503  # not started: no worker
    queue.start()
    try:
        code, body = health_report(health)
        assert code == 200 and body["queue_depth"] == 0 and body["paused"] is False
    finally:
        await queue.close(timeout=5)
    assert health.worker_alive() is False
