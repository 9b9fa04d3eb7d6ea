"""The bot's side of the cluster: it starts the bridge process (the Ray driver), or connects
to one that runs as its own user (socket mode, `generation.ray.bridge_socket`), keeps it
running (a new one, after a growing pause, when it ends: the head node went away, say),
and carries batches to the worker slots and their answers back. No Ray here.

The bridge is on the cluster's side of the trust boundary: every frame from it is checked
(`messages.from_bridge`, the counts of a batch's pictures here, the pictures in `remote`)
before it is used, and a spawned bridge gets nothing of the bot's (`bridge_environment`).
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import queue
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import ClusterUnavailable
from ..job import GenerationError
from ..scheduling.runner import WorkerLost, WorkerNotReady
from . import frames, messages
from .spec import ClusterSpec

log = logging.getLogger(__name__)
ray_log = logging.getLogger("generation.cluster.ray")  # Ray's own lines, at DEBUG

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
# A bridge that has not taken a frame of the bot's within this many seconds stopped reading:
# its connection ends (a new bridge follows), so that no worker's send blocks for ever.
SEND_LIMIT = 60.0


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
        self._room: dict[int, int] = {}  # request -> the bytes of pictures it may get
        self._bridge: _Bridge | None = None
        self._home: str | None = None  # a spawned bridge's working directory and HOME
        self._channel: frames.Channel | None = None
        self._stopping = False
        self._attempted = threading.Event()
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
                problem = self.problem or (
                    f"no answer from the Ray cluster at {self.spec.address} within {timeout:.0f} s"
                )
                self._stopping = True
        if failed:
            self._end_bridge()
            raise ClusterUnavailable(problem)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._end_bridge()  # outside the lock: the reader thread may need it meanwhile
        if self._thread is not None:
            self._thread.join(10)
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)

    def _end_bridge(self) -> None:
        if self._bridge is not None:
            self._bridge.end()

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
        """Make `jobs` on the worker in `slot`: its payload ({"images": [[PNG bytes] per
        job], "worker": …, "seconds": …}), with as many pictures per job as it asked for.
        Raises WorkerLost when the worker (or the bridge) went away meanwhile, and
        GenerationError with the worker's words when the batch failed there (NOT_VALID
        when what came back is not a valid answer)."""
        request, inbox = next(self._ids), queue.SimpleQueue()
        parts: list[bytes] = []
        header = {
            "kind": "run",
            "request": request,
            "slot": slot,
            "jobs": [messages.job_to_wire(job, parts) for job in jobs],
        }
        with self._cond:
            channel = self._channel
            if channel is None or not self.up(slot):
                raise WorkerNotReady("the worker is not up")  # nothing was sent
            generation = self.slots[slot].generation
            self._waiting[request] = inbox
            self._room[request] = sum(
                messages.png_bound(job.width, job.height) * job.count for job in jobs
            )
        try:
            if not channel.send(header, parts):
                raise WorkerNotReady("the connection to the cluster ended")
            while True:
                kind, answer, pictures = inbox.get()
                if kind == "progress":
                    on_progress(messages.progress_from_wire(answer["progress"]))
                elif kind == "lost":
                    self._went_down(slot, generation, answer["words"])  # no second batch
                    raise WorkerLost(answer["words"])
                elif kind == "invalid":
                    raise GenerationError(messages.NOT_VALID)
                elif "error" in answer:
                    raise GenerationError(answer["error"])
                else:
                    return {
                        "images": _per_job(answer["counts"], pictures, jobs),
                        "worker": answer["worker"],
                        "seconds": answer["seconds"],
                    }
        finally:
            with self._cond:
                self._waiting.pop(request, None)
                self._room.pop(request, None)

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
            log.warning(
                "the Ray cluster at %s is not usable (%s); trying again in %.0f s",
                self.spec.address,
                self.problem or "the bridge ended",
                pause,
            )
            with self._cond:
                self._cond.wait(pause)
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.reconnects += 1

    def _run_bridge(self) -> None:
        """One bridge, from its start (or connection) to its end: the same in both modes,
        a connection that ends is a bridge that ended."""
        listening = _listening(self.spec.address)
        if listening is not None:  # Ray would try for minutes: try again after a pause
            self.problem = listening
            return
        with self._cond:  # a stop() meanwhile must find the bridge, or none started
            if self._stopping:
                return
            try:
                bridge = self._open()
            except OSError as exc:
                self.problem = (
                    f"no bridge answers at generation.ray.bridge_socket "
                    f"{self.spec.bridge_socket} ({exc.strerror or exc})"
                )
                return
            self._bridge = bridge
        channel = frames.Channel(bridge.writer, SEND_LIMIT, bridge.stuck)
        channel.send({"kind": "hello", "spec": messages.spec_to_wire(self.spec)})
        try:
            while (frame := frames.receive(bridge.reader, self._admit)) is not None:
                self._take(*frame, channel)
        except frames.FrameError as exc:
            log.error(
                "the Ray bridge sent what is not a frame the bot accepts (%s): its connection ends",
                exc,
            )
            self.problem = "the bridge sent a frame the bot does not accept"
        except OSError as exc:  # the connection broke
            self.problem = self.problem or f"the connection to the bridge broke ({exc})"
        except Exception:  # a bug of this side: the bridge is started anew, not given up
            log.exception("reading the Ray bridge's frames failed: its connection ends")
            self.problem = "the bot's side of the bridge failed"
        finally:
            bridge.finish()
            self._lost_everything()

    def _open(self) -> _Bridge:
        """Connect to the bridge's socket (socket mode), or start a bridge process with
        nothing of the bot's: an allowlisted environment, a private working directory of
        its own (HOME too), only its pipes."""
        if self.spec.bridge_socket is not None:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.connect(self.spec.bridge_socket)
            except OSError:
                connection.close()
                raise
            return _Bridge(
                connection.makefile("rb"), connection.makefile("wb"), connection=connection
            )
        if self._home is None:
            self._home = tempfile.mkdtemp(prefix="imgbot-bridge-")  # mode 0700
        not_dumpable()
        process = subprocess.Popen(
            [sys.executable, "-m", "generation.cluster.bridge"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=bridge_environment(self._home),
            cwd=self._home,
            close_fds=True,
        )
        threading.Thread(
            target=_read_stderr, args=(process.stderr,), daemon=True, name="ray-bridge-stderr"
        ).start()
        return _Bridge(process.stdout, process.stdin, process=process)

    def _admit(self, header: dict, count: int, total: int) -> None:
        """Before a frame's parts are read: only a "done" of a batch that waits carries
        pictures, and no more bytes of them than that batch's jobs can need (`png_bound`);
        anything else ends the connection unread (frames.FrameError)."""
        request = header.get("request")
        with self._cond:  # a batch's one "done" uses its room up: a second carries nothing
            room = (
                self._room.pop(request, None)
                if header["kind"] == "done" and type(request) is int
                else None
            )
        if not count and not total:
            return
        if room is None:
            raise frames.FrameError(
                f"a {header['kind'][:40]!r} frame carries {total} bytes of "
                "parts for no batch that waits for pictures"
            )
        if total > room:
            raise frames.FrameError(
                f"a 'done' frame carries {total} bytes of pictures, more "
                f"than its batch can need ({room})"
            )

    def _take(self, header: dict, parts: list[bytes], channel: frames.Channel) -> None:
        """One frame from the bridge, checked before anything of it is used: one that does
        not fit is dropped with a log line, and a batch it answered fails."""
        try:
            header = messages.from_bridge(header, parts)  # its free words one clean line
            if header["kind"] == "slot" and not 0 <= header["slot"] < len(self.slots):
                raise messages.Invalid(
                    f"a 'slot' frame names slot {header['slot']}, of {len(self.slots)}"
                )
        except messages.Invalid as exc:
            log.warning("a message from the Ray bridge was dropped: %s", exc)
            request = header.get("request")
            with self._cond:
                inbox = self._waiting.get(request) if type(request) is int else None
            if inbox is not None:
                inbox.put(("invalid", header, []))
            return
        kind = header["kind"]
        if kind == "connected":
            facts = {key: header[key] for key in ("nodes", "auth", "versions")}
            with self._cond:
                self.connected, self.problem, self.facts = True, None, facts
                self._channel = channel
            log.info(
                "connected to the Ray cluster at %s: %d node(s), token authentication %s",
                self.spec.address,
                facts["nodes"],
                "on" if facts["auth"] == "token" else "OFF",
            )
            self._attempted.set()
        elif kind == "survey":
            self.survey = {"workers": header["workers"], "room": header["room"]}
        elif kind == "refused":
            problem = header["words"]
            if header["token_refused"]:
                problem += (
                    " (the cluster refused the token of generation.ray.token_file)"
                    if self.spec.token_path and self.spec.bridge_socket is None
                    else " (the cluster refused the bridge's token: RAY_AUTH_TOKEN_PATH "
                    "of imgbot-bridge@.service)"
                    if self.spec.bridge_socket
                    else " (the cluster asks for a token: set generation.ray.token_file)"
                )
            self.problem = problem
        elif kind == "slot":
            self._slot(
                header["slot"],
                header["state"],
                header.get("info") or header.get("problem"),
                header["generation"],
            )
        elif kind in ("progress", "done", "lost"):
            with self._cond:
                inbox = self._waiting.get(header["request"])
            if inbox is None:
                log.warning(
                    "a message from the Ray bridge was dropped: a %r for a batch "
                    "that is not waiting",
                    kind,
                )
            else:
                inbox.put((kind, header, parts))
        elif kind == "log":
            log.log(
                min(max(header["level"], logging.DEBUG), logging.CRITICAL), "%s", header["words"]
            )

    def _slot(self, slot: int, state: str, detail, generation: int) -> None:
        with self._cond:
            current = self.slots[slot]
            self.slots[slot] = Slot(
                state,
                detail if state == "up" else {},
                detail if isinstance(detail, str) else current.problem,
                generation,
            )
            self._cond.notify_all()
        if state == "up":
            log.info(
                "GPU worker %s is up (%s, models %s)",
                detail["worker"],
                detail.get("device"),
                ", ".join(detail.get("models", [])),
            )
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
                    self.slots[index] = Slot("down", {}, "the connection to the cluster ended", -1)
            for inbox in self._waiting.values():
                inbox.put(("lost", {"words": "the connection to the Ray cluster ended"}, []))
            self._cond.notify_all()


class _Bridge:
    """One bridge as the link holds it: a process it spawned, or a connection to one."""

    def __init__(
        self,
        reader: BinaryIO,
        writer: BinaryIO,
        process: subprocess.Popen | None = None,
        connection: socket.socket | None = None,
    ):
        self.reader, self.writer = reader, writer
        self.process, self.connection = process, connection
        self.pid = None if process is None else process.pid
        self._ended = threading.Event()

    def end(self) -> None:
        """Ask the bridge to end (it stops when its input ends); force it after 10 s. Never
        blocks on a bridge that stopped reading: see `_close_writer`."""
        if self.connection is not None:
            self._shutdown(socket.SHUT_WR)  # first: it frees a send blocked on a full socket
        closing = self._close_writer()
        if self.process is not None:
            _wait_or_kill(self.process)
        elif not self._ended.wait(10):
            self._shutdown(socket.SHUT_RDWR)  # the reader stops at once
        closing.join(10)

    def finish(self) -> None:
        """After its last frame: close this side, and wait for a spawned process."""
        if self.connection is not None:
            self._shutdown(socket.SHUT_RDWR)
        closing = self._close_writer()
        try:
            self.reader.close()
        except OSError:
            pass
        if self.process is not None:
            _wait_or_kill(self.process)
        closing.join(10)
        if self.connection is not None:
            self.connection.close()
        self._ended.set()

    def stuck(self) -> None:
        """The bridge has not taken a frame within SEND_LIMIT: end its connection now."""
        log.error(
            "the Ray bridge has not read a frame of the bot's for %.0f s: its connection ends",
            SEND_LIMIT,
        )
        if self.process is not None:
            self.process.kill()
        else:
            self._shutdown(socket.SHUT_RDWR)

    def _close_writer(self) -> threading.Thread:
        """Close the writing side on a thread of its own: a send that a bridge which stopped
        reading blocks (a frame bigger than the pipe's or socket's buffer) holds the
        writer, and its close would wait for it. The socket's shutdown, or the process's
        end (killed after 10 s), makes that send fail and the close go through."""

        def close() -> None:
            try:
                self.writer.close()
            except (OSError, ValueError):
                pass

        thread = threading.Thread(target=close, name="ray-bridge-close", daemon=True)
        thread.start()
        return thread

    def _shutdown(self, how: int) -> None:
        try:
            self.connection.shutdown(how)
        except OSError:  # already shut, or never connected
            pass


def _wait_or_kill(process: subprocess.Popen) -> None:
    """A spawned bridge that does not end within 10 s of being told is killed."""
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


# What a spawned bridge keeps of the bot's environment: what Python and Ray need, nothing
# else (no CREDENTIALS_DIRECTORY, no IMGBOT_*, no RAY_AUTH_*: the bridge sets Ray's
# authentication itself from the spec it is told). Of the hub's settings only
# HF_HUB_OFFLINE: the bridge loads no model, and HF_TOKEN is a secret of the bot's.
KEPT_NAMES = ("PATH", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "HF_HUB_OFFLINE")
KEPT_PREFIXES = ("LC_", "RAY_")


def bridge_environment(home: str) -> dict[str, str]:
    """The environment of a spawned bridge: the allowlist of the bot's, HOME its own."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if name in KEPT_NAMES
        or (name.startswith(KEPT_PREFIXES) and not name.startswith("RAY_AUTH"))
    }
    return {**kept, "HOME": home}


PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4


def not_dumpable() -> None:
    """Make the bot's process not dumpable (Linux), before it spawns a bridge of its own
    user: a process of the same user (code the cluster sends the bridge) then cannot read
    /proc/<bot pid>/environ, cwd, fd or mem, nor ptrace the bot; only root can. It does not
    protect the bot's files (state_dir, config): the same user reads those anyway, which is
    why the bridge socket (the bridge as imgbot-ray) is the setup for production. Side
    effects: no core dumps, and py-spy needs root. A child's exec makes it dumpable again."""
    if not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no libc prctl: nothing to do
        log.debug("prctl(PR_SET_DUMPABLE) is not available here")
        return
    prctl.restype = ctypes.c_int
    zero = ctypes.c_ulong(0)
    if prctl(ctypes.c_int(PR_SET_DUMPABLE), zero, zero, zero, zero) != 0:
        log.warning(
            "the bot could not make itself not dumpable (prctl: %s): a process of "
            "its user, such as the bridge, can read its /proc files",
            os.strerror(ctypes.get_errno()),
        )
        return
    if prctl(ctypes.c_int(PR_GET_DUMPABLE), zero, zero, zero, zero) != 0:
        log.warning(
            "the bot is still dumpable after prctl(PR_SET_DUMPABLE, 0): a process "
            "of its user, such as the bridge, can read its /proc files"
        )


def _per_job(counts: list[int], pictures: list[bytes], jobs: list) -> list[list[bytes]]:
    """A batch's pictures split per job: exactly one count per job, each the job's own."""
    if counts != [job.count for job in jobs]:
        log.warning(
            "a batch's answer was dropped: %s picture(s) for jobs of %s",
            counts,
            [job.count for job in jobs],
        )
        raise GenerationError(messages.NOT_VALID)
    split, start = [], 0
    for count in counts:
        split.append(pictures[start : start + count])
        start += count
    return split


def _read_stderr(stream) -> None:
    """A spawned bridge's stderr (Ray's own lines), into the bot's log at DEBUG."""
    for raw in iter(lambda: stream.readline(8192), b""):  # a line without end: in pieces
        ray_log.debug("%s", messages.one_line(raw.decode(errors="replace"), messages.MAX_LOG_LINE))
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
        return (
            f"nothing answers at {address} ({exc.strerror or exc}): is Ray running on "
            "the head node, and is generation.ray.address its address?"
        )
    return None
