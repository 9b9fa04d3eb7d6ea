"""`imgbot check`'s questions to the homeserver: does it answer, and does the login work?
Asked without retries and without waiting out a rate limit: a check answers promptly."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from nio import AsyncClient, AsyncClientConfig, LoginResponse, LogoutResponse, WhoamiResponse

from bot.config import MatrixSettings
from bot.matrix.messages import NETWORK_ERRORS
from bot.matrix.reach import reason
from bot.matrix.session import CREDENTIALS_FILE, LoginFailed, RateLimited, _load_saved, retry_after
from bot.ops.check_lines import Result, fail, ok

# A homeserver that takes longer than this to answer a trivial request is not healthy.
TIMEOUT_SECONDS = 10.0


async def check_homeserver(url: str) -> Result:
    """The client API answers: GET /_matrix/client/versions needs no login."""
    versions = f"{url}/_matrix/client/versions"
    try:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(versions) as response:
                if response.status != 200:
                    hint = (
                        "; if it serves HTTPS on this port, write https://"
                        if response.status == 400 and url.startswith("http://")
                        else ""
                    )
                    return fail(
                        "homeserver",
                        f"{versions} answered HTTP {response.status}; "
                        f"is this the homeserver's client API URL?{hint}",
                    )
                body = await response.json(content_type=None)
    except NETWORK_ERRORS as exc:
        return fail("homeserver", f"cannot reach {url} ({reason(exc, url, TIMEOUT_SECONDS)})")
    except ValueError:
        return fail(
            "homeserver",
            f"{versions} did not answer with JSON; is this the homeserver's client API URL?",
        )
    spec = body.get("versions") if isinstance(body, dict) else None
    if not isinstance(spec, list) or not spec:
        return fail(
            "homeserver",
            f"{versions} does not list Matrix versions; is this the homeserver's client API URL?",
        )
    return ok("homeserver", f"{url} (Matrix client API up to {spec[-1]})")


async def check_login(matrix: MatrixSettings, state_dir: Path) -> Result:
    """The login the bot would use works; mirrors `session.log_in` without changing anything."""
    # No retries: a check should answer promptly, not wait out a backoff or a rate limit.
    config = AsyncClientConfig(
        max_timeouts=0,
        max_limit_exceeded=0,
        request_timeout=TIMEOUT_SECONDS,
        store_sync_tokens=False,
    )
    client = AsyncClient(matrix.homeserver_url, matrix.user_id, config=config)
    try:
        return await _login(client, matrix, state_dir / CREDENTIALS_FILE)
    except LoginFailed as exc:
        return fail("login", str(exc))
    except RateLimited as exc:
        return fail(
            "login",
            f"rate-limited by the homeserver, try again in {exc.seconds} s "
            "(the bot's own start waits it out)",
        )
    except NETWORK_ERRORS as exc:
        url = matrix.homeserver_url
        return fail("login", f"cannot reach {url} ({reason(exc, url, TIMEOUT_SECONDS)})")
    finally:
        await client.close()


async def _login(client: AsyncClient, matrix: MatrixSettings, saved_path: Path) -> Result:
    note = ""
    saved = _load_saved(saved_path, matrix)
    if saved is not None:
        client.access_token = saved["access_token"]
        who = _unless_limited(await client.whoami())
        if isinstance(who, WhoamiResponse):
            return ok(
                "login",
                f"{who.user_id}, device {saved['device_id']}, with the login saved in {saved_path}",
            )
        if matrix.password is None:
            return fail(
                "login",
                f"the access token saved in {saved_path} was refused "
                f"({who.message}) and no password is configured to log in "
                "again",
            )
        note = (
            f"; the access token saved in {saved_path} was refused ({who.message}), so "
            "the bot will log in anew (a new device)"
        )

    if matrix.access_token is not None:
        client.access_token = matrix.access_token.get_secret_value()
        who = _unless_limited(await client.whoami())
        if not isinstance(who, WhoamiResponse):
            return fail("login", f"matrix.access_token was refused: {who.message}")
        if who.user_id != matrix.user_id:
            return fail(
                "login",
                f"matrix.access_token belongs to {who.user_id}, "
                f"not matrix.user_id {matrix.user_id}",
            )
        return ok("login", f"{who.user_id}, device {who.device_id}, with matrix.access_token{note}")
    if matrix.password is None:
        return fail("login", "set matrix.password (or password_file) or matrix.access_token")

    key = matrix.password_key
    response = _unless_limited(
        await client.login(matrix.password.get_secret_value(), device_name="imgbot check")
    )
    if not isinstance(response, LoginResponse):
        return fail("login", f"login as {matrix.user_id} with {key} failed: {response.message}")
    # Logging out deletes the device this login made, so a check leaves no trace.
    out = await client.logout()
    if not isinstance(out, LogoutResponse):
        return ok(
            "login",
            f"{matrix.user_id} with {key}{note}; but logging out "
            f"again failed ({out.message}): delete the device "
            f"{response.device_id} in a Matrix client",
        )
    return ok("login", f"{matrix.user_id} with {key} (test session logged out again){note}")


def _unless_limited(response):
    """`response`, unless the homeserver answered with a rate limit: that raises."""
    seconds = retry_after(response)
    if seconds is not None:
        raise RateLimited(seconds)
    return response
