"""The bot's side of the cluster against a bridge it cannot trust: a fake bridge at the
boundary (on the bridge's socket, as socket mode connects to one) sends crafted answers;
each batch fails cleanly and the bot's worker goes on. And a bridge the bot spawns gets
nothing of the bot's: no credentials, no IMGBOT_* settings, not its working directory."""

from __future__ import annotations

import io
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from generation.building import Recipe
from generation.cluster import frames, messages
from generation.cluster.link import ClusterUnavailable, Link
from generation.cluster.remote import RemoteRunner
from generation.cluster.spec import ClusterSpec
from generation.job import GenerationError, Job

INFO = {"worker": "gpu1 #0 (node abcdef12)", "host": "gpu1", "node": "abcdef12", "slot": 0,
        "auth": "token", "versions": {"imgbot": "1"}, "device": "cuda:0", "models": ["tiny"]}


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _spec(tmp_path: Path, **fields) -> ClusterSpec:
    return ClusterSpec(**{"address": "auto", "namespace": "imgbot", "workers": 1,
                          "resources": {"GPU": 1},
                          "recipe": Recipe(catalogue={"tiny": tmp_path / "tiny"}), **fields})


class FakeBridge:
    """Listens where the bot's bridge_socket points; answers each "run" with the next of
    `answers` (a function of the run's header: the frames to send back)."""

    def __init__(self, path: Path, answers: list):
        self.path, self.answers = path, list(answers)
        self.hello: dict | None = None
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connection, _ = self.server.accept()
        reader, channel = connection.makefile("rb"), frames.Channel(connection.makefile("wb"))
        self.hello = frames.receive(reader)[0]
        channel.send({"kind": "connected", "nodes": 2, "auth": "token", "versions": {}})
        channel.send({"kind": "slot", "slot": 0, "state": "up", "generation": 1, "info": INFO})
        while (frame := frames.receive(reader)) is not None:
            for header, parts in self.answers.pop(0)(frame[0]):
                channel.send(header, parts)
        connection.close()


def _done(run: dict, counts: list[int], parts: list[bytes], **fields) -> tuple:
    return ({"kind": "done", "request": run["request"], "worker": INFO["worker"],
             "seconds": 0.5, "counts": counts, **fields}, parts)


JOB = Job(prompt="a lighthouse", seed=1, steps=2, width=64, height=32)
TWO = Job(prompt="two boats", seed=2, steps=2, width=64, height=32, count=2)

CRAFTED = {
    "more pictures than the job asked for":
        lambda run: [_done(run, [2], [_png((64, 32))] * 2)],
    "a picture list per job missing":
        lambda run: [_done(run, [], [])],
    "a worker name that is not text":
        lambda run: [_done(run, [1], [_png((64, 32))], worker=["x"])],
    "a picture that is not a PNG": lambda run: [_done(run, [1], [b"GIF89a" + b"\0" * 64])],
    "a PNG of another size": lambda run: [_done(run, [1], [_png((4096, 4096))])],
    "a slot out of range, then a frame of no known kind": lambda run: [
        ({"kind": "slot", "slot": 9, "state": "down", "generation": 1, "problem": "x"}, []),
        ({"kind": "exec", "request": run["request"]}, [])],
}


@pytest.mark.parametrize("crafted", list(CRAFTED))
def test_a_crafted_answer_fails_the_batch_and_the_worker_goes_on(tmp_path, caplog, crafted):
    good = lambda run: [  # noqa: E731 - the next batch, answered as a real bridge would
        ({"kind": "progress", "request": run["request"],
          "progress": {"done": 1, "total": 2, "unit": "step", "part": 0, "parts": 0}}, []),
        _done(run, [1, 2], [_png((64, 32))] * 3)]
    bridge = FakeBridge(tmp_path / "bridge.sock", [CRAFTED[crafted], good])
    link = Link(_spec(tmp_path, bridge_socket=str(tmp_path / "bridge.sock")))
    runner = RemoteRunner(link, 0, catalogue=None)
    link.start(10)
    try:
        assert runner.wait_ready(lambda: False)
        with pytest.raises(GenerationError, match=messages.NOT_VALID):
            runner.generate(JOB)
        assert "dropped" in caplog.text or "refused" in caplog.text
        pictures = runner.generate_batch([JOB, TWO])  # the same link and slot go on
        assert [[image.size for image in job] for job in pictures] == [[(64, 32)],
                                                                        [(64, 32)] * 2]
        assert runner.up and link.reconnects == 0
    finally:
        link.stop()
    # Socket mode: the bridge is told to use its own token, never a path of the bot's.
    assert bridge.hello["spec"]["own_token"] is True
    assert bridge.hello["spec"]["token_path"] is None


def test_a_frame_over_the_limits_ends_the_connection_with_a_log_line(tmp_path, caplog):
    path = tmp_path / "bridge.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve():
        connection, _ = server.accept()
        frames.receive(connection.makefile("rb"))
        connection.sendall(b"\x7f\xff\xff\xff" + b"\0" * 8)  # a 2 GiB header, it says
        time.sleep(2)
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    link = Link(_spec(tmp_path, bridge_socket=str(path)))
    with pytest.raises(ClusterUnavailable, match="does not accept"):
        link.start(10)
    assert "its connection ends" in caplog.text


def test_a_spawned_bridge_has_nothing_of_the_bots(tmp_path, monkeypatch):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    monkeypatch.chdir(state_dir)  # the bot runs in its state_dir (systemd's WorkingDirectory)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    monkeypatch.setenv("IMGBOT_MATRIX__PASSWORD", "secret")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a token of the bot's environment")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    listener = socket.create_server(("127.0.0.1", 0))  # an address where something answers
    link = Link(_spec(tmp_path, address=f"127.0.0.1:{listener.getsockname()[1]}"))
    seen: dict = {}

    def look() -> None:  # while the bridge starts; then it is ended, its work not needed
        deadline = time.monotonic() + 30
        while link._bridge is None and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = link._bridge.pid
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        seen["environ"] = dict(item.split("=", 1) for item in raw.decode().split("\0") if item)
        seen["cwd"] = os.readlink(f"/proc/{pid}/cwd")
        seen["mode"] = stat.S_IMODE(os.stat(seen["cwd"]).st_mode)
        seen["fds"] = sorted(os.listdir(f"/proc/{pid}/fd"))
        os.kill(pid, signal.SIGKILL)

    watcher = threading.Thread(target=look)
    watcher.start()
    try:
        link.start(60)
    except ClusterUnavailable:
        pass  # no cluster here: what counts is what the bridge was started with
    finally:
        watcher.join()
        link.stop()
        listener.close()
    environ, cwd = seen["environ"], seen["cwd"]
    assert "CREDENTIALS_DIRECTORY" not in environ
    assert not [name for name in environ if name.startswith(("IMGBOT_", "RAY_AUTH"))]
    assert environ["HF_HUB_OFFLINE"] == "1" and environ["PATH"] == os.environ["PATH"]
    assert cwd != str(state_dir) and not cwd.startswith(str(state_dir))
    assert environ["HOME"] == cwd and seen["mode"] == 0o700
    assert not Path(cwd).exists()  # a private folder of its own, removed at stop
    assert seen["fds"][:3] == ["0", "1", "2"]
