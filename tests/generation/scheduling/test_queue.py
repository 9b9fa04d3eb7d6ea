"""The generation queue (`generation/scheduling/queue.py`, the worker faults included) driven
by a fake runner the tests control."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from types import SimpleNamespace

import pytest
from PIL import Image

from generation.job import GenerationError, Job, Result
from generation.scheduling.queue import GenerationQueue, QueueFull
from generation.scheduling.runner import Runner, WorkerLost, WorkerNotReady
from generation.scheduling.workers import CPU_NICENESS, is_device_fault

TIMEOUT = 5  # seconds; only reached when something is broken


class FakeRunner(Runner):
    """Makes one small picture per job; jobs whose prompt is in `hold` wait for release()."""

    name = "fake-model"

    def __init__(self, hold: set[str] = frozenset(), fail: dict[str, Exception] | None = None):
        self.hold = set(hold)
        self.fail = fail or {}
        self.started: list[str] = []
        self.threads: set[str] = set()
        self._gates: dict[str, threading.Event] = {}
        self._started_events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _gate(self, table: dict, prompt: str) -> threading.Event:
        with self._lock:
            return table.setdefault(prompt, threading.Event())

    def release(self, prompt: str) -> None:
        self._gate(self._gates, prompt).set()

    async def wait_started(self, prompt: str) -> None:
        started = self._gate(self._started_events, prompt)
        assert await asyncio.to_thread(started.wait, TIMEOUT), f"{prompt!r} never started"

    def generate(self, job: Job) -> list:
        self.threads.add(threading.current_thread().name)
        self.started.append(job.prompt)
        self._gate(self._started_events, job.prompt).set()
        if job.prompt in self.hold:
            assert self._gate(self._gates, job.prompt).wait(TIMEOUT), "never released"
        if job.prompt in self.fail:
            raise self.fail[job.prompt]
        shade = job.seed % 256
        return [
            Image.new("RGB", (job.width, job.height), (shade, shade, shade))
            for _ in range(job.count)
        ]


def job(prompt: str, seed: int = 1, count: int = 1) -> Job:
    return Job(prompt=prompt, seed=seed, steps=1, width=8, height=8, count=count)


async def result_of(ticket) -> Result:
    return await asyncio.wait_for(ticket.result, TIMEOUT)


@pytest.fixture
async def make_queue():
    made: list[GenerationQueue] = []

    def make(runner: FakeRunner, max_size: int = 10, per_user: int = 10) -> GenerationQueue:
        queue = GenerationQueue(runner, max_size=max_size, per_user=per_user)
        queue.start()
        made.append(queue)
        return queue

    yield make
    for queue in made:
        for gate in queue.runner._gates.values():
            gate.set()
        await asyncio.wait_for(queue.close(), TIMEOUT)


# ---- results ------------------------------------------------------------------------------


async def test_a_job_comes_back_with_its_pictures_and_timings(make_queue):
    queue = make_queue(FakeRunner())
    ticket = queue.submit(job("cat", seed=7, count=2), "@alice:x")
    result = await result_of(ticket)
    assert result.ok and result.error is None
    assert result.job == ticket.job
    assert result.model == "fake-model"
    assert [im.size for im in result.images] == [(8, 8), (8, 8)]
    assert result.images[0].getpixel((0, 0)) == (7, 7, 7)
    assert result.generation_seconds >= 0 and result.queue_seconds >= 0


async def test_results_come_back_in_submission_order(make_queue):
    runner = FakeRunner(hold={"first"})
    queue = make_queue(runner)
    tickets = [
        queue.submit(job(p, seed=i), "@alice:x")
        for i, p in enumerate(["first", "second", "third", "fourth"])
    ]
    await runner.wait_started("first")
    runner.release("first")
    finished: list[str] = []

    async def note(ticket):
        finished.append((await result_of(ticket)).job.prompt)

    await asyncio.gather(*(note(t) for t in tickets))
    assert runner.started == ["first", "second", "third", "fourth"]
    assert finished == ["first", "second", "third", "fourth"]
    assert [t.id for t in tickets] == sorted(t.id for t in tickets)
    assert len({t.id for t in tickets}) == 4


async def test_one_worker_thread_runs_every_job(make_queue):
    runner = FakeRunner()
    queue = make_queue(runner)
    tickets = [queue.submit(job(f"p{i}"), "@alice:x") for i in range(3)]
    for t in tickets:
        await result_of(t)
    assert runner.threads == {"gpu-worker"}


async def test_ahead_counts_the_running_and_waiting_jobs(make_queue):
    runner = FakeRunner(hold={"running"})
    queue = make_queue(runner)
    assert queue.submit(job("running"), "@a:x").ahead == 0
    await runner.wait_started("running")
    assert queue.depth == 1
    assert queue.submit(job("w1"), "@b:x").ahead == 1
    assert queue.submit(job("w2"), "@c:x").ahead == 2
    assert queue.depth == 3
    runner.release("running")


async def test_submit_before_start_is_refused():
    queue = GenerationQueue(FakeRunner(), max_size=1, per_user=1)
    with pytest.raises(AssertionError, match="start"):
        queue.submit(job("x"), "@a:x")


# ---- limits -------------------------------------------------------------------------------


async def test_per_user_limit_names_the_limit_and_spares_others(make_queue):
    runner = FakeRunner(hold={"a1"})
    queue = make_queue(runner, per_user=2)
    queue.submit(job("a1"), "@alice:x")
    await runner.wait_started("a1")
    queue.submit(job("a2"), "@alice:x")  # the running job counts too: this is her second
    with pytest.raises(QueueFull) as info:
        queue.submit(job("a3"), "@alice:x")
    message = str(info.value)
    assert "2 jobs queued" in message and "limit is 2" in message
    bob = queue.submit(job("b1"), "@bob:x")  # somebody else is not affected
    runner.release("a1")
    assert (await result_of(bob)).ok
    # Once her jobs are done, she may submit again.
    assert (await result_of(queue.submit(job("a4"), "@alice:x"))).ok


async def test_queue_size_limit(make_queue):
    runner = FakeRunner(hold={"running"})
    queue = make_queue(runner, max_size=2)
    queue.submit(job("running"), "@a:x")
    await runner.wait_started("running")
    queue.submit(job("w1"), "@b:x")
    queue.submit(job("w2"), "@c:x")
    with pytest.raises(QueueFull, match=r"queue is full \(2 waiting\)"):
        queue.submit(job("w3"), "@d:x")
    runner.release("running")


# ---- failures -----------------------------------------------------------------------------


async def test_a_failing_job_gives_an_error_and_the_next_job_runs(make_queue):
    runner = FakeRunner(fail={"bad": RuntimeError("mat1 and mat2 shapes cannot be multiplied")})
    queue = make_queue(runner)
    bad = queue.submit(job("bad"), "@a:x")
    good = queue.submit(job("good"), "@a:x")
    failed = await result_of(bad)
    assert not failed.ok
    assert failed.images == ()
    assert failed.error == (
        "generation failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied"
    )
    assert failed.model == "fake-model"
    assert (await result_of(good)).ok
    # The worker is still there for later jobs.
    assert (await result_of(queue.submit(job("later"), "@a:x"))).ok


async def test_generation_error_message_is_passed_through_verbatim(make_queue):
    words = "The GPU ran out of memory for 4 × 2048x2048; try a smaller size."
    queue = make_queue(FakeRunner(fail={"big": GenerationError(words)}))
    result = await result_of(queue.submit(job("big"), "@a:x"))
    assert result.error == words


async def test_failed_jobs_do_not_count_against_the_user_afterwards(make_queue):
    queue = make_queue(FakeRunner(fail={"bad": ValueError("x")}), per_user=1)
    assert not (await result_of(queue.submit(job("bad"), "@a:x"))).ok
    assert (await result_of(queue.submit(job("good"), "@a:x"))).ok


# ---- speed and ETA ------------------------------------------------------------------------


async def test_speed_and_eta_are_known_after_a_job_finished(make_queue):
    runner = FakeRunner(hold={"second"})
    queue = make_queue(runner)
    assert queue.seconds_per_cost is None
    first = queue.submit(job("first"), "@a:x")
    assert first.eta_seconds is None  # nothing measured yet
    await result_of(first)
    assert queue.seconds_per_cost is not None and queue.seconds_per_cost >= 0
    queue.submit(job("second"), "@a:x")
    await runner.wait_started("second")
    third = queue.submit(job("third"), "@b:x")
    assert third.ahead == 1
    assert third.eta_seconds is not None and third.eta_seconds >= 0
    runner.release("second")
    await result_of(third)


async def test_eta_grows_with_the_work_ahead_not_the_number_of_jobs(make_queue):
    runner = FakeRunner(hold={"running"})
    queue = make_queue(runner)
    queue.observe(job("calibration"), 1.0)  # e.g. the warm-up: 1 s for an 8x8, 1-step job
    queue.submit(job("running"), "@a:x")
    await runner.wait_started("running")
    big = Job(prompt="big", seed=1, steps=9, width=16, height=16, count=2)  # 40x the work
    queue.submit(big, "@a:x")
    small = queue.submit(job("small"), "@b:x")
    # About 1 s left of the running job plus 40 s for the big one.
    assert 39 < small.eta_seconds < 42
    places = queue.places()
    assert [p.position for p in places] == [0, 1, 2]
    assert places[0].ticket.job.prompt == "running" and places[0].eta_seconds == 0
    assert places[1].eta_seconds < 1.01 and places[2].eta_seconds == pytest.approx(
        small.eta_seconds, abs=0.5
    )
    runner.release("running")
    await result_of(small)


async def test_cancel_takes_waiting_jobs_out_and_leaves_the_running_one(make_queue):
    runner = FakeRunner(hold={"a1"})
    queue = make_queue(runner)
    running = queue.submit(job("a1"), "@a:x")
    await runner.wait_started("a1")
    mine = [queue.submit(job("a2"), "@a:x", tag="$e2"), queue.submit(job("a3"), "@a:x")]
    theirs = queue.submit(job("b1"), "@b:x")
    taken = queue.cancel(lambda t: t.owner == "@a:x")
    assert taken == mine
    for ticket in mine:
        result = await result_of(ticket)
        assert result.cancelled and not result.ok and not result.images
    assert queue.depth == 2  # the running one and @b's
    runner.release("a1")
    assert (await result_of(running)).ok and (await result_of(theirs)).ok
    assert "a2" not in runner.started and "a3" not in runner.started
    # Cancelling by tag (a redacted command) once it has run takes nothing.
    assert queue.cancel(lambda t: t.tag == "$e2") == []


async def test_pause_holds_jobs_until_resume(make_queue):
    runner = FakeRunner()
    queue = make_queue(runner)
    queue.pause()
    ticket = queue.submit(job("held"), "@a:x")
    assert ticket.eta_seconds is None  # no honest estimate while paused
    await asyncio.sleep(0.2)
    assert runner.started == [] and not ticket.result.done()
    queue.resume()
    assert (await result_of(ticket)).ok


# ---- shutdown -----------------------------------------------------------------------------


async def test_close_lets_the_running_job_finish_and_hands_back_the_waiting_ones(make_queue):
    runner = FakeRunner(hold={"running"})
    queue = make_queue(runner)
    running = queue.submit(job("running"), "@a:x")
    waiting = [queue.submit(job(f"w{i}"), "@b:x") for i in range(2)]
    await runner.wait_started("running")
    closing = asyncio.create_task(queue.close())
    for ticket in waiting:
        result = await result_of(ticket)
        assert result.interrupted and not result.ok  # kept by the bot for its next start
    assert not closing.done()  # still waiting for the running job
    runner.release("running")
    await asyncio.wait_for(closing, TIMEOUT)
    assert (await result_of(running)).ok
    assert runner.started == ["running"]  # the waiting jobs never reached the runner


async def test_submit_after_close_is_refused(make_queue):
    queue = make_queue(FakeRunner())
    await queue.close()
    with pytest.raises(QueueFull, match="shutting down"):
        queue.submit(job("late"), "@a:x")


async def test_close_of_an_idle_queue_returns_promptly(make_queue):
    queue = make_queue(FakeRunner())
    await asyncio.wait_for(queue.close(), TIMEOUT)
    assert queue.depth == 0


# ---- a worker that dies -------------------------------------------------------------------


async def test_a_dead_worker_is_replaced_and_the_next_job_runs(make_queue):
    """What is not an Exception (here SystemExit from deep inside a library) ends the
    worker thread; its job is answered with an error and a new worker takes the next."""
    runner = FakeRunner(fail={"fatal": SystemExit(1)})
    queue = make_queue(runner)
    fatal = queue.submit(job("fatal"), "@a:x")
    after = queue.submit(job("after"), "@b:x")
    result = await result_of(fatal)
    assert not result.ok and "GPU worker stopped" in result.error
    assert (await result_of(after)).ok
    assert queue.restarts == 1 and queue.worker_alive


async def test_resumed_jobs_are_not_refused_for_the_limits(make_queue):
    """Jobs accepted before a restart were within the limits then; they are all queued
    again, even beyond today's per-person limit."""
    runner = FakeRunner(hold={"r0"})
    queue = make_queue(runner, per_user=1)
    tickets = [queue.submit(job(f"r{i}"), "@a:x", check_limits=False) for i in range(3)]
    with pytest.raises(QueueFull, match="limit is 1"):
        queue.submit(job("new"), "@a:x")
    runner.release("r0")
    assert [(await result_of(t)).ok for t in tickets] == [True] * 3


async def test_a_device_fault_hands_the_job_back_and_stops_the_worker(make_queue):
    """After a CUDA error every later call fails too: the job is handed back (the bot
    keeps it for a new process), the worker takes no more, and `failed` is set."""
    runner = FakeRunner(fail={"bad": RuntimeError("CUDA error: device-side assert triggered")})
    queue = make_queue(runner)
    bad = queue.submit(job("bad"), "@a:x")
    after = queue.submit(job("after"), "@b:x")
    result = await result_of(bad)
    assert result.interrupted and "device-side assert" in result.error
    await asyncio.wait_for(queue.failed.wait(), TIMEOUT)
    await queue.close()
    assert (await result_of(after)).interrupted
    assert runner.started == ["bad"]


def test_out_of_memory_is_not_a_device_fault():
    class OutOfMemoryError(RuntimeError):
        pass

    assert not is_device_fault(OutOfMemoryError("CUDA out of memory. CUDA error: ..."))
    assert is_device_fault(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_device_fault(ValueError("bad shape"))


# ---- batches --------------------------------------------------------------------------------


class BatchingRunner(FakeRunner):
    """Makes jobs of the same size in one call, and records the calls."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls: list[list[str]] = []

    def batch_key(self, job: Job):
        return (job.width, job.height)

    def generate(self, job: Job) -> list:
        self.calls.append([job.prompt])
        return super().generate(job)

    def generate_batch(self, jobs: list[Job]) -> list[list]:
        self.calls.append([job.prompt for job in jobs])
        return [FakeRunner.generate(self, job) for job in jobs]


async def test_jobs_of_one_shape_waiting_together_share_a_call(make_queue):
    runner = BatchingRunner(hold={"first"})
    queue = make_queue(runner)
    queue.max_batch = 4
    first = queue.submit(job("first"), "@a:x")
    await runner.wait_started("first")
    same = [queue.submit(job(f"same {i}"), "@a:x") for i in range(3)]
    other = queue.submit(Job("other", 1, 1, 16, 16), "@b:x")
    extra = queue.submit(job("fourth of a kind"), "@b:x")
    runner.release("first")
    results = [await result_of(t) for t in (first, *same, other, extra)]
    assert all(r.ok for r in results)
    assert runner.calls == [
        ["first"],
        ["same 0", "same 1", "same 2", "fourth of a kind"],
        ["other"],
    ]
    batched = results[1]
    assert batched.extra["batch_pictures"] == 4
    assert [len(r.images) for r in results] == [1] * 6


async def test_jobs_made_in_one_batch_are_not_counted_ahead_of_each_other(make_queue):
    """ "Queued: N jobs ahead" counts the jobs made before yours, not those made with it."""
    runner = BatchingRunner(hold={"first"})
    queue = make_queue(runner)
    queue.max_batch = 3
    first = queue.submit(job("first"), "@a:x")
    await runner.wait_started("first")
    together = [queue.submit(job(f"together {i}"), "@a:x") for i in range(3)]
    other = queue.submit(Job("other", 1, 1, 16, 16), "@b:x")
    later = queue.submit(job("next batch"), "@b:x")
    # Behind the running job only; "other" is a batch of its own after the three, and the
    # batch of three is full: "next batch" waits for the two.
    assert [t.ahead for t in together] == [1, 1, 1]
    assert (other.ahead, later.ahead) == (4, 5)
    runner.release("first")
    for ticket in (first, *together, other, later):
        assert (await result_of(ticket)).ok
    assert runner.calls[1:] == [
        ["together 0", "together 1", "together 2"],
        ["other"],
        ["next batch"],
    ]


async def test_a_lone_job_is_not_held_back_for_company(make_queue):
    runner = BatchingRunner()
    queue = make_queue(runner)
    queue.max_batch = 8
    result = await result_of(queue.submit(job("alone"), "@a:x"))
    assert result.ok and runner.calls == [["alone"]] and "batch_pictures" not in result.extra


async def test_a_batch_never_goes_over_max_batch_pictures(make_queue):
    runner = BatchingRunner(hold={"first"})
    queue = make_queue(runner)
    queue.max_batch = 3
    queue.submit(job("first"), "@a:x")
    await runner.wait_started("first")
    tickets = [queue.submit(job(f"two {i}", count=2), "@a:x") for i in range(2)]
    runner.release("first")
    for ticket in tickets:
        assert (await result_of(ticket)).ok
    assert runner.calls[1:] == [["two 0"], ["two 1"]]


async def test_a_failing_batch_is_made_again_job_by_job(make_queue):
    """One bad job in a batch fails alone; the others still get their pictures."""
    runner = BatchingRunner(hold={"first"}, fail={"bad": ValueError("NaN in the latents")})
    queue = make_queue(runner)
    queue.max_batch = 4
    queue.submit(job("first"), "@a:x")
    await runner.wait_started("first")
    tickets = [queue.submit(job(prompt), "@a:x") for prompt in ("good", "bad", "also good")]
    runner.release("first")
    good, bad, also = [await result_of(t) for t in tickets]
    assert good.ok and also.ok and len(good.images) == 1
    assert not bad.ok and "NaN in the latents" in bad.error
    assert runner.calls[1:] == [["good", "bad", "also good"], ["good"], ["bad"], ["also good"]]


# ---- several devices ---------------------------------------------------------------------


async def test_each_device_has_a_worker_and_they_share_one_queue():
    first, second = FakeRunner(hold={"a", "b"}), FakeRunner(hold={"a", "b"})
    queue = GenerationQueue([first, second], max_size=10, per_user=10)
    queue.start()
    try:
        a, b = queue.submit(job("a"), "@a:x"), queue.submit(job("b"), "@b:x")
        # Both run at once, one on each device, before either is released.
        for _ in range(500):
            if sorted(first.started + second.started) == ["a", "b"]:
                break
            await asyncio.sleep(0.01)
        assert [p.position for p in queue.places()] == [0, 0] and queue.depth == 2
        assert len(first.started) == len(second.started) == 1
        for runner in (first, second):
            runner.release("a")
            runner.release("b")
        assert (await result_of(a)).ok and (await result_of(b)).ok
        assert first.threads != second.threads
    finally:
        await queue.close(timeout=TIMEOUT)


class PlacedRunner(FakeRunner):
    """A runner on a named device that notes the priority of the thread making its job."""

    def __init__(self, device: str):
        super().__init__(hold={"a", "b"})
        self.placement = SimpleNamespace(device=device)
        self.niceness: int | None = None

    def generate(self, job: Job) -> list:
        self.niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return super().generate(job)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's priority: Linux")
async def test_a_cpu_worker_runs_below_the_chat_side_and_a_gpu_worker_does_not(monkeypatch):
    """On a CPU the next batch's arithmetic must not hold up the upload of the last one;
    a GPU worker keeps the chat side's priority, so that the GPU never waits for it."""
    import torch

    # The GPU worker makes cuda:0 its thread's device, on a machine that may have none.
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    cpu, gpu = PlacedRunner("cpu"), PlacedRunner("cuda:0")
    chat = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    queue = GenerationQueue([cpu, gpu], max_size=10, per_user=10)
    queue.start()
    try:
        a, b = queue.submit(job("a"), "@a:x"), queue.submit(job("b"), "@b:x")
        for _ in range(500):
            if cpu.niceness is not None and gpu.niceness is not None:
                break
            await asyncio.sleep(0.01)
        for runner in (cpu, gpu):
            runner.release("a")
            runner.release("b")
        assert (await result_of(a)).ok and (await result_of(b)).ok
        assert cpu.niceness == min(19, chat + CPU_NICENESS)
        assert gpu.niceness == chat
        # The usage log names the device that made each picture.
        assert {(await result_of(t)).extra["worker"] for t in (a, b)} == {"cpu", "cuda:0"}
    finally:
        await queue.close(timeout=TIMEOUT)


async def test_a_device_fault_on_one_device_stops_them_all():
    broken = FakeRunner(fail={"bad": RuntimeError("CUDA error: misaligned address")})
    queue = GenerationQueue([broken, broken], max_size=10, per_user=10)
    queue.start()
    bad = queue.submit(job("bad"), "@a:x")
    assert (await result_of(bad)).interrupted
    await asyncio.wait_for(queue.failed.wait(), TIMEOUT)
    await queue.close(timeout=TIMEOUT)
    assert not queue.worker_alive


class LosingRunner(FakeRunner):
    """A remote worker that is lost (or found down) at a job, `losses` times in all."""

    def __init__(self, losses: int, lost: Exception = WorkerLost("its node died")):
        super().__init__()
        self.losses = losses
        self.lost = lost

    def generate(self, job: Job) -> list:
        if self.losses:
            self.losses -= 1
            raise self.lost
        return super().generate(job)


async def test_a_lost_worker_gives_its_job_back_to_the_front_and_it_is_made_once():
    runner = LosingRunner(losses=1)
    queue = GenerationQueue(runner, max_size=10, per_user=10)
    queue.start()
    first, second = queue.submit(job("lost once"), "@a:x"), queue.submit(job("next"), "@a:x")
    results = [await asyncio.wait_for(t.result, TIMEOUT) for t in (first, second)]
    await queue.close()
    assert all(r.ok for r in results) and queue.given_back == 1
    # Given back to the front: made before the job that waited behind it.
    assert runner.started == ["lost once", "next"]


async def test_a_job_that_loses_three_workers_fails_instead_of_going_round_again():
    queue = GenerationQueue(LosingRunner(losses=10), max_size=10, per_user=10)
    queue.start()
    result = await asyncio.wait_for(queue.submit(job("poison"), "@a:x").result, TIMEOUT)
    await queue.close()
    assert not result.ok and "3 GPU workers were lost while making it" in result.error
    assert queue.given_back == 2


async def test_a_worker_down_before_the_batch_was_sent_counts_no_loss():
    """Idle workers that were down when a job came (the cluster away): the job goes back
    each time, uncounted, and waits for a worker instead of failing."""

    down = LosingRunner(losses=5, lost=WorkerNotReady("the worker is not up"))
    queue = GenerationQueue(down, max_size=10, per_user=10)
    queue.start()
    result = await asyncio.wait_for(queue.submit(job("waits"), "@a:x").result, TIMEOUT)
    await queue.close()
    assert result.ok and queue.given_back == 0
