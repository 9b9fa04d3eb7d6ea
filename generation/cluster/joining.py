"""Joining a Ray cluster from the bridge: connect, ask the cluster's own word on its
versions and its token authentication, and (for `imgbot check`) survey the workers that run
now. Runs in the bridge process only; what the cluster answers is checked (`messages`)
before it is used or told to the bot."""

from __future__ import annotations

import logging
import os

from ..errors import ClusterUnavailable
from . import messages
from .spec import ClusterSpec, mismatch, versions

FACTS = messages.Fields({"versions": messages.VERSIONS, "auth": str})  # of _node_facts
ACTOR_PREFIX = "imgbot-worker-"  # the workers' names in the namespace, for `imgbot check`
CONNECT_TIMEOUT = 30.0  # for the first questions to a cluster just connected to


def connect(spec: ClusterSpec) -> dict:
    """ray.init, then the cluster's own word on its versions and its authentication."""
    import ray

    try:
        ray.init(
            address=spec.address,
            namespace=spec.namespace,
            logging_level=logging.ERROR,
            log_to_driver=False,
            configure_logging=False,
        )
    except ConnectionError as exc:
        raise ClusterUnavailable(f"no Ray cluster answered at {spec.address} ({exc})") from None
    except RuntimeError as exc:  # Ray's own version check, among others
        raise ClusterUnavailable(
            f"the Ray cluster at {spec.address} refused the bot: {exc}"
        ) from None
    probe = ray.remote(num_cpus=0)(_node_facts)
    try:
        theirs = messages.check(
            ray.get(probe.remote(), timeout=CONNECT_TIMEOUT), FACTS, "the cluster's facts"
        )
    except messages.Invalid:
        raise ClusterUnavailable(
            f"the Ray cluster at {spec.address} answered what is not its "
            "versions and authentication"
        ) from None
    except ray.exceptions.GetTimeoutError:
        raise ClusterUnavailable(
            f"the Ray cluster at {spec.address} ran nothing within {CONNECT_TIMEOUT:.0f} s"
        ) from None
    except ray.exceptions.RayError as exc:
        raise ClusterUnavailable(
            f"the Ray cluster at {spec.address} could not run imgbot's code; is "
            f"imgbot installed on its nodes? ({last_line(exc)})"
        ) from None
    different = mismatch(spec.versions, theirs["versions"], f"the cluster at {spec.address}")
    if different:
        raise ClusterUnavailable(different)
    if theirs["auth"] != "token" and not spec.allow_unauthenticated:
        raise ClusterUnavailable(
            f"the Ray cluster at {spec.address} runs without token authentication "
            "(RAY_AUTH_MODE=token on every node): anyone who reaches its port can run code "
            'on it, so the bot will not use it; turn it on (README "More than one GPU '
            'server"), or set generation.ray.allow_unauthenticated: true'
        )
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    return {"nodes": len(nodes), "auth": theirs["auth"][:100], "versions": theirs["versions"]}


def survey(spec: ClusterSpec) -> dict:
    """For `imgbot check`: the workers that run now (a running bot's), each one's ready()
    checked (NOT_VALID in place of what is not a valid answer), and how many more the
    cluster's free resources would place."""
    import ray

    workers = []
    for name in sorted(ray.util.list_named_actors()):
        if not name.startswith(ACTOR_PREFIX):
            continue
        try:
            info = messages.ready_answer(
                ray.get(ray.get_actor(name).ready.remote(), timeout=CONNECT_TIMEOUT)
            )
        except messages.Invalid as exc:
            logging.getLogger(__name__).error("the worker %s answered %s", name, exc)
            info = {"worker": name[:200], "error": messages.NOT_VALID}
        except Exception as exc:  # gone meanwhile, or busy loading
            info = {"worker": name[:200], "error": last_line(exc)[: messages.MAX_TEXT]}
        workers.append(info)
    free = ray.available_resources()
    room = min(int(free.get(key, 0) // amount) for key, amount in spec.resources.items())
    return {"workers": workers, "room": room}


def _node_facts() -> dict:
    """Run on the cluster: what a node runs, and whether its Ray asks for a token."""
    return {"versions": versions(), "auth": os.environ.get("RAY_AUTH_MODE", "disabled")}


def last_line(exc: BaseException) -> str:
    """An exception's last non-empty line: Ray puts the cause there, after its traceback."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
