"""The bot's side of the cluster: it starts the bridge process (the Ray driver), keeps it
running (a new one, after a growing pause, when it ends: the head node went away, say),
and carries batches to the worker slots and their answers back. No Ray here.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from ..job import GenerationError
from ..tickets import WorkerLost, WorkerNotReady
from . import frames
from .spec import ClusterSpec

log = logging.getLogger(__name__)
ray_log = logging.getLogger("generation.cluster.ray")  # Ray's own lines, at DEBUG

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0


class ClusterUnavailable(Exception):
    """The cluster could not be used; the words say why."""


@dataclass
class Slot:
    """One worker slot, as the bridge last reported it."""

    state: str = "starting"  # starting | up | failed | down
    info: dict = field(default_factory=dict)  # the actor's own facts while it is up
    problem: str | None = None  # why it failed or went down, last time
    generation: int = 0  # which of the slot's actors (of this bridge) it is about


class Link:
    def __init__(self, spec: ClusterSpec):
        self.spec = spec
        self.slots = [Slot() for _ in range(spec.workers)]
        self.connected = False
        self.problem: str | None = None  # why the cluster cannot be used now
        self.facts: dict = {}  # what the bridge found at its connection
        self.survey: dict | None = None  # with spec.survey: the workers and the room
        self.reconnects = 0
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.SimpleQueue] = {}  # request -> its messages
        self._process: subprocess.Popen | None = None
        self._channel: frames.Channel | None = None
        self._stopping = False
        self._attempted = threading.Event()
        self._auth_refused = False
        self._thread: threading.Thread | None = None

    # ---- start and stop ---------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Start the bridge and wait for its first word: ClusterUnavailable when it could
        not connect within `timeout` (the start then fails with why)."""
        listening = _listening(self.spec.address)
        if listening is not None:
            raise ClusterUnavailable(listening)  # at once: Ray itself would try for minutes
        self._thread = threading.Thread(target=self._supervise, name="ray-bridge", daemon=True)
        self._thread.start()
        self._attempted.wait(timeout)
        if self.spec.survey:  # the bridge looks, answers and ends
            self._thread.join(timeout)
            if self.survey is not None:
                return
        with self._cond:
            failed = not self.connected or self.spec.survey
            if failed:
                problem = self.problem or (f"no answer from the Ray cluster at "
                                           f"{self.spec.address} within {timeout:.0f} s")
                self._stopping = True
        if failed:
            self._end_process()
            raise ClusterUnavailable(problem)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._end_process()  # outside the lock: the reader thread may need it meanwhile
        if self._thread is not None:
            self._thread.join(10)

    def _end_process(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            process.stdin.close()  # the bridge stops when its stdin ends
            process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()

    # ---- what the workers' threads call -------------------------------------------------------

    def up(self, slot: int) -> bool:
        return self.connected and self.slots[slot].state == "up"

    def wait_up(self, slot: int, closing) -> bool:
        """Block until `slot` has a worker up (True) or the queue closes (False)."""
        with self._cond:
            while not self.up(slot):
                if closing() or self._stopping:
                    return False
                self._cond.wait(0.5)
        return True

    def run(self, slot: int, jobs: list, on_progress) -> dict:
        """Make `jobs` on the worker in `slot`: its payload ({"images": …, "worker": …}).
        Raises WorkerLost when the worker (or the bridge) went away meanwhile, and
        GenerationError with the worker's words when the batch failed there."""
        request, inbox = next(self._ids), queue.SimpleQueue()
        with self._cond:
            channel = self._channel
            if channel is None or not self.up(slot):
                raise WorkerNotReady("the worker is not up")  # nothing was sent
            generation = self.slots[slot].generation
            self._waiting[request] = inbox
        try:
            if not channel.send(("run", request, slot, jobs)):
                raise WorkerNotReady("the connection to the cluster ended")
            while True:
                kind, value = inbox.get()
                if kind == "progress":
                    on_progress(value)
                elif kind == "lost":
                    self._went_down(slot, generation, value)  # no second batch onto it
                    raise WorkerLost(value)
                elif "error" in value:
                    raise GenerationError(value["error"])
                else:
                    return value
        finally:
            with self._cond:
                self._waiting.pop(request, None)

    # ---- the bridge process -------------------------------------------------------------------

    def _supervise(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stopping:
            started = time.monotonic()
            self._run_bridge()
            self._attempted.set()
            if self._stopping or self.spec.survey:
                return
            if time.monotonic() - started > 60:
                backoff = BACKOFF_FIRST  # it ran a good while: start over quickly
            pause = backoff * random.uniform(0.75, 1.25)
            log.warning("the Ray cluster at %s is not usable (%s); trying again in %.0f s",
                        self.spec.address, self.problem or "the bridge ended", pause)
            with self._cond:
                self._cond.wait(pause)
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.reconnects += 1

    def _run_bridge(self) -> None:
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")  # nothing leaves the company
        env.pop("RAY_AUTH_TOKEN", None)  # only the configured token file counts
        if self.spec.token_path is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.spec.token_path))
        else:  # allow_unauthenticated: no token is sent
            env["RAY_AUTH_MODE"] = "disabled"
            env.pop("RAY_AUTH_TOKEN_PATH", None)
        self._auth_refused = False
        listening = _listening(self.spec.address)
        if listening is not None:  # Ray would try for minutes: try again after a pause
            self.problem = listening
            return
        with self._cond:  # a stop() meanwhile must find the process, or none started
            if self._stopping:
                return
            process = subprocess.Popen([sys.executable, "-m", "generation.cluster.bridge"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=env)
            self._process = process
        threading.Thread(target=self._read_stderr, args=(process.stderr,), daemon=True,
                         name="ray-bridge-stderr").start()
        channel = frames.Channel(process.stdin)
        channel.send(("hello", self.spec))
        try:
            while (message := frames.receive(process.stdout)) is not None:
                self._take(message, channel)
        finally:
            process.stdout.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
            self._lost_everything()

    def _take(self, message: tuple, channel: frames.Channel) -> None:
        kind = message[0]
        if kind == "connected":
            with self._cond:
                self.connected, self.problem, self.facts = True, None, message[1]
                self._channel = channel
            log.info("connected to the Ray cluster at %s: %d node(s), token authentication "
                     "%s", self.spec.address, message[1]["nodes"],
                     "on" if message[1]["auth"] == "token" else "OFF")
            self._attempted.set()
        elif kind == "survey":
            self.survey = message[1]
        elif kind == "refused":
            problem = message[1]
            if self._auth_refused:
                problem += (" (the cluster refused the token of generation.ray.token_file)"
                            if self.spec.token_path else " (the cluster asks for a token: "
                            "set generation.ray.token_file)")
            self.problem = problem
        elif kind == "slot":
            self._slot(*message[1:])
        elif kind in ("progress", "done", "lost"):
            with self._cond:
                inbox = self._waiting.get(message[1])
            if inbox is not None:
                inbox.put((kind, message[2]))
        elif kind == "log":
            log.log(message[1], "%s", message[2])

    def _slot(self, slot: int, state: str, detail, generation: int) -> None:
        with self._cond:
            current = self.slots[slot]
            self.slots[slot] = Slot(state, detail if state == "up" else {},
                                    detail if isinstance(detail, str) else current.problem,
                                    generation)
            self._cond.notify_all()
        if state == "up":
            log.info("GPU worker %s is up (%s, models %s)", detail["worker"],
                     detail.get("device"), ", ".join(detail.get("models", [])))
        elif state == "failed":
            log.error("a GPU worker could not start: %s", detail)
        elif state == "down":
            log.warning("GPU worker %s went away: %s", current.info.get("worker", slot), detail)

    def _went_down(self, slot: int, generation: int, why: str) -> None:
        with self._cond:
            current = self.slots[slot]
            # Only the actor the batch was sent to: a new one in the slot stays up.
            if current.state == "up" and current.generation == generation:
                self.slots[slot] = Slot("down", {}, why, generation)
                self._cond.notify_all()

    def _lost_everything(self) -> None:
        """The bridge ended: every slot is down and every batch on the way is lost."""
        with self._cond:
            self.connected, self._channel = False, None
            if self.problem is None and not self._stopping:
                self.problem = "the connection to the Ray cluster ended"
            for index, slot in enumerate(self.slots):
                if slot.state == "up":
                    # The next bridge counts its actors anew: a generation of -1 is none.
                    self.slots[index] = Slot("down", {}, "the connection to the cluster ended",
                                             -1)
            for inbox in self._waiting.values():
                inbox.put(("lost", "the connection to the Ray cluster ended"))
            self._cond.notify_all()

    def _read_stderr(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if "InvalidAuthToken" in line or "Unauthenticated" in line:
                self._auth_refused = True
            ray_log.debug("%s", line)
        stream.close()


def _listening(address: str) -> str | None:
    """Why nothing can answer at a HOST:PORT address (None: something listens there, or
    the address is `auto`, which Ray resolves itself)."""
    if address == "auto":
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        return (f"nothing answers at {address} ({exc.strerror or exc}): is Ray running on "
                "the head node, and is generation.ray.address its address?")
    return None
