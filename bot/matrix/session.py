"""Logging in once and keeping the device: the token and device ID live in state_dir.

A bot that logs in anew at every start leaves a trail of devices behind it (and, once
encryption is on, breaks every room key). So the first start logs in with the password and
later starts restore that login.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import math
from pathlib import Path
from urllib.parse import urlsplit

from nio import AsyncClient, ErrorResponse, LoginResponse, WhoamiResponse

from bot.config import MatrixSettings
from bot.matrix.encryption import has_store
from bot.matrix.messages import HomeserverError
from bot.config.private import warn_if_shared, write_private

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"


class LoginFailed(HomeserverError):
    """The bot cannot log in; the message says why and what to change."""


class RateLimited(HomeserverError):
    """The homeserver said to wait `seconds` before asking again."""

    def __init__(self, seconds: int):
        super().__init__(f"rate-limited by the homeserver for {seconds} s")
        self.seconds = seconds


def retry_after(response) -> int | None:
    """Whole seconds to wait when `response` is a rate limit (M_LIMIT_EXCEEDED), else None."""
    if not isinstance(response, ErrorResponse) or response.status_code not in (
        "M_LIMIT_EXCEEDED",
        429,
    ):
        return None
    return max(1, math.ceil((response.retry_after_ms or 5000) / 1000))


async def _password_login(client: AsyncClient, settings: MatrixSettings):
    """Log in with the password; a rate limit is waited out here, said at INFO with the
    time, instead of inside nio (which only warns "Got 429 response")."""
    patient = client.config
    client.config = dataclasses.replace(patient, max_limit_exceeded=0)
    try:
        while True:
            response = await client.login(
                settings.password.get_secret_value(), device_name=settings.device_name
            )
            seconds = retry_after(response)
            if seconds is None:
                return response
            log.info("the homeserver rate-limits logins: logging in again in %d s", seconds)
            await asyncio.sleep(seconds)
    finally:
        client.config = patient


def _load_saved(path: Path, settings: MatrixSettings) -> dict | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LoginFailed(f"{path} is unreadable ({exc}); remove it to log in anew") from exc
    warn_if_shared(path, "the bot's access token")
    if (
        saved.get("user_id") != settings.user_id
        or saved.get("homeserver") != settings.homeserver_url
    ):
        log.warning("saved login in %s is for another account or server; logging in anew", path)
        return None
    return saved


def cleartext_risk(homeserver_url: str) -> str | None:
    """Why plain http to this homeserver exposes the bot, or None when it does not: https,
    or a loopback address (127.0.0.0/8, ::1, localhost), which never leaves the machine."""
    parts = urlsplit(homeserver_url)
    if parts.scheme != "http":
        return None
    host = parts.hostname or ""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a host name other than localhost: it may resolve anywhere
    return (
        f"matrix.homeserver_url is plain http to {host}, which is not this machine: the "
        "password, the access token and every message and picture cross the network "
        "unencrypted; use https://"
    )


async def log_in(client: AsyncClient, settings: MatrixSettings, state_dir: Path) -> None:
    """Restore the saved login, or log in for the first time and save it."""
    if (risk := cleartext_risk(settings.homeserver_url)) is not None:
        log.warning("%s", risk)  # said, not refused: a trusted network may be meant
    path = state_dir / CREDENTIALS_FILE
    saved = _load_saved(path, settings)
    if (
        saved is not None
        and settings.encryption
        and not has_store(state_dir, saved["user_id"], saved["device_id"])
    ):
        # Its Olm keys are gone: the same device with new keys would look like an attack
        # to other clients. A new device is signed by the same cross-signing identity.
        if settings.password is None:
            raise LoginFailed(
                f"the encryption store of device {saved['device_id']} is "
                "missing; set matrix.password (the bot logs in as a new "
                "device), or a new matrix.access_token and remove "
                f"{path}"
            )
        log.warning(
            "the encryption store of device %s is missing; logging in as a new device",
            saved["device_id"],
        )
        saved = None
    if saved is not None:
        client.restore_login(saved["user_id"], saved["device_id"], saved["access_token"])
        check = await client.whoami()
        if isinstance(check, WhoamiResponse):
            log.info("restored the login of %s, device %s", saved["user_id"], saved["device_id"])
            return
        if settings.password is None:
            raise LoginFailed(
                f"the saved access token was refused ({check.message}) and no "
                "password is configured to log in again"
            )
        log.warning("the saved access token was refused (%s); logging in anew", check.message)

    if settings.access_token is not None:
        client.access_token = settings.access_token.get_secret_value()
        who = await client.whoami()
        if not isinstance(who, WhoamiResponse):
            raise LoginFailed(f"matrix.access_token was refused by the homeserver: {who.message}")
        if who.user_id != settings.user_id:
            raise LoginFailed(
                f"matrix.access_token belongs to {who.user_id}, "
                f"not matrix.user_id {settings.user_id}"
            )
        client.restore_login(who.user_id, who.device_id, client.access_token)
    elif settings.password is not None:
        response = await _password_login(client, settings)
        if not isinstance(response, LoginResponse):
            raise LoginFailed(
                f"login as {settings.user_id} with {settings.password_key} "
                f"failed: {response.message}"
            )
        log.info("logged in as %s, new device %s", response.user_id, response.device_id)
    else:
        raise LoginFailed("set matrix.password (or password_file) or matrix.access_token")

    write_private(
        path,
        json.dumps(
            {
                "homeserver": settings.homeserver_url,
                "user_id": client.user_id,
                "device_id": client.device_id,
                "access_token": client.access_token,
            }
        ),
    )
