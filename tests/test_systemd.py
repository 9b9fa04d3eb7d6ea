"""The hardened unit `systemd/imgbot.service`: its directives, and systemd's own checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "imgbot.service"
# The exposure README.md reports; a change that raises it must update README.md too.
MAX_EXPOSURE = 1.4

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def directives(section: str) -> dict[str, list[str]]:
    """Each key of one section with all its values, in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in UNIT.read_text().splitlines():
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


@needs_analyze
def test_systemd_analyze_verify_finds_nothing(tmp_path):
    # verify insists that ExecStart's binary exists; /opt/imgbot/venv is not installed here.
    text = UNIT.read_text()
    copy = tmp_path / "imgbot.service"
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
def test_the_verify_script():
    result = subprocess.run([str(SYSTEMD / "verify.sh")], capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: ok" in result.stdout
