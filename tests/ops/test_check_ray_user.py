"""`imgbot check` warns about a Ray node that runs as the bot's own user on the bot's host
(bot/ops/ray_processes.py): what counts as a Ray node process, read from a folder laid out
as /proc is, and real processes of this user and of another."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bot.ops.check import check_ray_user
from bot.ops.ray_processes import RayProcess, ray_processes, ray_role

BOT, OTHER = 1000, 1001


def process(proc: Path, pid: int, uid: int, *argv: str) -> None:
    """/proc/PID as the kernel shows it: Uid (real, effective, saved, fs) and cmdline."""
    folder = proc / str(pid)
    folder.mkdir()
    (folder / "status").write_text(
        f"Name:\tx\nUmask:\t0077\nState:\tS (sleeping)\n"
        f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
        f"Gid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
    )
    (folder / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))


@pytest.fixture
def sleeper():
    """A real process whose argv[0] is NAME, as USER (None: this test's own)."""
    started: list[subprocess.Popen] = []

    def start(name: str, user: int | None = None) -> int:
        # `exec -a NAME sleep 60`: argv[0] is NAME.
        child = subprocess.Popen(
            [name, "60"], executable=shutil.which("sleep"), user=user, group=user
        )
        started.append(child)
        # Until the exec has happened: the cmdline names the new argv[0].
        for _ in range(500):
            if Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(name.encode()):
                return child.pid
            time.sleep(0.01)
        raise TimeoutError(name)

    yield start
    for child in started:
        child.kill()
        child.wait()


def test_the_ray_node_processes_of_one_user_are_found(tmp_path):
    venv = "/opt/imgbot/venv"
    lib = f"{venv}/lib/python3.11/site-packages/ray"
    process(
        tmp_path, 301, BOT, f"{venv}/bin/python", f"{venv}/bin/ray", "start", "--head", "--block"
    )
    process(tmp_path, 302, BOT, f"{lib}/core/src/ray/gcs/gcs_server", "--gcs_server_port=6379")
    process(tmp_path, 303, BOT, f"{lib}/core/src/ray/raylet/raylet", "--node_ip_address=x")
    process(tmp_path, 304, BOT, "ray::IDLE")  # a worker, renamed by setproctitle
    process(tmp_path, 305, BOT, "ray::Worker.run")
    process(
        tmp_path,
        306,
        BOT,
        f"{venv}/bin/python",
        f"{lib}/_private/workers/default_worker.py",
        "--node-ip-address=x",
    )
    # Not Ray nodes: the bot, its bridge (a Ray driver runs no one else's code), a `ray
    # status`, a look at a raylet's log, and another user's raylet.
    process(tmp_path, 401, BOT, f"{venv}/bin/python", f"{venv}/bin/imgbot", "run")
    process(tmp_path, 402, BOT, f"{venv}/bin/python", "-m", "generation.cluster.bridge")
    process(tmp_path, 403, BOT, f"{venv}/bin/python", f"{venv}/bin/ray", "status")
    process(tmp_path, 404, BOT, "less", "/tmp/ray/session_latest/logs/raylet.out")
    process(tmp_path, 405, OTHER, f"{lib}/core/src/ray/raylet/raylet")
    process(tmp_path, 406, BOT)  # a zombie: no command line
    (tmp_path / "407").mkdir()  # ended while the folder was read
    (tmp_path / "self").mkdir()
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")

    found = ray_processes(BOT, tmp_path)

    assert found == [
        RayProcess(301, "ray start"),
        RayProcess(302, "gcs_server"),
        RayProcess(303, "raylet"),
        RayProcess(304, "ray worker"),
        RayProcess(305, "ray worker"),
        RayProcess(306, "ray worker"),
    ]
    assert ray_processes(OTHER, tmp_path) == [RayProcess(405, "raylet")]
    assert ray_processes(1002, tmp_path) == []


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["grep", "raylet"],
        ["rayleth"],
        ["ray"],
        ["/usr/bin/ray", "stop"],
        ["python", "ray.py", "start"],
    ],
)
def test_other_command_lines_are_no_ray_node(argv):
    assert ray_role(argv) is None


def test_a_ray_node_of_the_bots_own_user_is_warned_about(sleeper):
    raylet = sleeper("raylet")
    worker = sleeper("ray::IDLE")

    result = check_ray_user("local")

    assert result is not None and result.status == "WARN" and not result.failed
    line = result.line()
    assert line.startswith("WARN  ray user: Ray runs as ")
    assert f"{raylet} (raylet)" in line and f"{worker} (ray worker)" in line
    assert "can read the bot's state and credentials and stop the bot" in line
    assert "imgbot-ray (systemd/imgbot-ray-*.service)" in line
    assert "the bot on a host that is not a Ray worker" in line


@pytest.mark.skipif(os.geteuid() != 0, reason="a process of another user needs root")
def test_a_ray_node_of_another_user_is_not(sleeper):
    raylet = sleeper("raylet", user=65534)

    assert RayProcess(raylet, "raylet") in ray_processes(65534)
    assert raylet not in [found.pid for found in ray_processes(os.geteuid())]
    result = check_ray_user("ray")
    assert result is not None and not re.search(rf"\b{raylet} \(", result.detail)


def test_with_backend_local_and_no_ray_node_nothing_is_said(monkeypatch):
    monkeypatch.setattr("bot.ops.check.ray_processes", lambda uid: [])

    assert check_ray_user("local") is None
    result = check_ray_user("ray")
    assert result is not None and result.status == "ok"
    assert result.detail.startswith("no Ray node runs as ")
