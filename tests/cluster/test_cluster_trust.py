"""The Ray cluster as a trust boundary, on a real cluster (loopback only, token
authentication on): a worker planted in the bot's namespace whose answer runs code when it
is unpickled reaches only the bridge, which holds nothing of the bot's, and `imgbot check`
calls it not valid; and the bridge as its own user, the way systemd's socket activation
starts it (Accept=yes: one bridge per connection, the connection its stdin and stdout),
makes pictures for the bot."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from generation.cluster.joining import ACTOR_PREFIX
from generation.cluster.messages import NOT_VALID
from generation.job import Job

# A cluster member's worker, planted as a named actor where the bot's workers live: its
# ready() answers an object whose unpickling runs code, here writing who ran it.
PLANT = """
import json, os, sys, ray

class Payload:
    def __reduce__(self):
        return (exec, ("import json, os; open(%r, 'w').write(json.dumps({'pid': os.getpid(), "
                       "'environ': sorted(os.environ), 'cwd': os.getcwd()}))" % MARKER,))

@ray.remote(num_cpus=0)
class Planted:
    def ready(self):
        return Payload()

    def ping(self):
        return True

ray.init(address=sys.argv[1], namespace="imgbot", log_to_driver=False)
actor = Planted.options(name=NAME, lifetime="detached").remote()
ray.get(actor.ping.remote())
"""


def test_a_planted_worker_runs_its_code_only_in_the_bridge_and_check_calls_it_invalid(
    ray_cluster, make_cluster_settings, tmp_path, monkeypatch
):
    from bot.cluster import survey

    ray_cluster.start_head()
    marker = tmp_path / "unpickled-by.json"
    script = tmp_path / "plant.py"
    script.write_text(f"MARKER = {str(marker)!r}\nNAME = '{ACTOR_PREFIX}planted'\n{PLANT}")
    subprocess.run(
        [sys.executable, str(script), ray_cluster.address],
        check=True,
        env=ray_cluster.env(),
        capture_output=True,
        timeout=120,
    )
    settings = make_cluster_settings(ray_cluster)
    # The bot as systemd runs it: in its state_dir, its credentials beside it.
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(settings.state_dir)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    monkeypatch.setenv("IMGBOT_A_SETTING", "of the bot's")

    line = survey(settings)

    assert f"{ACTOR_PREFIX}planted: {NOT_VALID}" in line, line
    ran = json.loads(marker.read_text())  # in the bridge, which Ray's unpickling cannot avoid
    assert ran["pid"] != os.getpid()
    assert "CREDENTIALS_DIRECTORY" not in ran["environ"]
    assert not [name for name in ran["environ"] if name.startswith("IMGBOT_")]
    assert Path(ran["cwd"]) != Path(settings.state_dir).resolve()
    assert not Path(ran["cwd"]).is_relative_to(Path(settings.state_dir).resolve())


@pytest.fixture
def bridge_socket(tmp_path, ray_cluster):
    """systemd's imgbot-bridge.socket with Accept=yes, emulated: a Unix socket, and for each
    connection `python -m generation.cluster.bridge --address=<the head>` (as its unit
    pins it) with the connection as its stdin and stdout, in an environment of its own
    (its unit's token)."""
    path, home = tmp_path / "bridge.sock", tmp_path / "bridge-home"
    home.mkdir(mode=0o700)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(ray_cluster.token_file),
    }
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    server.settimeout(0.2)
    bridges: list[subprocess.Popen] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                bridges.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "generation.cluster.bridge",
                            f"--address={ray_cluster.address}",
                        ],
                        cwd=home,
                        env=env,
                        stdin=connection.fileno(),
                        stdout=connection.fileno(),
                    )
                )

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path, bridges
    closing.set()
    thread.join()
    server.close()
    for bridge in bridges:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()


def test_a_bridge_of_its_own_user_on_a_socket_makes_the_bots_pictures(
    ray_cluster, make_cluster_settings, bridge_socket
):
    from bot.cluster import connect

    path, bridges = bridge_socket
    ray_cluster.start_head()
    # No token_file: the bridge has its unit's.
    settings = make_cluster_settings(
        ray_cluster,
        workers=1,
        generation={"max_batch": 1, "ray": {"token_file": None, "bridge_socket": str(path)}},
    )
    link, (runner,) = connect(settings)
    try:
        deadline = time.monotonic() + 180
        assert runner.wait_ready(lambda: time.monotonic() > deadline), "the worker is up"
        (picture,) = runner.generate(
            Job(prompt="a lighthouse", seed=1, steps=2, width=64, height=64)
        )
        assert picture.size == (64, 64) and picture.mode == "RGB" and picture.info == {}
        assert "(node " in runner.made_by
    finally:
        link.stop()
    (bridge,) = bridges
    assert bridge.wait(15) == 0  # the connection's end ends the bridge


def test_a_bridge_pinned_by_its_unit_refuses_a_hello_that_names_another_cluster(
    ray_cluster, make_cluster_settings, bridge_socket
):
    """Whoever may connect to the socket (the bot's group) sends the hello: one that names
    another address (a server of the caller's, to be shown the unit's token) is refused
    with words that say so: the bot's start fails with them."""
    from bot.cluster import connect
    from generation.errors import ClusterUnavailable

    path, bridges = bridge_socket  # no head needed: the bridge never reaches for one
    elsewhere = socket.create_server(("127.0.0.1", 0))  # something listens there
    address = f"127.0.0.1:{elsewhere.getsockname()[1]}"
    settings = make_cluster_settings(
        ray_cluster,
        workers=1,
        generation={"ray": {"address": address, "token_file": None, "bridge_socket": str(path)}},
    )
    try:
        with pytest.raises(
            ClusterUnavailable, match=f"connects only to {ray_cluster.address} .*not to {address}"
        ):
            connect(settings, timeout=30)
    finally:
        elsewhere.close()
    (bridge,) = bridges
    assert bridge.wait(15) == 3  # refused before it reached for any cluster
