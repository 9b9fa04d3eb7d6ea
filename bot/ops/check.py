"""`imgbot check`: is this configuration ready to run? One line per check, in order.

Each line says ok or FAIL and why; a check that needs one that failed is skipped. The checks
leave the bot as they found it, so they can run beside a running bot: the saved login is only
read, a password login is logged out again at once (no device is left behind), and the state
folder gets one test file, removed again (the folder itself is made if missing, as the bot
would make it). No secret is ever printed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from nio import AsyncClient, AsyncClientConfig, LoginResponse, LogoutResponse, WhoamiResponse

from bot.config import ConfigError, MatrixSettings, Settings, load_settings
from bot.matrix.messages import NETWORK_ERRORS
from bot.matrix.session import CREDENTIALS_FILE, LoginFailed, _load_saved
from bot.text import plural

# A homeserver that takes longer than this to answer a trivial request is not healthy.
TIMEOUT_SECONDS = 10.0

# Exit codes, also told by `imgbot check --help`.
ALL_OK, FAILED, BAD_CONFIG = 0, 1, 2


@dataclass(frozen=True)
class Result:
    status: str  # "ok", "FAIL" or "skip"
    name: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        # A multi-line reason (several wrong keys) stays readable under its line.
        return f"{self.status:<5} {self.name}: {self.detail}".replace("\n", "\n      ")


def ok(name: str, detail: str) -> Result:
    return Result("ok", name, detail)


def fail(name: str, detail: str) -> Result:
    return Result("FAIL", name, detail)


def skip(name: str, needs: str) -> Result:
    return Result("skip", name, f"needs {needs}")


def run_checks(config: str | Path, load: bool = False,
               say: Callable[[str], None] = print) -> int:
    """Check everything, `say` each line as it is known, and return the exit code."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        say(fail("config", str(exc)).line())
        for name in ("model", "homeserver", "login", "state_dir", "encryption", "compliance"):
            say(skip(name, "a valid config").line())
        return BAD_CONFIG
    results = [ok("config", str(Path(config)))]
    say(results[0].line())

    def record(result: Result) -> Result:
        results.append(result)
        say(result.line())
        return result

    models = [record(result) for result in check_models(settings)]
    if load:
        if models[0].failed:
            record(skip("load", "a usable default model"))
        else:
            record(check_load(settings))
    server = record(asyncio.run(check_homeserver(settings.matrix.homeserver_url)))
    if server.failed:
        record(skip("login", "a reachable homeserver"))
    else:
        record(asyncio.run(check_login(settings.matrix, settings.state_dir)))
    record(check_state_dir(settings.state_dir))
    record(check_encryption(settings.matrix, settings.state_dir))
    record(check_compliance(settings))
    return FAILED if any(result.failed for result in results) else ALL_OK


def check_models(settings: Settings) -> list[Result]:
    """Every configured folder, the default first: a diffusers folder of a known family."""
    from generation.model_folder import ModelError, inspect_model

    generation = settings.generation
    if generation.model is None:
        return [fail("model", "generation.model is not set: point it at a local diffusers "
                              "folder (or make one with `imgbot make-test-model DIR`)")]
    results = []
    for name, folder in generation.catalogue.items():
        key = f"generation.models.{name}" if name in generation.models else "generation.model"
        try:
            family = inspect_model(folder)
        except ModelError as exc:
            results.append(fail(f"model {name}", f"{key}: {exc}"))
        else:
            results.append(ok(f"model {name}", f"{folder} ({family})"))
    return results


def check_load(settings: Settings) -> Result:
    """Really load the default model, as `imgbot run` would (slow for a real model)."""
    from generation.engine import Engine

    generation = settings.generation
    started = time.perf_counter()
    engine = None
    try:
        engine = Engine(generation.model, generation.device)
        engine.load()
    except Exception as exc:  # noqa: BLE001 - torch, diffusers and the driver raise anything
        return fail("load", f"{generation.model}: {type(exc).__name__}: {exc}")
    finally:
        if engine is not None:
            engine.unload()
    return ok("load", f"{engine.name} loaded on {engine.placement.device} in "
                      f"{time.perf_counter() - started:.1f} s")


async def check_homeserver(url: str) -> Result:
    """The client API answers: GET /_matrix/client/versions needs no login."""
    versions = f"{url}/_matrix/client/versions"
    try:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(versions) as response:
                if response.status != 200:
                    return fail("homeserver", f"{versions} answered HTTP {response.status}; "
                                              "is this the homeserver's client API URL?")
                body = await response.json(content_type=None)
    except NETWORK_ERRORS as exc:
        return fail("homeserver", f"cannot reach {url} ({_reason(exc)})")
    except ValueError:
        return fail("homeserver", f"{versions} did not answer with JSON; "
                                  "is this the homeserver's client API URL?")
    spec = body.get("versions") if isinstance(body, dict) else None
    if not isinstance(spec, list) or not spec:
        return fail("homeserver", f"{versions} does not list Matrix versions; "
                                  "is this the homeserver's client API URL?")
    return ok("homeserver", f"{url} (Matrix client API up to {spec[-1]})")


async def check_login(matrix: MatrixSettings, state_dir: Path) -> Result:
    """The login the bot would use works; mirrors `session.log_in` without changing anything."""
    # No retries: a check should answer promptly, not wait out a backoff.
    config = AsyncClientConfig(max_timeouts=0, request_timeout=TIMEOUT_SECONDS,
                               store_sync_tokens=False)
    client = AsyncClient(matrix.homeserver_url, matrix.user_id, config=config)
    try:
        return await _login(client, matrix, state_dir / CREDENTIALS_FILE)
    except LoginFailed as exc:
        return fail("login", str(exc))
    except NETWORK_ERRORS as exc:
        return fail("login", f"cannot reach {matrix.homeserver_url} ({_reason(exc)})")
    finally:
        await client.close()


async def _login(client: AsyncClient, matrix: MatrixSettings, saved_path: Path) -> Result:
    note = ""
    saved = _load_saved(saved_path, matrix)
    if saved is not None:
        client.access_token = saved["access_token"]
        who = await client.whoami()
        if isinstance(who, WhoamiResponse):
            return ok("login", f"{who.user_id}, device {saved['device_id']}, with the login "
                               f"saved in {saved_path}")
        if matrix.password is None:
            return fail("login", f"the access token saved in {saved_path} was refused "
                                 f"({who.message}) and no password is configured to log in "
                                 "again")
        note = (f"; the access token saved in {saved_path} was refused ({who.message}), so "
                "the bot will log in anew (a new device)")

    if matrix.access_token is not None:
        client.access_token = matrix.access_token.get_secret_value()
        who = await client.whoami()
        if not isinstance(who, WhoamiResponse):
            return fail("login", f"matrix.access_token was refused: {who.message}")
        if who.user_id != matrix.user_id:
            return fail("login", f"matrix.access_token belongs to {who.user_id}, "
                                 f"not matrix.user_id {matrix.user_id}")
        return ok("login", f"{who.user_id}, device {who.device_id}, with "
                           f"matrix.access_token{note}")
    if matrix.password is None:
        return fail("login", "set matrix.password (or password_file) or matrix.access_token")

    response = await client.login(matrix.password.get_secret_value(),
                                  device_name="imgbot check")
    if not isinstance(response, LoginResponse):
        return fail("login", f"login as {matrix.user_id} with matrix.password failed: "
                             f"{response.message}")
    # Logging out deletes the device this login made, so a check leaves no trace.
    out = await client.logout()
    if not isinstance(out, LogoutResponse):
        return ok("login", f"{matrix.user_id} with matrix.password{note}; but logging out "
                           f"again failed ({out.message}): delete the device "
                           f"{response.device_id} in a Matrix client")
    return ok("login", f"{matrix.user_id} with matrix.password (test session logged out "
                       f"again){note}")


def check_state_dir(state_dir: Path) -> Result:
    """The bot keeps its login, sync token and usage log here: it must be writable."""
    path = state_dir.expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)  # as the bot does at its first start
        with tempfile.NamedTemporaryFile(dir=path, prefix=".imgbot-check-") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:
        return fail("state_dir", f"cannot write in {path}: {exc.strerror or exc}")
    return ok("state_dir", f"{path} is writable")


def check_encryption(matrix: MatrixSettings, state_dir: Path) -> Result:
    """What the bot does in encrypted rooms, and the identity its device is signed by."""
    from nio.crypto import ENCRYPTION_ENABLED

    from bot.matrix.cross_signing import SEEDS_FILE, CrossSigningFailed, Identity

    if not matrix.encryption:
        return ok("encryption", "off (matrix.encryption): the bot leaves encrypted rooms")
    if not ENCRYPTION_ENABLED:
        return fail("encryption", "matrix-nio's encryption support is missing: "
                                  "pip install 'matrix-nio[e2e]'")
    if not matrix.cross_signing:
        return ok("encryption", "on, without cross-signing (matrix.cross_signing): clients "
                                "that exclude insecure devices will not talk to the bot")
    path = state_dir.expanduser() / SEEDS_FILE
    try:
        identity = Identity.load(path)
    except CrossSigningFailed as exc:
        return fail("encryption", str(exc))
    if identity is None:
        return ok("encryption", f"on; the cross-signing identity is made at the first start "
                                f"and kept in {path}")
    return ok("encryption", f"on; cross-signing master key {identity.master.public} "
                            f"({path})")


def check_compliance(settings: Settings) -> Result:
    """Everything `compliance:` asks for, loaded as the bot's start loads it: the signature
    tried (with the time-stamp authority, when one is set), the reference index brought up
    to date in state_dir (as the start would), the detector loaded."""
    from generation.compliance import Compliance

    from bot import version

    try:
        compliance = Compliance.from_settings(settings.compliance, settings.state_dir,
                                              version())
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
        said.append(f"copy check against {index.usable} of "
                    f"{plural(len(index.listing), 'reference picture')}")
    if compliance.logos is not None:
        said.append(plural(len(compliance.logos.names), "logo"))
    if compliance.embedding is not None:
        said.append("descriptor model")
    if compliance.nsfw != "off":
        said.append(f"nsfw {compliance.nsfw} ({compliance.detector_name})")
    if compliance.blocklist:
        said.append("prompt blocklist")
    return ok("compliance", ", ".join(said))


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if not text and isinstance(exc, asyncio.TimeoutError):
        text = f"no answer within {TIMEOUT_SECONDS:g} s"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
