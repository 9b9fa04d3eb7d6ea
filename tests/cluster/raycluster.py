"""A real Ray cluster on loopback for the cluster tests: a head and worker nodes, each a
`ray start --block` in a session of its own (so that a test can SIGKILL one node's raylet
and everything of it), with token authentication and usage statistics off.

Only inside a network namespace that has nothing but loopback (tests/cluster/conftest.py):
Ray binds to every interface and probes an outside address to find its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayCluster:
    def __init__(self, workdir: Path, token: str | None = "cluster-token-for-tests"):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.token_file: Path | None = None
        if token is not None:
            self.token_file = workdir / "ray-token"
            self.token_file.write_text(token + "\n")
            self.token_file.chmod(0o600)
        self.nodes: list[subprocess.Popen] = []
        self.address = f"127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict:
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **extra)
        for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            env.pop(key, None)
        if self.token_file is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file))
        else:
            env["RAY_AUTH_MODE"] = "disabled"  # an open cluster, to be refused
        return env

    def _start(
        self, args: list[str], name: str, wait_for: int, hide: Path | None = None
    ) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        command = [
            str(BIN / "ray"),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            "--num-cpus=1",
            *args,
        ]
        if hide is not None:
            # A host without that folder: the node runs in a mount namespace of its own,
            # with an empty file system mounted over the folder.
            command = [
                "unshare",
                "--mount",
                "sh",
                "-c",
                f'mount -t tmpfs none "{hide}" && exec "$@"',
                "node",
                *command,
            ]
        # The head's autoscaler monitor writes what `ray status` shows every 5 s by default
        # (AUTOSCALER_UPDATE_INTERVAL_S), which made each start wait 3-6 s more for it; the
        # bot reads nodes from the GCS, not from it.
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(AUTOSCALER_UPDATE_INTERVAL_S="1"),
            start_new_session=True,
        )
        self.nodes.append(process)
        self.wait_for_nodes(wait_for, starting=process, log=self.workdir / f"{name}.log")
        return process

    def start_head(self, worker: bool = True) -> subprocess.Popen:
        resources = json.dumps({"imgbot_worker": 1} if worker else {})
        return self._start(
            [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--resources={resources}",
            ],
            "head",
            1,
        )

    def add_node(self, hide: Path | None = None) -> subprocess.Popen:
        """A worker node; with `hide`, a host on which that folder is empty."""
        return self._start(
            [f"--address={self.address}", '--resources={"imgbot_worker": 1}'],
            f"node{len(self.nodes)}",
            len(self.alive()) + 1,
            hide,
        )

    def alive(self) -> list[subprocess.Popen]:
        return [node for node in self.nodes if node.poll() is None]

    def wait_for_nodes(
        self,
        count: int,
        timeout: float = 90.0,
        starting: subprocess.Popen | None = None,
        log: Path | None = None,
    ) -> None:
        """Until `ray status` (through the token) sees `count` nodes alive. With `starting`,
        `ray status` is first asked once that node's `ray start` says it is up (each `ray
        status` is a Python that imports Ray: some 2 s of a CPU, taken from the start)."""
        deadline = time.monotonic() + timeout
        while starting is not None and time.monotonic() < deadline:
            if "will now block forever" in log.read_text(errors="replace"):
                break
            if starting.poll() is not None:
                raise RuntimeError(
                    f"`ray start` ended ({starting.returncode}): "
                    + log.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.1)
        while time.monotonic() < deadline:
            result = subprocess.run(
                [str(BIN / "ray"), "status", f"--address={self.address}"],
                capture_output=True,
                text=True,
                env=self.env(),
            )
            if result.returncode == 0 and result.stdout.count(" node_") >= count:
                return
            time.sleep(0.5)
        raise TimeoutError(f"the Ray cluster did not show {count} node(s) in {timeout:.0f} s")

    def kill(self, node: subprocess.Popen) -> None:
        """SIGKILL the node's whole session, as if its host died: its `ray start`, the
        raylet and the rest of its process group, and the Ray workers the raylet started
        (Ray puts each in a process group of its own, so that killing the group alone left
        a worker to finish a picture after its node was gone)."""
        if node.returncode is None:  # not reaped yet: its pid is still its session's id
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(20):  # a worker being forked as the raylet died shows up late
                members = _session_members(node.pid)
                if not members:
                    break
                for pid in members:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
        node.wait(10)

    def stop(self) -> None:
        """Every node killed at once. Not SIGTERM: `ray start --block` then first drains its
        node, for up to 30 s (RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S), which here always ran
        out, so that a SIGKILL after 30 s ended every test's cluster anyway; and not `ray
        stop`: it ends every Ray process on the machine, other clusters' too."""
        for node in reversed(self.nodes):
            self.kill(node)


def _session_members(sid: int) -> list[int]:
    """The live processes of session `sid` other than its leader."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == sid:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == sid and state not in ("Z", "X"):
            members.append(int(entry))
    return members
