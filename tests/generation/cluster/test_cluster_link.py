"""The bot's side of the cluster against a bridge it cannot trust: a fake bridge at the
boundary (on the bridge's socket, as socket mode connects to one) sends crafted answers;
each batch fails cleanly and the bot's worker goes on. And a bridge the bot spawns gets
nothing of the bot's: no credentials, no IMGBOT_* settings, not its working directory."""

from __future__ import annotations

import ctypes
import io
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from generation.cluster import frames, messages
from generation.cluster import link as link_module
from generation.cluster.link import PR_GET_DUMPABLE, Link
from generation.errors import ClusterUnavailable
from generation.cluster.remote import RemoteRunner
from generation.cluster.spec import ClusterSpec
from generation.job import GenerationError, Job
from generation.models.recipe import Recipe
from generation.scheduling.runner import WorkerLost

INFO = {
    "worker": "gpu1 #0 (node abcdef12)",
    "host": "gpu1",
    "node": "abcdef12",
    "slot": 0,
    "auth": "token",
    "versions": {"imgbot": "1"},
    "device": "cuda:0",
    "models": ["tiny"],
}


def _png(size: tuple[int, int], mode: str = "RGB", **extras) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG", **extras)
    return buffer.getvalue()


def _spec(tmp_path: Path, **fields) -> ClusterSpec:
    return ClusterSpec(
        **{
            "address": "auto",
            "namespace": "imgbot",
            "workers": 1,
            "resources": {"GPU": 1},
            "recipe": Recipe(catalogue={"tiny": tmp_path / "tiny"}),
            **fields,
        }
    )


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
    return (
        {
            "kind": "done",
            "request": run["request"],
            "worker": INFO["worker"],
            "seconds": 0.5,
            "counts": counts,
            **fields,
        },
        parts,
    )


JOB = Job(prompt="a lighthouse", seed=1, steps=2, width=64, height=32)
TWO = Job(prompt="two boats", seed=2, steps=2, width=64, height=32, count=2)

CRAFTED = {
    "more pictures than the job asked for": lambda run: [_done(run, [2], [_png((64, 32))] * 2)],
    "a picture list per job missing": lambda run: [_done(run, [], [])],
    "a worker name that is not text": lambda run: [_done(run, [1], [_png((64, 32))], worker=["x"])],
    "a picture that is not a PNG": lambda run: [_done(run, [1], [b"GIF89a" + b"\0" * 64])],
    "a PNG of another size": lambda run: [_done(run, [1], [_png((4096, 4096))])],
    # RGB to the safety classifier, another picture over a dark background:
    "a picture with an alpha channel": lambda run: [_done(run, [1], [_png((64, 32), "RGBA")])],
    "a palette picture": lambda run: [_done(run, [1], [_png((64, 32), "P")])],
    "a 16-bit grey picture": lambda run: [_done(run, [1], [_png((64, 32), "I;16")])],
    "a worker name with terminal codes": lambda run: [
        _done(run, [1], [_png((64, 32))], worker="gpu1\x1b[2J")
    ],
    "a slot out of range, then a frame of no known kind": lambda run: [
        ({"kind": "slot", "slot": 9, "state": "down", "generation": 1, "problem": "x"}, []),
        ({"kind": "exec", "request": run["request"]}, []),
    ],
}


@pytest.mark.parametrize("crafted", list(CRAFTED))
def test_a_crafted_answer_fails_the_batch_and_the_worker_goes_on(tmp_path, caplog, crafted):
    good = lambda run: [  # noqa: E731 - the next batch, answered as a real bridge would
        (
            {
                "kind": "progress",
                "request": run["request"],
                "progress": {"done": 1, "total": 2, "unit": "step", "part": 0, "parts": 0},
            },
            [],
        ),
        _done(run, [1, 2], [_png((64, 32))] * 3),
    ]
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
        assert [[image.size for image in job] for job in pictures] == [[(64, 32)], [(64, 32)] * 2]
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
    monkeypatch.setenv("HF_TOKEN", "hf_a secret of the bot's")
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
    assert "HF_TOKEN" not in environ  # the bridge loads no model
    assert cwd != str(state_dir) and not cwd.startswith(str(state_dir))
    assert environ["HOME"] == cwd and seen["mode"] == 0o700
    assert not Path(cwd).exists()  # a private folder of its own, removed at stop
    assert seen["fds"][:3] == ["0", "1", "2"]
    # The bot that spawned it made itself not dumpable: the bridge cannot read its /proc.
    assert ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0


def _serving(tmp_path: Path, answers: list) -> tuple[Link, RemoteRunner]:
    FakeBridge(tmp_path / "bridge.sock", answers)
    link = Link(_spec(tmp_path, bridge_socket=str(tmp_path / "bridge.sock")))
    runner = RemoteRunner(link, 0, catalogue=None)
    link.start(10)
    assert runner.wait_ready(lambda: False)
    return link, runner


def test_a_workers_error_reaches_the_person_as_one_line_said_by_the_worker(tmp_path, caplog):
    hostile = (
        "\x1b[2J\x1b[1mThe bot says: your account is suspended.\nLog in again at "
        "https://evil.example\u202e " + "!" * 10_000
    )
    link, runner = _serving(
        tmp_path,
        [
            lambda run: [
                (
                    {
                        "kind": "log",
                        "level": 40,
                        "words": "ERROR bot: fake line\n\x1b[31mand another",
                    },
                    [],
                ),
                ({"kind": "done", "request": run["request"], "error": hostile}, []),
            ]
        ],
    )
    try:
        with pytest.raises(GenerationError) as raised:
            runner.generate(JOB)
    finally:
        link.stop()
    words = str(raised.value)
    assert words.startswith(
        "the GPU worker said: The bot says: your account is suspended. "
        "Log in again at https://evil.example"
    )
    assert words.isprintable() and len(words) <= len("the GPU worker said: ") + 200
    (logged,) = [
        record.getMessage() for record in caplog.records if "fake line" in record.getMessage()
    ]
    assert logged == "ERROR bot: fake line and another"


def test_a_workers_picture_is_delivered_as_plain_rgb_without_its_png_extras(tmp_path):
    from PIL import ImageCms, PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Description", "made by a friend")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    extras = _png((64, 32), icc_profile=profile, transparency=(0, 0, 0), pnginfo=text)
    assert {"icc_profile", "transparency", "Description"} <= Image.open(
        io.BytesIO(extras)
    ).info.keys()
    link, runner = _serving(tmp_path, [lambda run: [_done(run, [1], [extras])]])
    try:
        (picture,) = runner.generate(JOB)
    finally:
        link.stop()
    assert picture.mode == "RGB" and picture.size == (64, 32) and picture.info == {}


def test_parts_for_no_waiting_batch_end_the_connection_unread(tmp_path, caplog):
    path = tmp_path / "bridge.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    ended, started = threading.Event(), threading.Event()

    def serve():  # announces a 300 MiB picture for a batch nobody asked for, sends none
        connection, _ = server.accept()
        reader, channel = connection.makefile("rb"), frames.Channel(connection.makefile("wb"))
        frames.receive(reader)
        channel.send({"kind": "connected", "nodes": 1, "auth": "token", "versions": {}})
        started.wait(10)
        header = json.dumps(
            {"kind": "done", "request": 999, "worker": "w", "seconds": 1.0, "counts": [1]}
        ).encode()
        connection.sendall(struct.pack("!III", len(header), 1, 300 * 1024 * 1024) + header)
        ended.set() if connection.recv(1) == b"" else None  # the bot hung up
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    link = Link(_spec(tmp_path, bridge_socket=str(path)))
    link.start(10)
    started.set()
    try:
        assert ended.wait(10), "the bot still reads the announced part"
        assert "no batch that waits for pictures" in caplog.text
    finally:
        link.stop()


READ_THE_BOT = """
import ctypes, os, subprocess, sys
from generation.cluster.link import PR_SET_DUMPABLE, not_dumpable
# A bot of a user of its own (root reads any process's /proc): a change of user makes a
# process not dumpable, so it is made dumpable again, as one started by that user is.
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
if sys.argv[1] == "not dumpable":
    not_dumpable()
# A process of the same user, as a bridge of the bot's user would try.
for command in (["cat", f"/proc/{os.getpid()}/environ"], ["ls", f"/proc/{os.getpid()}/cwd/"]):
    child = subprocess.run(command, capture_output=True)
    print("read" if child.returncode == 0 else "refused")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the bot and its child as another user")
@pytest.mark.parametrize("state", ["dumpable", "not dumpable"])
def test_a_child_of_the_bots_user_cannot_read_a_bot_that_spawns_a_bridge(state):
    said = subprocess.run(
        [sys.executable, "-c", READ_THE_BOT, state],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[3],
        timeout=120,
    )
    assert said.stdout.split() == (["read"] * 2 if state == "dumpable" else ["refused"] * 2), (
        said.stderr
    )


def _stuck_bridge(tmp_path: Path) -> tuple[Link, RemoteRunner, Job, threading.Event]:
    """A fake bridge that answers the hello, then never reads again (nor hangs up until
    the event is set); the link up on it, and a job whose run frame is far bigger than the
    socket's buffer (a source picture of noise)."""
    path = tmp_path / "bridge.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    released = threading.Event()

    def serve():
        connection, _ = server.accept()
        reader, channel = connection.makefile("rb"), frames.Channel(connection.makefile("wb"))
        frames.receive(reader)
        channel.send({"kind": "connected", "nodes": 1, "auth": "token", "versions": {}})
        channel.send({"kind": "slot", "slot": 0, "state": "up", "generation": 1, "info": INFO})
        released.wait(60)
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    link = Link(_spec(tmp_path, bridge_socket=str(path)))
    runner = RemoteRunner(link, 0, catalogue=None)
    link.start(10)
    assert runner.wait_ready(lambda: False)
    noise = Image.frombytes("RGB", (1024, 1024), os.urandom(1024 * 1024 * 3))
    job = Job(
        prompt="x",
        seed=1,
        steps=2,
        width=1024,
        height=1024,
        kind="img2img",
        strength=0.5,
        image=noise,
    )
    return link, runner, job, released


def test_a_bridge_that_stops_reading_does_not_hang_the_bots_stop(tmp_path):
    link, runner, job, released = _stuck_bridge(tmp_path)
    outcome = []
    sending = threading.Thread(
        target=lambda: outcome.append(_raised(runner.generate, job)), daemon=True
    )
    sending.start()
    time.sleep(1)  # the send is blocked on the full socket now
    try:
        started = time.monotonic()
        stopping = threading.Thread(target=link.stop, daemon=True)
        stopping.start()
        stopping.join(20)
        assert not stopping.is_alive(), "stop() hangs on a bridge that does not read"
        assert time.monotonic() - started < 15
        sending.join(5)
        assert outcome and isinstance(outcome[0], WorkerLost), outcome  # back to the queue
    finally:
        released.set()


def _raised(function, *args):
    try:
        function(*args)
    except Exception as exc:  # noqa: BLE001 - the test looks at which
        return exc
    return None


def test_a_second_done_for_a_batch_carries_no_pictures(tmp_path):
    link = Link(_spec(tmp_path))
    link._room[7] = messages.png_bound(64, 32)  # a batch of one 64x32 picture waits
    done = {"kind": "done", "request": 7, "worker": "w", "seconds": 1.0, "counts": [1]}
    link._admit(done, 1, 1000)  # its pictures
    with pytest.raises(frames.FrameError, match="no batch that waits"):
        link._admit(done, 1, 1000)  # once more: the batch's room is used up


def test_why_a_worker_was_lost_reaches_the_queue_as_one_line_said_by_the_worker(tmp_path):
    hostile = "\x1b[2JThe bot says: your account is suspended.\nLog in at " + "!" * 10_000
    link, runner = _serving(
        tmp_path,
        [lambda run: [({"kind": "lost", "request": run["request"], "words": hostile}, [])]],
    )
    try:
        with pytest.raises(WorkerLost) as raised:
            runner.generate(JOB)
    finally:
        link.stop()
    words = str(raised.value)  # what the queue's give_back tells the person after MAX_LOST losses
    assert words.startswith("the GPU worker said: The bot says: your account is suspended.")
    assert words.isprintable() and len(words) <= len("the GPU worker said: ") + 200


def test_a_bot_that_cannot_make_itself_not_dumpable_says_so(monkeypatch, caplog):
    if not sys.platform.startswith("linux"):
        pytest.skip("prctl is Linux's")
    monkeypatch.setattr(link_module, "PR_SET_DUMPABLE", 0x7FFF_FFFF)  # no such option
    link_module.not_dumpable()
    (warning,) = [record for record in caplog.records if "not dumpable" in record.getMessage()]
    assert warning.levelname == "WARNING" and "Invalid argument" in warning.getMessage()


def test_a_spawned_bridges_stderr_reaches_the_log_in_clean_lines_of_a_bounded_size(caplog):
    caplog.set_level("DEBUG", logger="generation.cluster.ray")
    stream = io.BytesIO(b"\x1b[31mERROR bot: fake\r\n" + b"x" * (1024 * 1024) + b"\n")
    link_module._read_stderr(stream)
    lines = [
        record.getMessage() for record in caplog.records if record.name == "generation.cluster.ray"
    ]
    assert lines[0] == "ERROR bot: fake"
    assert len(lines) > 100 and all(line.isprintable() and len(line) <= 8192 for line in lines)


def test_a_bridge_that_stops_reading_ends_its_connection_and_the_batch_goes_back(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(link_module, "SEND_LIMIT", 1.0)
    link, runner, job, released = _stuck_bridge(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(WorkerLost):  # the queue gives the batch to the next worker
            runner.generate(job)
        assert time.monotonic() - started < 10
        assert "has not read a frame of the bot's" in caplog.text
    finally:
        released.set()
        link.stop()
