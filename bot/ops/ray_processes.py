"""The Ray node processes on this host that run as a given user, read from /proc.

A Ray node runs whatever code the cluster sends it (every holder of the cluster's token can
send some). Run as the bot's own user, that code could read the bot's state and credentials
through /proc/<bot pid>/cwd and kill the bot, whatever the node's unit hides in its own
mount namespace: `imgbot check` warns when it finds such a node (systemd/ runs Ray as
imgbot-ray). Pure reading: the /proc root is a parameter, so a folder that looks like /proc
tests it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# argv[0]'s file name for Ray's own binaries; the workers that run the cluster's code name
# themselves `ray::IDLE`, `ray::Worker.run`, … (setproctitle), or run default_worker.py
# until they do.
_BINARIES = ("raylet", "gcs_server")
_WORKER_SCRIPT = "default_worker.py"


@dataclass(frozen=True)
class RayProcess:
    pid: int
    role: str  # "raylet", "gcs_server", "ray start" or "ray worker"


def ray_role(argv: list[str]) -> str | None:
    """What Ray node process this command line is, or None when it is none."""
    if not argv:
        return None
    first = argv[0]
    if first.startswith("ray::"):
        return "ray worker"
    if os.path.basename(first) in _BINARIES:
        return os.path.basename(first)
    names = [os.path.basename(arg) for arg in argv[:3]]
    if _WORKER_SCRIPT in names:
        return "ray worker"
    # `ray start …`, run as `ray start` or `python …/bin/ray start`.
    for index, name in enumerate(names):
        if name == "ray" and argv[index + 1 : index + 2] == ["start"]:
            return "ray start"
    return None


def ray_processes(uid: int, proc: Path = Path("/proc")) -> list[RayProcess]:
    """The Ray node processes whose effective user is `uid`, by pid. A process that ends
    while it is read, or that this user may not read, is passed over."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if _effective_uid((entry / "status").read_text()) != uid:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        role = ray_role([arg for arg in argv.split("\0") if arg])
        if role is not None:
            found.append(RayProcess(int(entry.name), role))
    return sorted(found, key=lambda process: process.pid)


def _effective_uid(status: str) -> int:
    """From /proc/PID/status's `Uid:` line: real, effective, saved, file system."""
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])
    raise ValueError("no Uid line")
