"""Telling a room how work goes without adding to it: a notice edited in place (`m.replace`,
which clients show as the one message, changed) and the typing indicator.

Both are courtesies: a failure is logged and returned, never raised, so that nothing that
matters waits on them.
"""

from __future__ import annotations

import logging
import time
import uuid

from nio import AsyncClient, ErrorResponse, RoomTypingResponse

from bot.matrix import messages

log = logging.getLogger(__name__)

TYPING_MS = 30_000  # how long the homeserver shows the bot typing, unless told again
# After a 429, edits that only update a status wait this much longer than the server asked:
# the pictures and the final lines go first.
CALM_SECONDS = 30.0


class Pressure:
    """Whether the homeserver has held the bot back lately (a 429 on any request: nio waits
    those out itself, and tells its response callbacks)."""

    def __init__(self, client: AsyncClient):
        self.until = 0.0  # time.monotonic() before which updates are left out
        add = getattr(client, "add_response_callback", None)
        if add is not None:
            add(self._on_error, ErrorResponse)

    async def _on_error(self, response) -> None:
        if getattr(response, "status_code", None) in ("M_LIMIT_EXCEEDED", 429):
            wait = (getattr(response, "retry_after_ms", 0) or 5000) / 1000
            self.until = max(self.until, time.monotonic() + wait + CALM_SECONDS)

    @property
    def limited(self) -> bool:
        return time.monotonic() < self.until


def edit_content(event_id: str, text: str | messages.Formatted) -> dict:
    """The content of an edit of the notice `event_id` to `text`. The fallback body (and
    formatted body) starts with "* ", as clients without edits show it; no one is mentioned
    again (Matrix 1.7)."""
    new = {**messages.notice_content(text), "m.mentions": {}}
    fallback = {**new, "body": "* " + new["body"]}
    if "formatted_body" in new:
        fallback["formatted_body"] = "* " + new["formatted_body"]
    return {
        **fallback,
        "m.new_content": new,
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    }


async def edit_notice(
    client: AsyncClient,
    room_id: str,
    event_id: str,
    text: str | messages.Formatted,
    patience: float = messages.QUICK,
) -> bool:
    """Edit the bot's notice `event_id` to say `text`; False when it could not be. Each edit
    is its own transaction: two edits to the same words are harmless, a lost one is not."""
    sent = await messages.send(
        client,
        room_id,
        edit_content(event_id, text),
        txn_id=f"imgbot-edit-{uuid.uuid4().hex}",
        patience=patience,
    )
    return sent is not None


async def set_typing(client: AsyncClient, room_id: str, typing: bool) -> bool:
    """Show (or stop showing) the bot as typing in the room; False when the homeserver
    would not."""
    try:
        response = await client.room_typing(room_id, typing, timeout=TYPING_MS)
    except messages.NETWORK_ERRORS as exc:
        log.debug("could not set typing in %s: %s", room_id, exc)
        return False
    return isinstance(response, RoomTypingResponse)


class Typing:
    """The rooms the bot shows itself typing in: while any job of the room is at work,
    told again before the homeserver's timeout runs out, and stopped with the last job."""

    def __init__(self, client: AsyncClient):
        self.client = client
        self._jobs: dict[str, int] = {}
        self._told: dict[str, float] = {}  # when each room was last told, monotonic

    async def start(self, room_id: str) -> None:
        self._jobs[room_id] = self._jobs.get(room_id, 0) + 1
        await self.keep(room_id)

    async def keep(self, room_id: str) -> None:
        """Tell the room again when half the timeout has passed."""
        if not self._jobs.get(room_id):
            return
        now = time.monotonic()
        if now - self._told.get(room_id, -TYPING_MS) >= TYPING_MS / 2000:
            self._told[room_id] = now
            await set_typing(self.client, room_id, True)

    async def stop(self, room_id: str) -> None:
        left = self._jobs.get(room_id, 0) - 1
        if left > 0:
            self._jobs[room_id] = left
            return
        self._jobs.pop(room_id, None)
        self._told.pop(room_id, None)
        await set_typing(self.client, room_id, False)
