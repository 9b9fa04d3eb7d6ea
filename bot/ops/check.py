"""`imgbot check`: is this configuration ready to run? One line per check, in order.

Each line says ok or FAIL and why, or WARN: it works but puts the bot at risk (the exit
status stays 0); a check that needs one that failed is skipped. Every
folder and file the start loads is checked by the same code as the start's own check
(generation.models.preflight), so a config `check` passes is one `run` takes. The checks leave
the bot as they found it, so they can run beside a running bot: the saved login is only
read, a password login is logged out again at once (no device is left behind), and
state_dir is only looked at (a missing one is not made; the start makes it). No secret is
ever printed.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bot.cluster import spawned_bridge_risk
from bot.config import ConfigError, DiskSettings, MatrixSettings, Settings, load_settings
from bot.config.private import private_dir
from bot.ops.check_lines import Result, fail, ok, skip, warn
from bot.ops.check_matrix import check_homeserver, check_login
from bot.ops.disk import Level, Statvfs, space
from bot.ops.ray_processes import ray_processes
from bot.matrix.session import cleartext_risk
from bot.text import plural

# Exit codes, also told by `imgbot check --help`.
ALL_OK, FAILED, BAD_CONFIG = 0, 1, 2


def run_checks(config: str | Path, load: bool = False, say: Callable[[str], None] = print) -> int:
    """Check everything, `say` each line as it is known, and return the exit code."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        say(fail("config", str(exc)).line())
        for name in (
            "model",
            "homeserver",
            "login",
            "state_dir",
            "disk",
            "encryption",
            "compliance",
        ):
            say(skip(name, "a valid config").line())
        return BAD_CONFIG
    results = [ok("config", str(Path(config)))]
    say(results[0].line())

    def record(result: Result) -> Result:
        results.append(result)
        say(result.line())
        return result

    models = [record(result) for result in check_parts(settings)]
    if settings.generation.backend == "ray":
        record(check_cluster(settings))
        if (risk := spawned_bridge_risk(settings)) is not None:
            record(warn("bridge", risk))
    ray_user = check_ray_user(settings.generation.backend)
    if ray_user is not None:
        record(ray_user)
    if load:
        if models[0].failed:
            record(skip("load", "a usable default model"))
        else:
            record(check_load(settings))
    server = record(asyncio.run(check_homeserver(settings.matrix.homeserver_url)))
    if (risk := cleartext_risk(settings.matrix.homeserver_url)) is not None:
        record(warn("transport", risk))
    if server.failed:
        record(skip("login", "a reachable homeserver"))
    else:
        record(asyncio.run(check_login(settings.matrix, settings.state_dir)))
    record(check_state_dir(settings.state_dir))
    record(check_disk(settings.state_dir, settings.disk))
    record(check_encryption(settings.matrix, settings.state_dir))
    record(check_compliance(settings))
    return FAILED if any(result.failed for result in results) else ALL_OK


def check_parts(settings: Settings) -> list[Result]:
    """Every folder and file the start loads, the default model first, one line each."""
    from generation.models.preflight import check_parts as parts

    generation = settings.generation
    if generation.model is None:
        return [
            fail(
                "model",
                "generation.model is not set: point it at a local diffusers "
                "folder (or make one with `imgbot make-test-model DIR`)",
            )
        ]
    return [
        ok(part.name, part.detail) if part.ok else fail(part.name, part.message)
        for part in parts(
            generation.catalogue_keys,
            vae=generation.vae,
            fast_decoder=generation.fast_decoder,
            upscaler=generation.upscaler,
            edit_model=generation.edit_model,
            loras=generation.loras,
            quantize=generation.quantize,
            devices=generation.devices or [generation.device],
        )
    ]


def check_cluster(settings: Settings) -> Result:
    """backend ray: the cluster reachable with the token, its versions the bot's, and the
    workers that run now (bot.cluster.survey)."""
    from bot.cluster import survey

    try:
        return ok("cluster", survey(settings))
    except SystemExit as exc:
        return fail("cluster", f"generation.ray: {exc}")


def check_ray_user(backend: str) -> Result | None:
    """A Ray node on this host that runs as the bot's user (the user `check` runs as, as
    README says to run it) is warned about: the code the cluster sends it could read the
    bot's state and credentials through /proc and stop the bot. A warning, not a failure:
    the bot works. With backend local, a line only when there is such a node."""
    uid = os.geteuid()
    processes = ray_processes(uid)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid {uid}"
    if not processes:
        return (
            ok("ray user", f"no Ray node runs as {user} on this host") if backend == "ray" else None
        )
    pids = ", ".join(f"{process.pid} ({process.role})" for process in processes)
    return warn(
        "ray user",
        f"Ray runs as {user}, the bot's user, on this host (pids {pids}): "
        "a Ray node runs whatever code the cluster sends it, and as the "
        "bot's user that code can read the bot's state and credentials "
        "and stop the bot. Run Ray as a user of its own, imgbot-ray "
        "(systemd/imgbot-ray-*.service), and the bot on a host that is "
        "not a Ray worker",
    )


def check_load(settings: Settings) -> Result:
    """Really load the default model, as `imgbot run` would (slow for a real model)."""
    from generation.models.engine import Engine

    generation = settings.generation
    started = time.perf_counter()
    engine = None
    try:
        engine = Engine(
            generation.model,
            generation.device,
            vae=generation.vae,
            fast_decoder=generation.fast_decoder,
            quantize=generation.quantize,
            offload=generation.offload,
        )
        engine.load()
    except Exception as exc:  # noqa: BLE001 - torch, diffusers and the driver raise anything
        return fail("load", f"{generation.model}: {type(exc).__name__}: {exc}")
    finally:
        if engine is not None:
            engine.unload()
    return ok(
        "load",
        f"{engine.name} loaded on {engine.placement.device} in "
        f"{time.perf_counter() - started:.1f} s",
    )


def check_state_dir(state_dir: Path) -> Result:
    """The bot keeps its login, sync token and usage log here: it must be writable by the
    bot, and by nobody else. A missing folder is not made: the bot's start makes it."""
    path = state_dir.expanduser().resolve()
    if not path.exists():
        parent = next(p for p in path.parents if p.exists())
        if not parent.is_dir():
            return fail("state_dir", f"{path} cannot be made: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            return fail(
                "state_dir",
                f"{path} does not exist, and it cannot be made: {parent} is not writable",
            )
        return ok(
            "state_dir", f"{path} does not exist yet; the bot's first start makes it (mode 700)"
        )
    if not path.is_dir():
        return fail("state_dir", f"{path} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".imgbot-check-") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:
        return fail("state_dir", f"cannot write in {path}: {exc.strerror or exc}")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return ok("state_dir", f"{path} is writable, but other users can open it: chmod 700 {path}")
    return ok("state_dir", f"{path} is writable")


def check_disk(state_dir: Path, settings: DiskSettings, statvfs: Statvfs = os.statvfs) -> Result:
    """The free space of state_dir's filesystem (of the folder that will hold it, while it
    does not exist yet), against disk.warn_free_mib and disk.full_free_mib."""
    path = state_dir.expanduser().resolve()
    where = next((p for p in (path, *path.parents) if p.exists()), path)
    try:
        found = space(statvfs(where), settings.warn_free_mib, settings.full_free_mib)
    except OSError as exc:
        return fail("disk", f"cannot read the free space of {where}: {exc.strerror or exc}")
    if found.level is Level.FULL:
        return fail(
            "disk",
            f"{found.reason}: the disk counts as full and the bot cannot "
            "keep its state there; free some space",
        )
    if found.level is Level.LOW:
        return warn(
            "disk",
            f"{found.reason}: free some space; below "
            f"{settings.full_free_mib} MiB (disk.full_free_mib) it counts as "
            "full",
        )
    return ok(
        "disk",
        f"{found.reason} (a warning below {settings.warn_free_mib} MiB, full "
        f"below {settings.full_free_mib} MiB)",
    )


def check_encryption(matrix: MatrixSettings, state_dir: Path) -> Result:
    """What the bot does in encrypted rooms, and the identity its device is signed by."""
    from nio.crypto import ENCRYPTION_ENABLED

    from bot.matrix.cross_signing import SEEDS_FILE, CrossSigningFailed, Identity

    if not matrix.encryption:
        return ok("encryption", "off (matrix.encryption): the bot leaves encrypted rooms")
    if not ENCRYPTION_ENABLED:
        return fail(
            "encryption",
            "matrix-nio's encryption support is missing: pip install 'matrix-nio[e2e]'",
        )
    if not matrix.cross_signing:
        return ok(
            "encryption",
            "on, without cross-signing (matrix.cross_signing): clients "
            "that exclude insecure devices will not talk to the bot",
        )
    path = state_dir.expanduser() / SEEDS_FILE
    try:
        identity = Identity.load(path)
    except CrossSigningFailed as exc:
        return fail("encryption", str(exc))
    if identity is None:
        return ok(
            "encryption",
            f"on; the cross-signing identity is made at the first start and kept in {path}",
        )
    return ok("encryption", f"on; cross-signing master key {identity.master.public} ({path})")


def check_compliance(settings: Settings) -> Result:
    """Everything `compliance:` asks for, loaded as the bot's start loads it: the signature
    tried (with the time-stamp authority, when one is set), the reference index brought up
    to date in state_dir (as the start would), the detector loaded."""
    from generation.compliance import Compliance

    from bot import version

    if settings.compliance.references is not None:
        # Brought up to date as the start would, in state_dir/references.json: the one
        # thing a check may write, in a state_dir made as the bot makes it.
        private_dir(settings.state_dir.expanduser())
    try:
        compliance = Compliance.from_settings(settings.compliance, settings.state_dir, version())
    except Exception as exc:
        return fail("compliance", str(exc) or type(exc).__name__)
    said = ["XMP marker"]
    if compliance.signer is not None:
        tsa = settings.compliance.c2pa.tsa_url
        said.append("C2PA signed" + (f", time-stamped by {tsa}" if tsa else ""))
    if compliance.watermark:
        said.append("watermark")
    if compliance.references is not None:
        index = compliance.references
        said.append(
            f"copy check against {index.usable} of "
            f"{plural(len(index.listing), 'reference picture')}"
        )
    if compliance.logos is not None:
        said.append(plural(len(compliance.logos.names), "logo"))
    if compliance.embedding is not None:
        said.append("descriptor model")
    if compliance.nsfw != "off":
        said.append(f"nsfw {compliance.nsfw} ({compliance.detector_name})")
    if compliance.blocklist:
        said.append("prompt blocklist")
    return ok("compliance", ", ".join(said))
