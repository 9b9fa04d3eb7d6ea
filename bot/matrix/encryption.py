"""End-to-end encryption around the sync: the crypto store, the key upkeep nio's own
`sync_forever` would do (we run our own sync loop), and the messages that arrive before
their room key.

nio decrypts what it can as a sync arrives; what it cannot stays a MegolmEvent. Its room
key is often only a moment behind (the sender's to-device message), so such a message is
asked for (its key requested from the sender's device and from our own) and tried again
after each sync; if it still cannot be read after `KEY_WAIT` seconds, its sender is told
once per megolm session, since the bot cannot know whether it was a command. Only the
messages of people who may use the bot are waited for: anyone else's would be ignored once
read, and must not make the bot send key requests on their behalf.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nio import AsyncClient, MegolmEvent
from nio.crypto import ENCRYPTION_ENABLED

from bot.matrix.messages import NETWORK_ERRORS
from bot.config.private import private_dir, private_file, warn_if_shared

log = logging.getLogger(__name__)

STORE_DIR = "crypto"
KEY_WAIT = 10.0
UNDECRYPTABLE = (
    "I could not decrypt your message (my device did not get its room key), "
    "so if it was a command it was not run. Send it again; if this keeps "
    "happening, make sure your client does not exclude this bot's device."
)


def store_path(state_dir: Path) -> Path:
    """nio's crypto store (Olm account, sessions, device lists): one file per device, in a
    folder only the bot's user may enter."""
    path = private_dir(private_dir(state_dir) / STORE_DIR)
    warn_if_shared(path, "the device's encryption keys")
    return path


if ENCRYPTION_ENABLED:
    from nio.store import DefaultStore

    class PrivateStore(DefaultStore):
        """nio's store, its SQLite file made 0600 before SQLite would make it 0644 less the
        umask: it holds the device's private Olm keys and the room keys. (nio's trust files
        are written through temporary files, 0600 already.)"""

        def _create_database(self):
            path = Path(self.database_path)
            warn_if_shared(path, "the device's encryption keys")
            private_file(path)
            return super()._create_database()

    STORE: type | None = PrivateStore  # for AsyncClientConfig(store=...)
else:
    STORE = None  # nio's own default without encryption support


def has_store(state_dir: Path, user_id: str, device_id: str) -> bool:
    # nio's DefaultStore names its file after the account (matrixstore.py).
    return (state_dir / STORE_DIR / f"{user_id}_{device_id}.db").exists()


def check_available() -> None:
    if not ENCRYPTION_ENABLED:
        raise SystemExit(
            "matrix.encryption is on but matrix-nio's encryption support is "
            "missing: pip install 'matrix-nio[e2e]' (or set it to false)"
        )


async def keep_keys(client: AsyncClient) -> None:
    """What nio's sync_forever does after each sync: publish our one-time keys, learn the
    devices of the people we share rooms with, open Olm sessions to new ones, and send
    the to-device messages (room keys, key requests) that are waiting."""
    if getattr(client, "olm", None) is None:  # encryption off
        return
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    await client.send_to_device_messages()


@dataclass
class _Waiting:
    room_id: str
    event: MegolmEvent
    since: float = field(default_factory=time.monotonic)


class Undecrypted:
    """Messages waiting for their room key; `handle` gets each once it is read, `tell`
    each sender whose message could not be read in time."""

    def __init__(
        self,
        client: AsyncClient,
        handle: Callable[[str, dict[str, Any]], Awaitable[None]],
        tell: Callable[[str, dict[str, Any], str], Awaitable[None]],
        wait: float | None = None,
        wanted: Callable[[str], bool] = lambda sender: True,
    ):
        self.client = client
        # Whose messages are waited for: a message from anyone else is no command the bot
        # would answer, and must not make it send key requests (nor fill this waiting room).
        self.wanted = wanted
        self.handle = handle
        self.tell = tell
        self.wait = KEY_WAIT if wait is None else wait
        self.waiting: dict[str, _Waiting] = {}  # by event ID
        self.told: set[tuple[str, str]] = set()  # (sender, megolm session)
        self.asked: set[str] = set()  # megolm sessions whose key was asked for

    async def add(self, room_id: str, event: MegolmEvent) -> None:
        if event.event_id in self.waiting:
            return
        if not self.wanted(event.sender):
            log.debug(
                "a message from %s in %s cannot be decrypted; not asking for its key",
                event.sender,
                room_id,
            )
            return
        log.info(
            "a message from %s in %s cannot be decrypted yet (session %s); asking for its key",
            event.sender,
            room_id,
            event.session_id,
        )
        self.waiting[event.event_id] = _Waiting(room_id, event)
        await self._ask_for_key(event)

    async def _ask_for_key(self, event: MegolmEvent) -> None:
        """Asked of the bot's own other devices, once per session (nio takes forwarded
        keys only from those); the sender's client usually sends the key unasked."""
        if event.session_id in self.asked:
            return
        self.asked.add(event.session_id)
        try:
            await self.client.to_device(
                event.as_key_request(self.client.user_id, self.client.device_id)
            )
        except NETWORK_ERRORS as exc:  # the wait and the notice still follow
            log.warning("could not ask for a room key: %s", exc)

    async def retry(self) -> None:
        """Decrypt what can now be decrypted, and give up on what waited too long."""
        now = time.monotonic()
        for event_id in list(self.waiting):
            # Looked up afresh: a retry on the clock and one after a sync may interleave.
            waiting = self.waiting.get(event_id)
            if waiting is None:
                continue
            decrypted = self._decrypt(waiting)
            if decrypted is not None:
                del self.waiting[event_id]
                await self.handle(waiting.room_id, decrypted)
            elif now - waiting.since >= self.wait:
                del self.waiting[event_id]
                await self._give_up(waiting)

    def _decrypt(self, waiting: _Waiting) -> dict[str, Any] | None:
        event = waiting.event
        event.room_id = waiting.room_id
        try:
            decrypted = self.client.decrypt_event(event)
        except Exception:  # nio raises EncryptionError, and worse on a damaged event
            return None
        return getattr(decrypted, "source", None)

    async def _give_up(self, waiting: _Waiting) -> None:
        event = waiting.event
        log.warning(
            "gave up on a message from %s in %s: its room key never arrived",
            event.sender,
            waiting.room_id,
        )
        key = (event.sender, event.session_id)
        if key in self.told:
            return
        self.told.add(key)
        await self.tell(waiting.room_id, event.source, UNDECRYPTABLE)

    async def run(self, stop: asyncio.Event) -> None:
        """Retry on a clock too: a quiet room brings no sync to retry on."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(2.0, self.wait / 2))
            except asyncio.TimeoutError:
                if self.waiting:
                    try:
                        await self.retry()
                    except Exception:  # the clock goes on; the next sync retries too
                        log.exception("could not handle a message whose key arrived late")
