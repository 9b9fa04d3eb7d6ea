"""The bot's cross-signing identity, which matrix-nio cannot make (matrix-nio issue #229).

Today's clients (Element, and matrix-js-sdk with "exclude insecure devices") share no room
keys with, and trust no messages from, a device its owner has not cross-signed. So before
its first sync the bot makes its own master, self-signing and user-signing Ed25519 keys,
uploads them, and signs its device with the self-signing key.

The three private seeds are kept in `state_dir` (mode 0600): a restart changes nothing, and
a new device (a lost crypto store) is signed by the same identity, so people see no
"identity reset" warning. Everything is signed over canonical JSON, and every key and
signature is *unpadded* base64: padded signatures pass Synapse's and Python's checks but
make the Rust SDK treat the device as unsigned, silently.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa
from nio import AsyncClient

from bot.config import MatrixSettings
from bot.matrix.messages import HomeserverError, bearer
from bot.config.private import warn_if_shared, write_private

log = logging.getLogger(__name__)

SEEDS_FILE = "cross-signing.json"
USAGES = ("master", "self_signing", "user_signing")


class CrossSigningFailed(HomeserverError):
    """The identity could not be set up; the message says what to change. `retry`: the
    homeserver failed, and a later start may succeed."""

    def __init__(self, message: str, retry: bool = False):
        super().__init__(message)
        self.retry = retry


def unpadded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def from_unpadded(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def canonical_json(value: Any) -> bytes:
    """The spec's canonical JSON: sorted keys, no spaces, UTF-8 (not ASCII escapes)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(
        "utf-8"
    )


def signable(value: dict[str, Any]) -> dict[str, Any]:
    """What a signature covers: the object without `signatures` and `unsigned`."""
    return {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}


@dataclass(frozen=True)
class SigningKey:
    seed: bytes  # the 32-byte Ed25519 private key

    @property
    def public(self) -> str:
        key = ECC.construct(curve="Ed25519", seed=self.seed)
        return unpadded(key.public_key().export_key(format="raw"))

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.public}"

    def sign(self, value: dict[str, Any]) -> str:
        signer = eddsa.new(ECC.construct(curve="Ed25519", seed=self.seed), "rfc8032")
        return unpadded(signer.sign(canonical_json(signable(value))))


@dataclass(frozen=True)
class Identity:
    master: SigningKey
    self_signing: SigningKey
    user_signing: SigningKey

    @classmethod
    def create(cls) -> Identity:
        return cls(*(SigningKey(secrets.token_bytes(32)) for _ in USAGES))

    @classmethod
    def load(cls, path: Path) -> Identity | None:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CrossSigningFailed(f"{path} is unreadable ({exc})") from exc
        warn_if_shared(path, "the bot's cross-signing private keys")
        seeds = []
        for usage in USAGES:
            try:
                seed = from_unpadded(saved[usage])
            except (KeyError, TypeError, ValueError):
                seed = b""
            if len(seed) != 32:
                # Never guessed at: a wrong key would be uploaded over the real identity.
                raise CrossSigningFailed(
                    f"{path} is damaged (no valid {usage} key); restore it from a backup"
                )
            seeds.append(SigningKey(seed))
        return cls(*seeds)

    def save(self, path: Path) -> None:
        write_private(
            path, json.dumps({usage: unpadded(getattr(self, usage).seed) for usage in USAGES})
        )

    def public_keys(self, user_id: str) -> dict[str, dict[str, Any]]:
        """The body of /keys/device_signing/upload: the master key, and the two others
        signed by it."""
        body = {}
        for usage in USAGES:
            key = getattr(self, usage)
            public = {"user_id": user_id, "usage": [usage], "keys": {key.key_id: key.public}}
            if usage != "master":
                public["signatures"] = {user_id: {self.master.key_id: self.master.sign(public)}}
            body[f"{usage}_key"] = public
        return body


async def bootstrap(client: AsyncClient, settings: MatrixSettings, state_dir: Path) -> None:
    """Make sure the homeserver has our identity and our device is signed by it.

    The device keys must be on the homeserver already (nio's keys_upload)."""
    path = state_dir / SEEDS_FILE
    identity = Identity.load(path)
    published = await _query_own_keys(client)
    master_on_server = _only_key(published.get("master_keys", {}).get(client.user_id))
    if identity is None:
        if master_on_server:
            log.warning(
                "the homeserver has a cross-signing identity for %s but %s is "
                "missing: making a new identity; people will be told the bot's "
                "identity changed, and may verify it again",
                client.user_id,
                path,
            )
        identity = Identity.create()
        identity.save(path)  # before the upload: an identity that is used is never lost
    if master_on_server != identity.master.public:
        await _upload_identity(client, settings, identity, replacing=bool(master_on_server))
        log.log(
            logging.WARNING if master_on_server else logging.INFO,
            "uploaded the cross-signing identity of %s (master key %s)%s",
            client.user_id,
            identity.master.public,
            f", replacing {master_on_server}" if master_on_server else "",
        )
        published = await _query_own_keys(client)
    device = published.get("device_keys", {}).get(client.user_id, {}).get(client.device_id)
    if device is None:
        raise CrossSigningFailed(
            f"the homeserver has no keys for this device ({client.device_id}) to sign"
        )
    if identity.self_signing.key_id in device.get("signatures", {}).get(client.user_id, {}):
        return
    signed = signable(device)
    signed["signatures"] = {
        client.user_id: {identity.self_signing.key_id: identity.self_signing.sign(device)}
    }
    response = await _post(
        client,
        "/_matrix/client/v3/keys/signatures/upload",
        {client.user_id: {client.device_id: signed}},
    )
    failures = response.get("failures") or {}
    if failures:
        raise CrossSigningFailed(f"the homeserver refused the device's signature: {failures}")
    log.info("signed device %s with the cross-signing identity", client.device_id)


async def _query_own_keys(client: AsyncClient) -> dict[str, Any]:
    return await _post(
        client, "/_matrix/client/v3/keys/query", {"device_keys": {client.user_id: []}}
    )


def _only_key(cross_signing_key: dict[str, Any] | None) -> str | None:
    keys = list((cross_signing_key or {}).get("keys", {}).values())
    return keys[0] if len(keys) == 1 else None


async def _upload_identity(
    client: AsyncClient, settings: MatrixSettings, identity: Identity, replacing: bool
) -> None:
    """Upload the keys, completing user-interactive auth with the password when asked
    (Synapse asks when keys are replaced, not for the first upload)."""
    body = identity.public_keys(client.user_id)
    path = "/_matrix/client/v3/keys/device_signing/upload"
    status, answer = await _request(client, path, body)
    if status == 401 and "flows" in answer:
        if settings.password is None:
            raise CrossSigningFailed(
                "the homeserver asks for the password to "
                f"{'replace' if replacing else 'upload'} the bot's cross-signing keys; "
                "set matrix.password (or password_file)"
            )
        body["auth"] = {
            "type": "m.login.password",
            "session": answer.get("session"),
            "identifier": {"type": "m.id.user", "user": client.user_id},
            "password": settings.password.get_secret_value(),
        }
        status, answer = await _request(client, path, body)
    if status != 200:
        raise CrossSigningFailed(
            f"the homeserver refused the cross-signing keys "
            f"({status}: {answer.get('error', answer)})",
            retry=status >= 500 or status == 429,
        )


async def _post(client: AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = await _request(client, path, body)
    if status != 200:
        raise CrossSigningFailed(
            f"{path} failed ({status}: {answer.get('error', answer)})",
            retry=status >= 500 or status == 429,
        )
    return answer


async def _request(
    client: AsyncClient, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    response = await client.send(
        "POST",
        path,
        json.dumps(body),
        headers={**bearer(client), "Content-Type": "application/json"},
    )
    try:
        try:
            answer = await response.json(content_type=None)
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}
    finally:
        response.release()
