"""The GPU workers on a Ray cluster (`generation.backend: ray`), as the bot builds them: a
link to the cluster (its bridge process) and one remote runner per worker slot, which the
queue's worker threads drive as they drive local engines. Nothing of Ray is imported here
(the bridge is a process of its own), nor anywhere with the local backend.
"""

from __future__ import annotations

import logging

from bot.config import Settings
from generation.errors import ClusterUnavailable

log = logging.getLogger(__name__)

# How long the start (and `imgbot check`) waits for the cluster's first answer.
CONNECT_SECONDS = 60.0


def spec_of(settings: Settings):
    from generation.cluster.spec import ClusterSpec

    generation, ray = settings.generation, settings.generation.ray
    if ray.allow_unauthenticated and ray.token_file is None:
        # Said at every start, so that nobody forgets the cluster is open.
        log.warning(
            "generation.ray.allow_unauthenticated is true: the bot uses a Ray cluster "
            "without token authentication, where anyone who reaches its port can run "
            "code"
        )
    return ClusterSpec(
        address=ray.address,
        namespace=ray.namespace,
        workers=ray.workers,
        resources=dict(ray.resources),
        recipe=generation.recipe(settings.state_dir),
        token_path=None if ray.token_path is None else str(ray.token_path),
        allow_unauthenticated=ray.allow_unauthenticated,
        bridge_socket=None if ray.bridge_socket is None else str(ray.bridge_socket),
    )


def spawned_bridge_risk(settings: Settings) -> str | None:
    """The warning of `imgbot run` and `imgbot check` when the bot spawns its bridge
    (backend ray without generation.ray.bridge_socket): the bridge then runs as the bot's
    user, and what the cluster sends (which Ray unpickles there) can read the bot's state
    through /proc and its files, whatever its environment leaves out. None otherwise."""
    ray = settings.generation.ray
    if settings.generation.backend != "ray" or ray.bridge_socket is not None:
        return None
    return (
        "the bridge runs as the bot's user: what the cluster sends is handled by a "
        "process that can read the bot's state; for production use "
        "generation.ray.bridge_socket with systemd/imgbot-bridge.socket"
    )


def catalogue_of(recipe):
    """What the chat side needs to know of the models (families, sizes, batch keys), read
    from the folders' configs on this host; the weights load on the GPU hosts."""
    from generation.families.model_folder import ModelError
    from generation.models.recipe import diffusion_runner
    from generation.postprocess.finishing_runner import FinishingRunner
    from generation.postprocess.upscale import Upscaler

    try:
        return FinishingRunner(diffusion_runner(recipe), Upscaler(recipe.upscaler))
    except ModelError as exc:
        raise SystemExit(str(exc)) from None


def connect(settings: Settings, timeout: float = CONNECT_SECONDS):
    """The link to the cluster and a remote runner per worker slot; ClusterUnavailable saying
    why when the cluster cannot be used now (no cluster at the address, a refused token,
    other versions, no token authentication there), its words after the key to look at."""
    from generation.cluster.link import Link
    from generation.cluster.remote import RemoteRunner

    if (risk := spawned_bridge_risk(settings)) is not None:
        log.warning("%s", risk)  # at every start, as allow_unauthenticated's
    spec = spec_of(settings)
    catalogue = catalogue_of(spec.recipe)
    link = Link(spec)
    try:
        link.start(timeout)
    except ClusterUnavailable as exc:
        raise ClusterUnavailable(f"generation.ray: {exc}") from None
    return link, [RemoteRunner(link, slot, catalogue) for slot in range(spec.workers)]


def survey(settings: Settings, timeout: float = CONNECT_SECONDS) -> str:
    """`imgbot check`'s cluster line: reachable, authenticated, the same versions, and the
    workers that run now (a running bot's), on which hosts, with which models; starts
    nothing. Raises SystemExit (its words say why) when the cluster cannot be used."""
    from dataclasses import replace

    from generation.cluster.link import Link

    link = Link(replace(spec_of(settings), survey=True))
    try:
        link.start(timeout)
    except ClusterUnavailable as exc:
        raise SystemExit(str(exc)) from None
    facts, found = link.facts, link.survey or {}
    versions = facts.get("versions", {})
    auth = (
        "token authentication on"
        if facts.get("auth") == "token"
        else "WITHOUT token authentication (allow_unauthenticated)"
    )
    workers = found.get("workers", [])
    words = [
        f"{link.spec.address}: {facts.get('nodes', '?')} node(s), {auth}, imgbot "
        f"{versions.get('imgbot')}, Ray {versions.get('ray')} and Python "
        f"{versions.get('python')} as here",
        f"{len(workers)} worker(s) running" + (":" if workers else ""),
    ]
    words += [
        f"{info.get('worker')}: {info['error']}"
        if "error" in info
        else f"{info['worker']} on {info.get('device')} with {', '.join(info['models'])}"
        for info in workers
    ]
    resources = ", ".join(f"{key}: {amount:g}" for key, amount in link.spec.resources.items())
    words.append(
        f"room for {found.get('room', 0)} more worker(s) of {{{resources}}} now "
        f"(up to generation.ray.workers: {link.spec.workers})"
    )
    return "; ".join(words)
