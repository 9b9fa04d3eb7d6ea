"""What the bot tells its bridge: the cluster to use and what each worker loads. Plain
values only (messages.spec_to_wire writes them out), with the versions every node must
share."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata

from ..models.recipe import Recipe


@dataclass(frozen=True)
class ClusterSpec:
    address: str  # "auto", "HOST:PORT" of the head's GCS, or "ray://HOST:PORT"
    namespace: str
    workers: int  # actor slots: at most this many workers
    resources: dict[str, float]  # what one worker asks Ray for
    recipe: Recipe  # what each worker loads
    token_path: str | None = None  # RAY_AUTH_TOKEN_PATH; None: no token authentication
    # Socket mode: the Unix socket where a bridge of its own user answers (systemd's
    # imgbot-bridge.socket); None: the bot spawns the bridge itself.
    bridge_socket: str | None = None
    # The bridge uses the token of its own environment (RAY_AUTH_TOKEN_PATH of its unit):
    # what a bridge in socket mode is told, in place of a token path.
    own_token: bool = False
    allow_unauthenticated: bool = False
    # `imgbot check`: only look (versions, authentication, the workers a running bot has,
    # room for more), start nothing, and end.
    survey: bool = False
    versions: dict[str, str] = field(default_factory=lambda: versions())


def versions() -> dict[str, str]:
    """This process's imgbot, Ray and Python versions (what every node must run too)."""
    found = {"python": platform.python_version()}
    for package in ("imgbot", "ray"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def mismatch(ours: dict[str, str], theirs: dict[str, str], where: str) -> str | None:
    """The refusal when `where` runs other versions than the bot, naming both; else None."""
    differ = [name for name in ("imgbot", "ray", "python") if ours.get(name) != theirs.get(name)]
    if not differ:
        return None
    both = "; ".join(
        f"{name.capitalize() if name != 'imgbot' else 'imgbot'} "
        f"{theirs.get(name, '?')} there, {ours.get(name, '?')} here"
        for name in differ
    )
    return (
        f"{where} runs other versions than the bot ({both}): every node needs the same "
        "imgbot, Ray and Python"
    )
