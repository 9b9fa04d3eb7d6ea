"""The bridge: a process of its own that is the Ray driver for the bot (`python -m
generation.cluster.bridge`). The bot spawns it (`link`, with nothing of the bot's
environment), or systemd starts one per connection as a user of its own (socket mode:
imgbot-bridge.socket with Accept=yes, the connection its stdin and stdout). It connects to
the cluster, keeps one actor per worker slot (a new one when one dies, placed by Ray when
resources allow, so a host that joins gets the slots that wait), runs the batches the bot
sends to a slot, and reports each slot's state, the progress of each batch and its pictures.

Ray unpickles what the actors return here, so whoever holds the cluster's token can run
code in this process: it holds nothing of the bot's, and checks every answer
(`messages.ready_answer`, `run_answer`, `progress_answer`) before it forwards it as a frame
of a fixed form (`messages.FROM_BRIDGE`).

Started by systemd (socket mode), the bridge is pinned by its unit: `--address` is the
one cluster it connects to, and it uses only its unit's token. Whoever may connect to the
socket sends the hello, so a hello that names another address, or brings a token of its
own, is refused (`pin_refusal`): the unit's token is never shown to another server, nor
Ray pointed at a token file the caller picked.

Frames in: {"kind": "hello", "spec"} first, then {"kind": "run", "request", "slot", "jobs"}
with the jobs' pictures as parts. Out: "connected" or "refused"; "slot" with state
starting|up|failed|down, each new actor of a slot a new generation; "progress"; "done" with
the pictures as parts, or its "error"; "lost"; "log".
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import uuid
from dataclasses import replace

from ..errors import ClusterUnavailable
from . import frames, messages
from .address import is_address
from .joining import ACTOR_PREFIX, connect, last_line, survey
from .spec import ClusterSpec, mismatch

PING_SECONDS = 2.0  # how often an idle actor is asked whether it is still there
PING_TIMEOUT = 30.0  # an actor that does not answer for this long counts as lost
PROGRESS_SECONDS = 0.5  # how often a running batch's progress is read
# The head's GCS is asked this often whether it is there; after HEAD_LOST_AFTER seconds
# without an answer the bridge ends (Ray's driver would block, then end after a minute),
# and the bot starts a new one when the head answers again.
HEAD_CHECK_SECONDS, HEAD_LOST_AFTER = 5.0, 30.0
# What Ray's core writes to stderr when the cluster refuses the token.
TOKEN_REFUSED = ("InvalidAuthToken", "Unauthenticated")

log = logging.getLogger(__name__)


class _Forward(logging.Handler):
    """The bridge's log lines go to the bot's log, at their level."""

    def __init__(self, channel: frames.Channel):
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        words = self.format(record)[: messages.MAX_TEXT]
        self.channel.send({"kind": "log", "level": record.levelno, "words": words})


class _Stderr:
    """This process's stderr, read through a pipe on its way to the real one, so that the
    bridge itself can tell a refused token (Ray's core says so only there): in socket mode
    nobody else reads it."""

    def __init__(self):
        self.token_refused = threading.Event()
        reading, writing = os.pipe()
        self._out = os.dup(2)
        os.dup2(writing, 2)
        os.close(writing)
        threading.Thread(target=self._pass, args=(reading,), daemon=True).start()

    def _pass(self, reading: int) -> None:
        with os.fdopen(reading, "rb") as stream:
            for line in iter(stream.readline, b""):
                if any(word.encode() in line for word in TOKEN_REFUSED):
                    self.token_refused.set()
                os.write(self._out, line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generation.cluster.bridge")
    parser.add_argument(
        "--address",
        help="the only cluster address this bridge connects "
        "to, with its unit's token (socket mode: imgbot-bridge@.service)",
    )
    pinned = parser.parse_args(argv).address
    if pinned is not None and not is_address(pinned):  # `--address=` would pin to ""
        print(
            f"--address {messages.one_line(pinned, 200)!r} is not a Ray address: write "
            "HOST:PORT of the head node's GCS (e.g. 10.0.0.5:6379), ray://HOST:PORT, or "
            "auto, as generation.ray.address",
            file=sys.stderr,
        )
        return 2
    stderr = _Stderr()
    # Frames go out on a copy of stdout; whatever Ray or a library prints goes to stderr.
    # Under systemd's socket activation stdin and stdout are the same socket: the copy and
    # fd 0 still are, and the connection's end (either side) ends the bridge.
    channel = frames.Channel(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, handlers=[_Forward(channel)])
    try:
        hello = frames.receive(sys.stdin.buffer)
        if hello is None:
            return 2
        spec = messages.spec_from_wire(messages.from_bot(*hello)["spec"])
    except (frames.FrameError, messages.Invalid) as exc:
        log.error("the bridge's first frame is not a hello it accepts: %s", exc)
        return 2
    refusal = pin_refusal(spec, pinned)
    if refusal is not None:
        print(f"a hello was refused: {refusal}", file=sys.stderr)  # the journal's
        channel.send({"kind": "refused", "words": refusal, "token_refused": False})
        return 3
    if pinned is not None:  # its unit's token only, whatever path the hello names
        spec = replace(spec, token_path=None)
    _ray_environment(spec)
    try:
        facts = connect(spec)
    except ClusterUnavailable as exc:
        # Ray's core writes why to stderr while ray.init gives up: a moment for the line.
        refused = stderr.token_refused.wait(0.5)
        channel.send(
            {"kind": "refused", "words": str(exc)[: messages.MAX_TEXT], "token_refused": refused}
        )
        return 3
    channel.send({"kind": "connected", **facts})
    if spec.survey:
        channel.send({"kind": "survey", **survey(spec)})
        return 0
    asyncio.run(Bridge(spec, channel).run())
    return 0


def pin_refusal(spec: ClusterSpec, pinned: str | None) -> str | None:
    """Why a hello is refused by a bridge pinned to `pinned` (its unit's --address), or
    by one that is not pinned but is asked to use a token of its own environment (socket
    mode, where the hello comes from whoever connects); None when it is taken."""
    if pinned is None:
        if spec.own_token:
            return (
                "this bridge has no --address, so it does not use its own token: its "
                "unit (imgbot-bridge@.service) names the cluster's address"
            )
        return None  # spawned by the bot, which tells it its own address and token
    if spec.address != pinned:
        return (
            f"this bridge connects only to {pinned} (the --address of "
            f"imgbot-bridge@.service), not to {messages.one_line(spec.address, 200)}: set "
            f"generation.ray.address to {pinned}"
        )
    if not spec.own_token:
        return (
            "this bridge uses only its unit's token: the bot sends none in socket mode "
            "(generation.ray.bridge_socket, no token_file)"
        )
    return None


def _ray_environment(spec: ClusterSpec) -> None:
    """Ray's settings, before Ray is imported: no usage statistics (nothing leaves the
    company), and the token the bot named, or (own_token, socket mode) the one of this
    process's own environment, which its unit sets."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if spec.own_token:
        return
    os.environ.pop("RAY_AUTH_TOKEN", None)  # only the configured token file counts
    if spec.token_path is not None:
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=spec.token_path)
    else:  # allow_unauthenticated: no token is sent
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)


class Bridge:
    def __init__(self, spec: ClusterSpec, channel: frames.Channel):
        import ray

        from .actor import Worker

        self.spec = spec
        self.channel = channel
        self.recipe = messages.recipe_to_wire(spec.recipe)  # what each actor is made with
        resources = dict(spec.resources)
        cpus = resources.pop("CPU", 0)
        self.threads = int(cpus) if cpus else None
        self.actor_class = ray.remote(Worker)
        self.actor_options = dict(
            num_gpus=resources.pop("GPU", 0),
            num_cpus=cpus,
            resources=resources,
            # One per host while hosts are free; a threaded actor, so that progress and
            # pings are answered while a batch runs.
            scheduling_strategy="SPREAD",
            max_concurrency=3,
            max_restarts=0,
        )
        # slot -> (the actor that is up, the event that says it was lost, its generation)
        self.actors: dict[int, tuple[object, asyncio.Event, int]] = {}
        self.generations = [0] * spec.workers  # how many actors each slot has had
        self.serving: dict[int, asyncio.Task] = {}  # request -> the task answering it
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(loop,), daemon=True).start()
        tasks = [asyncio.create_task(self.keep(slot)) for slot in range(self.spec.workers)]
        tasks.append(asyncio.create_task(self.watch_head()))
        for task in tasks:
            task.add_done_callback(self._ended)
        await self.stopped.wait()
        self.end(0)

    def end(self, status: int) -> None:
        """Answer every batch under way as lost (the bot gives them back to its queue), and
        end the process at once: Ray's own shutdown may block on a head that is away."""
        for request in list(self.serving):
            self._lost(request, "the bridge to the cluster stopped")
        sys.stdout.flush()
        os._exit(status)

    async def watch_head(self) -> None:
        """End the bridge when the head's GCS stops answering (see HEAD_LOST_AFTER)."""
        import ray

        loop = asyncio.get_running_loop()
        answered = loop.time()
        while True:
            await asyncio.sleep(HEAD_CHECK_SECONDS)
            try:
                # ray.nodes() blocks while the GCS is away: asked in a thread of its own.
                await asyncio.wait_for(loop.run_in_executor(None, ray.nodes), HEAD_CHECK_SECONDS)
                answered = loop.time()
            except Exception:  # noqa: BLE001 - a timeout, or Ray's own error
                if loop.time() - answered > HEAD_LOST_AFTER:
                    log.error(
                        "the Ray head at %s has not answered for %.0f s",
                        self.spec.address,
                        loop.time() - answered,
                    )
                    self.end(4)

    def _ended(self, task: asyncio.Task) -> None:
        """A slot's keeper (or the head's watch) must never end but with the bridge: say
        why it did, and end the bridge, so that the bot starts a new one."""
        if task.cancelled():
            return
        log.critical("a worker slot's keeper failed: %r", task.exception())
        self.stopped.set()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while (frame := frames.receive(sys.stdin.buffer)) is not None:
                header, parts = frame
                try:
                    messages.from_bot(header, parts)
                except messages.Invalid as exc:
                    log.error("a frame from the bot was dropped: %s", exc)
                    continue
                if header["kind"] == "run":
                    loop.call_soon_threadsafe(
                        self._serve, header["request"], header["slot"], header["jobs"], parts
                    )
        except (frames.FrameError, OSError) as exc:
            log.error("the connection to the bot ends: %s", exc)
        finally:  # the bot is gone, or wants us gone (or its pipe broke)
            loop.call_soon_threadsafe(self.stopped.set)

    def _lost(self, request: int, words: str) -> None:
        self.channel.send({"kind": "lost", "request": request, "words": words[: messages.MAX_TEXT]})

    def _serve(self, request: int, slot: int, jobs: list, parts: list[bytes]) -> None:
        task = asyncio.ensure_future(self.serve(request, slot, jobs, parts))
        self.serving[request] = task
        task.add_done_callback(lambda done: self._served(done, request))

    def _served(self, task: asyncio.Task, request: int) -> None:
        self.serving.pop(request, None)
        if task.cancelled() or task.exception() is None:
            return
        log.error("a batch could not be served: %r", task.exception())
        # The bot's worker waits for an answer: the batch goes back to its queue.
        self._lost(request, f"the bridge failed: {task.exception()!r}")

    async def keep(self, slot: int) -> None:
        """Keep an actor in `slot`: make one, wait until it has loaded, watch it, and make
        a new one when it is lost. Each actor is a new generation of the slot, so that word
        of an old one (a batch lost on it) never takes the new one down."""
        backoff = 1.0
        loop = asyncio.get_running_loop()
        while True:
            name = f"{ACTOR_PREFIX}{slot}-{uuid.uuid4().hex[:8]}"
            self.generations[slot] += 1
            generation = self.generations[slot]
            # Making an actor asks the head's GCS, and blocks while it is away: in a thread,
            # so that the head's watch (and the other slots) go on meanwhile.
            actor = await loop.run_in_executor(
                None,
                lambda name=name: self.actor_class.options(name=name, **self.actor_options).remote(
                    self.recipe, slot, self.threads
                ),
            )
            self._slot(slot, "starting", generation)
            info = await self._ready(actor)
            problem = info.get("error") or mismatch(
                self.spec.versions,
                info.get("versions", {}),
                f"the worker on {info.get('host', '?')}",
            )
            if problem:
                self._slot(slot, "failed", generation, problem=problem)
                await loop.run_in_executor(None, _kill, actor)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 300.0)
                continue
            backoff = 1.0
            lost = asyncio.Event()
            self.actors[slot] = (actor, lost, generation)
            self._slot(slot, "up", generation, info=info)
            reason = await self._watch(actor, lost)
            self.actors.pop(slot, None)
            await loop.run_in_executor(None, _kill, actor)
            self._slot(slot, "down", generation, problem=reason)

    def _slot(self, slot: int, state: str, generation: int, **detail) -> None:
        if "problem" in detail:
            detail["problem"] = detail["problem"][: messages.MAX_TEXT]
        self.channel.send(
            {"kind": "slot", "slot": slot, "state": state, "generation": generation, **detail}
        )

    async def _ready(self, actor) -> dict:
        """The actor's ready(), checked: its facts, or {"error": why it cannot be used}."""
        try:
            answer = await actor.ready.remote()  # waits while Ray finds it a place
        except Exception as exc:  # its node died while it loaded, or Ray gave up on it
            return {"worker": "?", "error": f"the worker could not start: {last_line(exc)}"}
        try:
            return messages.ready_answer(answer)
        except messages.Invalid as exc:
            log.error("a worker's ready answer was refused: %s", exc)
            return {"worker": "?", "error": messages.NOT_VALID}

    async def _watch(self, actor, lost: asyncio.Event) -> str:
        """Until the actor is lost: a batch on it failed that way, or it stops answering."""
        while not lost.is_set():
            try:
                await asyncio.wait_for(actor.ping.remote(), PING_TIMEOUT)
            except asyncio.TimeoutError:
                return f"it did not answer for {PING_TIMEOUT:.0f} s"
            except Exception as exc:
                return last_line(exc)
            try:
                await asyncio.wait_for(lost.wait(), PING_SECONDS)
            except asyncio.TimeoutError:
                pass
        return getattr(lost, "reason", "lost")

    async def serve(self, request: int, slot: int, jobs: list, parts: list[bytes]) -> None:
        import ray

        if slot not in self.actors:
            self._lost(request, "the worker is not up")
            return
        actor, lost, _ = self.actors[slot]  # this actor's, even if it is replaced meanwhile
        result = asyncio.ensure_future(_awaited(actor.run.remote(jobs, parts)))
        shown = None
        try:
            while True:
                done, _ = await asyncio.wait({result}, timeout=PROGRESS_SECONDS)
                if done:
                    break
                now = messages.progress_answer(
                    await asyncio.wait_for(_awaited(actor.progress.remote()), PING_TIMEOUT)
                )
                if now is not None and now != shown:
                    shown = now
                    self.channel.send({"kind": "progress", "request": request, "progress": now})
            payload = messages.run_answer(result.result())
        except (ray.exceptions.RayError, asyncio.TimeoutError) as exc:
            why = last_line(exc) if str(exc) else "it stopped answering"
            self._lost(request, why)
            lost.reason = why  # type: ignore[attr-defined]
            lost.set()
            result.cancel()
            return
        except messages.Invalid as exc:
            log.error("a worker's answer was refused: %s", exc)
            self.channel.send({"kind": "done", "request": request, "error": messages.NOT_VALID})
            result.cancel()
            return
        if "error" in payload:
            self.channel.send(
                {"kind": "done", "request": request, "error": payload["error"][: messages.MAX_TEXT]}
            )
            return
        images = payload["images"]
        self.channel.send(
            {
                "kind": "done",
                "request": request,
                "worker": payload["worker"],
                "seconds": float(payload["seconds"]),
                "counts": [len(pictures) for pictures in images],
            },
            [data for pictures in images for data in pictures],
        )


async def _awaited(ref):
    return await ref


def _kill(actor) -> None:
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass


if __name__ == "__main__":
    sys.exit(main())
