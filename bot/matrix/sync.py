"""The sync loop: long-polls the homeserver, backs off with jitter, keeps its token.

Not nio's `sync_forever`: we need the token saved only after a batch was handled (so a
restart neither skips nor repeats a command), the very first sync treated as history, and a
backoff with jitter that a stalled homeserver can recover from.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from nio import AsyncClient, RoomMessagesResponse, SyncResponse

from bot.matrix.messages import NETWORK_ERRORS, HomeserverError

log = logging.getLogger(__name__)

SYNC_TOKEN_KEY = "sync_token"  # its key in the state the loop is handed
POLL_MS = 30_000
BACKOFF_MAX = 60.0
# Synapse sends at most 10 events of a room per sync unless told otherwise; the rest of a
# busy moment (or of an outage) arrives as a "limited" timeline with a gap to fill.
SYNC_FILTER = {"room": {"timeline": {"limit": 100}, "state": {"lazy_load_members": True}}}
GAP_PAGE = 100
GAP_MAX_EVENTS = 2000


class TokenRejected(HomeserverError):
    """The homeserver no longer accepts the access token: only a new login helps."""


def backoff_delay(failures: int, cap: float = BACKOFF_MAX) -> float:
    """Exponential backoff with jitter: about 1, 2, 4 … s, capped, each scaled by 0.5–1.0."""
    return min(cap, 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)


class TokenPlace(Protocol):
    """Where the sync token is kept between runs (bot.app hands in the database's)."""

    async def load(self) -> str | None: ...

    async def save(self, value: str) -> None: ...


class SyncLoop:
    def __init__(
        self,
        client: AsyncClient,
        token: TokenPlace,
        on_sync: Callable[[SyncResponse, bool], Awaitable[Awaitable | None]],
        beat: Callable[[], None] | None = None,
    ):
        self.client = client
        self.token = token
        self.on_sync = on_sync
        self.beat = beat or (lambda: None)  # progress, for the watchdog
        # Set once the first sync is handled: from then on, new messages are answered.
        self.live = asyncio.Event()
        self.last_success = time.monotonic()  # for a watchdog, and for `check`
        # The newest sync token waiting for its events to be handled before it is saved.
        self._saving: asyncio.Future | None = None
        self._save_failing = False  # the last save of the token failed (said once)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._run(stop)
        finally:
            if self._saving is not None and not self._saving.done():
                # What is handled by now is saved; the rest comes again after the restart.
                await asyncio.wait({self._saving}, timeout=5)
                self._saving.cancel()

    async def _run(self, stop: asyncio.Event) -> None:
        token = await self.token.load()
        failures = 0
        while not stop.is_set():
            # The very first sync (no token) only takes the current state: the backlog of
            # old messages is history, not commands for us.
            first = token is None
            response = await self._sync_or_stop(token, first, stop)
            if response is None:
                return
            self.beat()
            if isinstance(response, SyncResponse) and not first:
                # A gap that cannot be fetched now fails this sync: the token stays where it
                # was, so the next try fetches the same events again instead of skipping them.
                response = await self._fill_gaps(response, token) or response
            if isinstance(response, SyncResponse):
                handled = await self.on_sync(response, first)
                token = response.next_batch
                await self._save_after(handled, token)
                self.last_success = time.monotonic()
                self.live.set()
                if failures:
                    log.info("sync recovered after %d failures", failures)
                failures = 0
                continue
            if getattr(response, "status_code", None) in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                raise TokenRejected(f"the homeserver rejected the access token: {response.message}")
            failures += 1
            delay = backoff_delay(failures)
            log.warning("sync failed (%s); retrying in %.1f s", _describe(response), delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    async def _save_after(self, handled: Awaitable | None, token: str) -> None:
        """Save `token` once the events of its sync are handled. `on_sync` may hand them on
        to be handled elsewhere and return an awaitable of that: the token is then saved in
        the background, in order, while the loop syncs on (a restart before it fetches the
        events again, and those already claimed are skipped)."""
        if handled is None:
            await self.token.save(token)
            return
        previous = self._saving

        async def save() -> None:
            if previous is not None:
                await previous  # raises only when cancelled: then this one is not saved
            await handled
            try:
                await self.token.save(token)
            except Exception:
                # A full disk (or another fault of the store): this token is not saved, and
                # the next sync's, saved in its turn, covers its events as well. Said once
                # until a save works again.
                if not self._save_failing:
                    log.warning(
                        "could not save the sync token; a restart before a later "
                        "one is saved fetches these events again (those taken "
                        "are recognised)",
                        exc_info=True,
                    )
                self._save_failing = True
                return
            if self._save_failing:
                log.info("the sync token is saved again")
            self._save_failing = False

        self._saving = asyncio.ensure_future(save())

    async def _fill_gaps(self, response: SyncResponse, since: str):
        """Fetch the events a limited timeline left out, so no command is skipped.

        Returns None when every gap was filled, else the error response or exception."""
        for room_id, info in response.rooms.join.items():
            if not info.timeline.limited or not info.timeline.prev_batch:
                continue
            missing: list = []
            start = info.timeline.prev_batch
            while len(missing) < GAP_MAX_EVENTS:
                try:
                    page = await self.client.room_messages(
                        room_id, start=start, end=since, limit=GAP_PAGE
                    )
                except NETWORK_ERRORS as exc:
                    return exc
                if not isinstance(page, RoomMessagesResponse):
                    return page
                missing.extend(page.chunk)  # newest first
                self.beat()  # a long gap on a slow server is progress, not a stall
                if not page.chunk or not page.end or page.end == start:
                    break
                start = page.end
            if missing:
                log.info("fetched %d events that the sync of %s left out", len(missing), room_id)
            info.timeline.events[:0] = reversed(missing)
        return None

    async def _sync_or_stop(self, token, first, stop):
        """One sync request, abandoned as soon as `stop` is set; None when stopping."""
        sync = asyncio.ensure_future(self._sync_once(token, first))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({sync, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if sync not in done:
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)
            return None
        stopped.cancel()
        return sync.result()

    async def _sync_once(self, token, first):
        # The first sync of each run asks for the rooms' whole state, also after a restart:
        # nio knows a room (whether it is encrypted, who is in it) only from its state,
        # and cannot send to an encrypted room it does not know.
        full_state = first or not self.live.is_set()
        try:
            return await self.client.sync(
                timeout=0 if full_state else POLL_MS,
                since=token,
                full_state=True if full_state else None,
                sync_filter=SYNC_FILTER,
            )
        except NETWORK_ERRORS as exc:
            return exc


def _describe(response) -> str:
    if isinstance(response, BaseException):
        return (
            f"{type(response).__name__}: {response}" if str(response) else type(response).__name__
        )
    return f"{getattr(response, 'status_code', '?')}: {getattr(response, 'message', response)}"
