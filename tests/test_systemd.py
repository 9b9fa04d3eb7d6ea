"""The hardened units of `systemd/`: the bot's and the Ray cluster's (a head node, a GPU
host), their directives, and systemd's own checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "imgbot.service"
RAY_HEAD = SYSTEMD / "imgbot-ray-head.service"
RAY_WORKER = SYSTEMD / "imgbot-ray-worker.service"
RAY_UNITS = [RAY_HEAD, RAY_WORKER]
# The exposure README.md reports; a change that raises it must update README.md too.
MAX_EXPOSURE = 1.4

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


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
        "User": "imgbot", "StateDirectory": "imgbot", "UMask": "0077",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "DevicePolicy": "closed", "PrivateDevices": "no",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
        "ProtectHostname": "yes", "ProtectProc": "invisible", "LockPersonality": "yes",
        "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "RestrictNamespaces": "yes",
        "SystemCallArchitectures": "native", "Restart": "on-failure",
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


def test_the_ray_units_are_hardened_like_the_bots():
    bot = directives("Service")
    same = ["User", "Group", "UMask", "ProtectSystem", "ProtectHome", "PrivateTmp",
            "PrivateMounts", "NoNewPrivileges", "CapabilityBoundingSet", "AmbientCapabilities",
            "PrivateUsers", "RemoveIPC", "PrivateDevices", "DevicePolicy",
            "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
            "ProtectControlGroups", "ProtectClock", "ProtectHostname", "ProtectProc",
            "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID", "RestrictNamespaces",
            "MemoryDenyWriteExecute", "SystemCallArchitectures", "SystemCallFilter",
            "SystemCallErrorNumber", "StateDirectoryMode", "CacheDirectoryMode"]
    for unit in RAY_UNITS:
        service = directives("Service", unit)
        for key in same:
            assert service.get(key) == bot[key], f"{unit.name}: {key}={service.get(key)}"
        # Ray's agents list the network interfaces (getifaddrs asks netlink).
        assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
        assert "ProcSubset" not in service and "DynamicUser" not in service
        assert service["StateDirectory"] == ["imgbot-ray"]  # not the bot's state_dir
        assert service["CacheDirectory"] == ["imgbot-ray"]


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
    for flag in ("--block", "--disable-usage-stats", "--node-ip-address=${IMGBOT_RAY_IP}",
                 "--num-gpus=${IMGBOT_RAY_GPUS}"):
        assert flag in start.split(), flag
    # SIGTERM to `ray start --block` drains and stops the node, then exits 1; `ray stop`
    # would kill every Ray process of the user on the host.
    assert "ExecStop" not in service
    assert service["KillMode"] == ["mixed"] and service["KillSignal"] == ["SIGTERM"]
    assert service["SuccessExitStatus"] == ["1"] and service["Restart"] == ["always"]
    # Code a token holder sends runs here: the bot's state and config are out of its reach.
    assert service["InaccessiblePaths"] == ["-/var/lib/imgbot -/etc/imgbot"]


def test_the_worker_joins_the_head_with_its_gpus():
    service = directives("Service", RAY_WORKER)
    assert "--address=${IMGBOT_RAY_HEAD}" in service["ExecStart"][0].split()
    assert service["DeviceAllow"] == ["char-nvidia* rw"]


def test_the_head_listens_on_6379_without_a_dashboard_or_gpus():
    service = directives("Service", RAY_HEAD)
    start = service["ExecStart"][0].split()
    assert "--head" in start and "--port=6379" in start
    assert "--include-dashboard=false" in start
    assert "IMGBOT_RAY_GPUS=0" in service["Environment"]  # ray.env may say otherwise
    assert "DeviceAllow" not in service


@needs_analyze
@pytest.mark.parametrize("unit", [UNIT, *RAY_UNITS], ids=lambda unit: unit.stem)
def test_systemd_analyze_verify_finds_nothing(tmp_path, unit):
    # verify insists that ExecStart's binary exists; /opt/imgbot/venv is not installed here.
    text = unit.read_text()
    copy = tmp_path / unit.name
    copy.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={shutil.which('true')}", text))

    result = subprocess.run(["systemd-analyze", "verify", str(copy)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


@needs_analyze
def test_the_security_exposure_is_what_the_readme_says():
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                             str(UNIT)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    score = re.search(r"Overall exposure level for imgbot\.service: (\d+\.\d+)", result.stdout)
    assert score, result.stdout
    assert float(score[1]) <= MAX_EXPOSURE
    readme = (UNIT.parent.parent / "README.md").read_text()
    assert f"exposure level {MAX_EXPOSURE}" in readme


@needs_analyze
@pytest.mark.parametrize("unit", RAY_UNITS, ids=lambda unit: unit.stem)
def test_the_ray_units_are_exposed_no_more_than_the_bot(unit):
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                             str(unit)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    score = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)",
                      result.stdout)
    assert score, result.stdout
    assert float(score[1]) <= MAX_EXPOSURE


@needs_analyze
@pytest.mark.parametrize("unit", [None, *RAY_UNITS], ids=lambda u: u.stem if u else "default")
def test_the_verify_script(unit):
    result = subprocess.run([str(SYSTEMD / "verify.sh"), *([str(unit)] if unit else [])],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: ok" in result.stdout
