"""The hardened units of `systemd/`: the bot's, the Ray cluster's (a head node, a GPU host)
and the bridge's (a socket, a service per connection), their directives, systemd's own
checks, and what the kernel allows that makes the Ray units need a user of their own."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "imgbot.service"
RAY_HEAD = SYSTEMD / "imgbot-ray-head.service"
RAY_WORKER = SYSTEMD / "imgbot-ray-worker.service"
RAY_UNITS = [RAY_HEAD, RAY_WORKER]
BRIDGE_SOCKET = SYSTEMD / "imgbot-bridge.socket"
BRIDGE = SYSTEMD / "imgbot-bridge@.service"
# Every unit that runs code the cluster may send, or unpickles what it returns.
CLUSTER_UNITS = [*RAY_UNITS, BRIDGE]
# The exposure the manual reports (docs/security.md); a change that raises it must update it too.
MAX_EXPOSURE = 1.4

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def directives(section: str, unit: Path = UNIT) -> dict[str, list[str]]:
    """Each key of one section with all its values, in order (keys may repeat); a line
    ending in a backslash goes on on the next, as systemd reads it."""
    found: dict[str, list[str]] = {}
    current = None
    text = re.sub(r"\\\n\s*", " ", unit.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_is_hardened():
    service = directives("Service")
    expected = {
        "User": "imgbot",
        "StateDirectory": "imgbot",
        "UMask": "0077",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "DevicePolicy": "closed",
        "PrivateDevices": "no",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes",
        "SystemCallArchitectures": "native",
        "Restart": "on-failure",
        # PyTorch's JIT needs W+X memory.
        "MemoryDenyWriteExecute": "no",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], f"{key}={service.get(key)}"
    assert "@system-service" in service["SystemCallFilter"]
    assert "char-nvidia* rw" in service["DeviceAllow"]
    assert service["LoadCredential"] == ["password:/etc/imgbot/password"]
    # Would hide /proc/meminfo, which the model pool reads.
    assert "ProcSubset" not in service
    assert "DynamicUser" not in service and "ReadWritePaths" not in service


@pytest.mark.parametrize("unit", CLUSTER_UNITS, ids=lambda unit: unit.stem)
def test_the_cluster_units_are_hardened_like_the_bots(unit):
    bot = directives("Service")
    same = [
        "UMask",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateMounts",
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "PrivateUsers",
        "RemoveIPC",
        "PrivateDevices",
        "DevicePolicy",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "ProtectProc",
        "LockPersonality",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "RestrictNamespaces",
        "MemoryDenyWriteExecute",
        "SystemCallArchitectures",
        "SystemCallFilter",
        "SystemCallErrorNumber",
        "StateDirectoryMode",
    ]
    service = directives("Service", unit)
    for key in same:
        assert service.get(key) == bot[key], f"{unit.name}: {key}={service.get(key)}"
    # Ray's agents list the network interfaces (getifaddrs asks netlink).
    assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert "ProcSubset" not in service and "DynamicUser" not in service
    # Code a token holder sends, or what Ray unpickles, runs here: the bot's state and
    # config are out of its reach.
    assert service["InaccessiblePaths"] == ["-/var/lib/imgbot -/etc/imgbot"]


@pytest.mark.parametrize("unit", CLUSTER_UNITS, ids=lambda unit: unit.stem)
def test_no_cluster_unit_runs_as_the_bots_user(unit):
    # A process of the bot's user reads the bot's login through /proc/<pid>/cwd and may kill
    # it, whatever the unit hides (test_a_process_of_the_bots_user_reads_its_credentials…).
    bot = directives("Service")
    service = directives("Service", unit)
    assert service["User"] == service["Group"] == ["imgbot-ray"]
    assert service["User"] != bot["User"] and service["Group"] != bot["Group"]
    assert "DynamicUser" not in service and "SupplementaryGroups" not in service
    # The install lines in its comments make that user, and not the bot's.
    text = unit.read_text()
    if unit in RAY_UNITS:
        assert (
            "useradd --system --user-group --home-dir /var/lib/imgbot-ray "
            "--shell /usr/sbin/nologin imgbot-ray"
        ) in text
    assert not re.search(r"useradd .* imgbot$", text, re.M)


@pytest.mark.parametrize("unit", RAY_UNITS, ids=lambda unit: unit.stem)
def test_a_ray_unit_keeps_its_own_folders(unit):
    service = directives("Service", unit)
    assert service["StateDirectory"] == ["imgbot-ray"]  # not the bot's state_dir
    assert service["CacheDirectory"] == ["imgbot-ray"]
    assert service["CacheDirectoryMode"] == directives("Service")["CacheDirectoryMode"]


@pytest.mark.parametrize("unit", RAY_UNITS, ids=lambda unit: unit.stem)
def test_a_ray_unit_uses_the_token_and_keeps_everything_inside(unit):
    service = directives("Service", unit)
    environment = " ".join(service["Environment"]).split()
    # The token is root's file; the service reads its private copy.
    assert service["LoadCredential"] == ["ray-token:/etc/imgbot/ray-token"]
    assert "RAY_AUTH_MODE=token" in environment
    assert "RAY_AUTH_TOKEN_PATH=%d/ray-token" in environment
    assert "RAY_USAGE_STATS_ENABLED=0" in environment
    # Ray's sockets and logs in the unit's own state directory, not a private /tmp.
    assert "RAY_TMPDIR=%S/imgbot-ray" in environment
    assert service["EnvironmentFile"] == ["/etc/imgbot/ray.env"]
    [start] = service["ExecStart"]
    assert start.startswith("/opt/imgbot/venv/bin/ray start ")
    for flag in ("--block", "--disable-usage-stats", "--node-ip-address=${IMGBOT_RAY_IP}"):
        assert flag in start.split(), flag
    # SIGTERM to `ray start --block` drains and stops the node, then exits 1; `ray stop`
    # would kill every Ray process of the user on the host.
    assert "ExecStop" not in service
    assert service["KillMode"] == ["mixed"] and service["KillSignal"] == ["SIGTERM"]
    assert service["SuccessExitStatus"] == ["1"] and service["Restart"] == ["always"]


def exec_start(unit: Path, environment: dict[str, str]) -> list[str]:
    """ExecStart's words as systemd hands them to the program: split where systemd splits
    (whitespace, quotes taken off as the shell does for these lines), then each "${NAME}"
    replaced inside its word by the value of ray.env."""
    [start] = directives("Service", unit)["ExecStart"]
    return [
        re.sub(r"\$\{(\w+)\}", lambda name: environment.get(name[1], ""), word)
        for word in shlex.split(start)
    ]


def test_the_worker_joins_the_head_with_its_gpus_and_imgbot_workers():
    service = directives("Service", RAY_WORKER)
    ray_env = {
        "IMGBOT_RAY_HEAD": "10.0.0.5:6379",
        "IMGBOT_RAY_IP": "10.0.0.6",
        "IMGBOT_RAY_GPUS": "2",
        "IMGBOT_RAY_WORKERS": "2",
    }
    start = exec_start(RAY_WORKER, ray_env)
    assert "--address=10.0.0.5:6379" in start and "--num-gpus=2" in start
    # The custom resource the bot's workers ask for by default: only hosts that say so get
    # them. One word, JSON once systemd has put the number in.
    [resources] = [word for word in start if word.startswith("--resources=")]
    assert json.loads(resources.removeprefix("--resources=")) == {"imgbot_worker": 2}
    assert "IMGBOT_RAY_WORKERS=2" in RAY_WORKER.read_text()  # the ray.env example says so
    assert service["DeviceAllow"] == ["char-nvidia* rw"]


def test_the_head_listens_on_6379_and_offers_nothing_to_run():
    service = directives("Service", RAY_HEAD)
    start = exec_start(RAY_HEAD, {"IMGBOT_RAY_IP": "10.0.0.5"})
    assert "--head" in start and "--port=6379" in start
    assert "--include-dashboard=false" in start
    # The bot may run beside it: no CPU, no GPU, no imgbot_worker, so nothing is placed
    # here, and a GPU head is a deliberate `systemctl edit`.
    assert "--num-cpus=0" in start and "--num-gpus=0" in start
    assert not any(word.startswith("--resources") for word in start)
    assert not any("IMGBOT_RAY_GPUS" in value for value in service["Environment"])
    assert "DeviceAllow" not in service
    text = RAY_HEAD.read_text()
    assert "Put the bot on a host that is not a Ray worker" in text
    assert "should not run the bot" in text


@pytest.mark.parametrize("unit", [*RAY_UNITS, BRIDGE], ids=lambda unit: unit.stem)
def test_tls_between_the_nodes_is_a_commented_choice(unit):
    # Ray's names (ray/_private/tls_utils.py); the files come as credentials, since the
    # unit cannot see /etc/imgbot.
    lines = [line.strip() for line in unit.read_text().splitlines()]
    assert (
        "#Environment=RAY_USE_TLS=1 RAY_TLS_SERVER_CERT=%d/ray-tls-cert "
        "RAY_TLS_SERVER_KEY=%d/ray-tls-key RAY_TLS_CA_CERT=%d/ray-tls-ca"
    ) in lines
    for name, file in [("cert", "node.crt"), ("key", "node.key"), ("ca", "ca.crt")]:
        assert f"#LoadCredential=ray-tls-{name}:/etc/imgbot/ray-tls/{file}" in lines


def test_the_bridge_socket_lets_only_the_bots_group_connect():
    socket_unit = directives("Socket", BRIDGE_SOCKET)
    assert socket_unit["ListenStream"] == ["/run/imgbot-bridge/bridge.sock"]
    assert socket_unit["Accept"] == ["yes"]  # one bridge per connection
    assert socket_unit["SocketUser"] == ["imgbot-ray"]
    assert socket_unit["SocketGroup"] == [directives("Service")["Group"][0]]  # the bot's
    assert socket_unit["SocketMode"] == ["0660"]
    # A socket unit has no RuntimeDirectory=: systemd makes the socket's folder itself.
    assert socket_unit["DirectoryMode"] == ["0755"]
    assert "RuntimeDirectory" not in socket_unit
    assert directives("Install", BRIDGE_SOCKET)["WantedBy"] == ["sockets.target"]


def test_the_bridge_runs_on_the_connection_as_its_own_user_with_its_own_token():
    service = directives("Service", BRIDGE)
    # Pinned to the head node of this host, as the head's unit starts it: a hello that names
    # another address is refused (tests/cluster/test_cluster_trust.py).
    assert service["ExecStart"] == [
        "/opt/imgbot/venv/bin/python -m generation.cluster.bridge --address=${IMGBOT_RAY_IP}:6379"
    ]
    assert service["EnvironmentFile"] == ["/etc/imgbot/ray.env"]  # read before the sandbox
    head = directives("Service", SYSTEMD / "imgbot-ray-head.service")
    assert head["EnvironmentFile"] == ["/etc/imgbot/ray.env"]
    assert {"--node-ip-address=${IMGBOT_RAY_IP}", "--port=6379"} <= set(
        " ".join(head["ExecStart"]).split()
    )
    assert service["StandardInput"] == service["StandardOutput"] == ["socket"]
    assert service["StandardError"] == ["journal"]
    # The token is root's file; the bridge reads its private copy, the bot needs none.
    assert service["LoadCredential"] == ["ray-token:/etc/imgbot/ray-token"]
    environment = " ".join(service["Environment"]).split()
    assert "RAY_AUTH_MODE=token" in environment
    assert "RAY_AUTH_TOKEN_PATH=%d/ray-token" in environment
    assert "RAY_USAGE_STATS_ENABLED=0" in environment
    # Its own working folder and home; the node's Ray folder to find the node in.
    assert service["StateDirectory"] == ["imgbot-bridge"]
    assert service["WorkingDirectory"] == ["/var/lib/imgbot-bridge"]
    assert "HOME=%S/imgbot-bridge" in environment and "RAY_TMPDIR=%S/imgbot-ray" in environment
    assert service["ReadWritePaths"] == ["-/var/lib/imgbot-ray"]
    assert "DeviceAllow" not in service
    assert "[Install]" not in BRIDGE.read_text()  # started by its socket only


def test_the_bots_unit_may_connect_to_the_bridge_socket():
    # The socket is in /run, which ProtectSystem=strict leaves visible (read-only, which
    # connect() does not need: test_a_read_only_socket_…), and AF_UNIX is allowed.
    bot = directives("Service")
    assert "AF_UNIX" in bot["RestrictAddressFamilies"][0].split()
    assert bot["ProtectSystem"] == ["strict"]
    for hidden in ("InaccessiblePaths", "TemporaryFileSystem", "PrivateNetwork"):
        assert "/run" not in " ".join(bot.get(hidden, [])), hidden


@needs_analyze
@pytest.mark.parametrize("unit", [UNIT, *CLUSTER_UNITS, BRIDGE_SOCKET], ids=lambda unit: unit.stem)
def test_systemd_analyze_verify_finds_nothing(tmp_path, unit):
    # verify insists that ExecStart's binary exists; /opt/imgbot/venv is not installed here.
    # A socket is verified with its service beside it.
    for each in [unit, BRIDGE] if unit == BRIDGE_SOCKET else [unit]:
        (tmp_path / each.name).write_text(
            re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={shutil.which('true')}", each.read_text())
        )

    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


@needs_analyze
def test_the_security_exposure_is_what_the_readme_says():
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    score = re.search(r"Overall exposure level for imgbot\.service: (\d+\.\d+)", result.stdout)
    assert score, result.stdout
    assert float(score[1]) <= MAX_EXPOSURE
    readme = (UNIT.parent.parent / "docs" / "security.md").read_text()
    assert f"exposure level {MAX_EXPOSURE}" in readme


@needs_analyze
@pytest.mark.parametrize("unit", CLUSTER_UNITS, ids=lambda unit: unit.stem)
def test_the_cluster_units_are_exposed_no_more_than_the_bot(unit):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    # A template is rated as its instance NAME@i.
    name = unit.name.replace("@.", "@i.")
    score = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", result.stdout)
    assert score, result.stdout
    assert float(score[1]) <= MAX_EXPOSURE


@needs_analyze
@pytest.mark.parametrize(
    "unit", [None, *CLUSTER_UNITS, BRIDGE_SOCKET], ids=lambda u: u.stem if u else "default"
)
def test_the_verify_script(unit):
    result = subprocess.run(
        [str(SYSTEMD / "verify.sh"), *([str(unit)] if unit else [])],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: ok" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="processes of other users need root")
def test_a_process_of_the_bots_user_reads_its_credentials_and_may_kill_it(tmp_path):
    # Why the Ray units have a user of their own: InaccessiblePaths= hides the bot's
    # state_dir only in the Ray unit's own mount namespace, but /proc/<bot pid>/cwd leads
    # into the bot's, and the kernel lets a process of the same user follow it (and send
    # signals); a process of another user may do neither.
    bot_uid, other_uid = 64001, 64002
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "credentials.json").write_text('{"access_token": "syt_secret"}')
    (state / "credentials.json").chmod(0o600)
    for path in (state, state / "credentials.json"):
        os.chown(path, bot_uid, bot_uid)
    bot = subprocess.Popen(["sleep", "60"], cwd=state, user=bot_uid, group=bot_uid)
    try:

        def as_user(uid: int, *command: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                command, user=uid, group=uid, cwd="/", capture_output=True, text=True, timeout=30
            )

        stolen = f"/proc/{bot.pid}/cwd/credentials.json"
        other = as_user(other_uid, "cat", stolen)
        assert other.returncode != 0 and "Permission denied" in other.stderr
        assert other.stdout == ""
        assert as_user(other_uid, "kill", "-KILL", str(bot.pid)).returncode != 0
        assert bot.poll() is None  # EPERM: still running

        same = as_user(bot_uid, "cat", stolen)
        assert same.returncode == 0 and same.stdout == '{"access_token": "syt_secret"}'
        assert as_user(bot_uid, "kill", "-KILL", str(bot.pid)).returncode == 0
        assert bot.wait(10) == -signal.SIGKILL
    finally:
        bot.kill()
        bot.wait()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a mount namespace and other users need root",
)
def test_a_read_only_socket_folder_takes_connections_from_the_sockets_group_only():
    # The bot's unit sees /run read-only (ProtectSystem=strict); connect() needs write
    # permission on the socket, which a read-only mount does not take away (only files,
    # folders and links become read-only), and the socket's mode 660 with group imgbot
    # lets the bot's group in and nobody else.
    ray_uid, bot_uid, bot_gid, stranger = 64002, 64001, 64003, 64004
    base = Path(tempfile.mkdtemp())
    base.chmod(0o755)
    run = base / "imgbot-bridge"
    run.mkdir(mode=0o755)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(run / "bridge.sock"))
        server.listen()
        os.chown(run / "bridge.sock", ray_uid, bot_gid)
        (run / "bridge.sock").chmod(0o660)
        client = (
            "import errno, os, socket, sys\n"
            "uid, gid, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
            "os.setgroups([]); os.setgid(gid); os.setuid(uid)\n"
            "try:\n"
            "    open(os.path.join(folder, 'x'), 'w')\n"
            "except OSError as exc:\n"
            "    print('write:', errno.errorcode[exc.errno])\n"
            "try:\n"
            "    socket.socket(socket.AF_UNIX).connect(os.path.join(folder, 'bridge.sock'))\n"
            "    print('connected')\n"
            "except OSError as exc:\n"
            "    print('connect:', errno.errorcode[exc.errno])\n"
        )
        read_only = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'

        def connect_as(uid: int, gid: int) -> str:
            return subprocess.run(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    read_only,
                    "sh",
                    str(run),
                    sys.executable,
                    "-c",
                    client,
                    str(uid),
                    str(gid),
                    str(run),
                ],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout

        assert connect_as(bot_uid, bot_gid) == "write: EROFS\nconnected\n"
        assert connect_as(stranger, stranger) == "write: EROFS\nconnect: EACCES\n"
    finally:
        server.close()
        shutil.rmtree(base)
