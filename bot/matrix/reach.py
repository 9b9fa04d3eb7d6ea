"""Why the homeserver could not be reached, in words an operator can act on."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp


def reason(exc: BaseException, url: str, timeout: float | None = None) -> str:
    """`exc` as "Type: text", with a hint when the URL's scheme looks wrong for its port:
    an https URL on a plain-HTTP port waits for a TLS answer that never comes, and an
    http URL on a TLS port is hung up on or refused."""
    text = str(exc)
    if not text and isinstance(exc, asyncio.TimeoutError) and timeout is not None:
        text = f"no answer within {timeout:g} s"
    said = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return said + _scheme_hint(exc, url)


def _scheme_hint(exc: BaseException, url: str) -> str:
    if url.startswith("https://") and isinstance(
        exc, (asyncio.TimeoutError, ssl.SSLError, aiohttp.ClientSSLError)
    ):
        return (
            f"; if the homeserver serves plain HTTP on this port, write "
            f"http://{url[len('https://') :]}"
        )
    if url.startswith("http://") and isinstance(
        exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError)
    ):
        return (
            f"; if the homeserver serves HTTPS on this port, write https://{url[len('http://') :]}"
        )
    return ""
