"""Reactions as commands. On one of the bot's pictures: 🔁 again, 🎲 vary, 🔍 upscale, ✨
enhance, ℹ️ the picture's card, 🗑️ (or ❌) remove it; on a job's status notice, ❌ cancels
the job while it is queued. Which key asks for what is bot/chat/language/reactions.py's.

A reaction is held to every rule a typed command is: allowed_users, quotas, the limits and
the queue, the compliance checks, and exactly once through restarts, with the reaction's
event ID as the command's (a client that sends it again is not answered twice). It is read
as the typed command it stands for, in reply to the picture, so that accepting, iterating
and delivering need nothing of their own for it; its answer replies to the picture (in its
thread, where it has one) and names who asked. The bot's own reactions, reactions from
anyone outside allowed_users, and any other key cause no work and no word.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from nio import AsyncClient, RoomRedactResponse

from generation.scheduling.queue import GenerationQueue

from bot.chat.jobs.accepting import Acceptor
from bot.chat.jobs.pending import Pending, PendingJobs
from bot.chat.language import reactions
from bot.chat.language.reactions import Action
from bot.chat.language.rich import as_rich
from bot.chat.replies.answers import Replies
from bot.chat.storing import WhenStored
from bot.config import Settings
from bot.matrix import messages, power, sources
from bot.store import db as database
from bot.store import gallery, usage

log = logging.getLogger(__name__)

NO_CARD = (
    "The bot no longer keeps how this picture was made (its record expired), so it has no "
    "card; the picture may still carry its parameters in the PNG."
)
MAY_DELETE = (
    "Only the person who asked for this picture, a room moderator or a bot admin may remove it."
)


def annotation(event: dict[str, Any]) -> tuple[str, str] | None:
    """The event a reaction is on and its key; None when it is not a reaction."""
    relation = messages.relation_of(event.get("content") or {})
    target, key = relation.get("event_id"), relation.get("key")
    if relation.get("rel_type") != "m.annotation" or not isinstance(target, str):
        return None
    return (target, key) if isinstance(key, str) else None


class Reactions:
    """Takes each reaction in and does what it asks."""

    def __init__(
        self,
        *,
        client: AsyncClient,
        settings: Settings,
        db,
        queue: GenerationQueue,
        pending: PendingJobs,
        when_stored: WhenStored,
        acceptor: Acceptor,
        replies: Replies,
    ):
        self.client, self.settings, self.db, self.queue = client, settings, db, queue
        self.pending = pending  # ❌ on a status notice cancels its job
        self.when_stored = when_stored  # a reaction the full disk refuses waits for space
        self.acceptor = acceptor
        self.replies = replies  # the picture's card

    async def on_reaction(self, room_id: str, event: dict[str, Any]) -> None:
        on = annotation(event)
        if on is None:
            return
        target, key = on
        action = reactions.action_of(key)
        sender = str(event.get("sender"))
        if action is None or sender == self.client.user_id:
            return
        if not self.settings.matrix.allows(sender):
            log.info("ignoring a reaction from %s, who is not in allowed_users", sender)
            return
        if await database.was_handled(self.db, event["event_id"]):
            return  # answered already, before a restart
        status = self.pending.of_status(target)
        if status is not None:
            # Only from the notice's own room: a homeserver may pass on a relation across
            # rooms, and someone's power in a room of their own must not cancel a job here.
            if action is Action.DELETE and status.room_id == room_id:
                await self._claim(event)
                await self._cancel(room_id, event, status)
            return
        picture = await self._picture(room_id, target)
        if picture is None or picture.get("sender") != self.client.user_id:
            return  # not one of the bot's pictures: not a command
        # None when its record expired: again and vary then say so, as typed; upscale and
        # enhance work on any picture; only a moderator or an admin may remove it.
        posted = await gallery.find(self.db, target, room_id)
        asked = self._as_command(event, picture, reactions.key_of(key))
        command = reactions.command_for(action)
        if command is not None:
            await self.when_stored(
                event, lambda: self.acceptor.on_generate(room_id, asked, command)
            )
        elif action is Action.INFO:
            await self._claim(event)
            card = await self.replies.card_for(room_id, target)
            await messages.send_notice(
                self.client, room_id, card or as_rich(NO_CARD), reply_to=asked
            )
        else:
            await self._claim(event)
            await self._delete(room_id, asked, target, posted)

    async def _claim(self, event: dict[str, Any]) -> None:
        """Taken: never answered again, also after a restart."""
        await self.when_stored(
            event, lambda: database.claim_event(self.db, event["event_id"], time.time())
        )

    async def _picture(self, room_id: str, event_id: str) -> dict[str, Any] | None:
        try:
            return await sources.picture_event(self.client, room_id, event_id)
        except sources.SourceError as exc:
            log.info("a reaction on %s is not taken: %s", event_id, exc)
            return None

    @staticmethod
    def _as_command(event: dict[str, Any], picture: dict[str, Any], key: str) -> dict[str, Any]:
        """The reaction as the command it stands for: a message in reply to the picture,
        with the reaction's own event ID, sender and time, answered at the picture (in its
        thread where it is in one), mentioning who reacted."""
        return {
            "type": "m.reaction",
            "event_id": event["event_id"],
            "sender": event["sender"],
            "origin_server_ts": event.get("origin_server_ts"),
            "content": {
                "body": key,
                "m.relates_to": {"m.in_reply_to": {"event_id": picture["event_id"]}},
            },
            # The picture's own reply target, mentioning who reacted instead of the bot.
            messages.ANSWER_TO: {
                **messages.reply_target(picture),
                "sender": event["sender"],
                "reaction": key,
            },
        }

    async def _may_remove(self, room_id: str, sender: str, owner: str | None) -> bool:
        if sender == owner or self.settings.matrix.is_admin(sender):
            return True
        return bool(await power.may_redact_others(self.client, room_id, sender))

    async def _cancel(self, room_id: str, event: dict[str, Any], pending: Pending) -> None:
        """❌ on a job's status notice: cancelled while it is queued (its owner, a room
        moderator or a bot admin); once it runs it finishes."""
        sender = str(event["sender"])
        if not await self._may_remove(room_id, sender, pending.stored.sender):
            log.info("job %d stays: %s may not cancel it", pending.ticket.id, sender)
            return
        if self.queue.cancel(lambda ticket: ticket is pending.ticket):
            log.info("job %d was cancelled with ❌ by %s", pending.ticket.id, sender)

    async def _delete(
        self, room_id: str, asked: dict[str, Any], target: str, posted: gallery.Posted | None
    ) -> None:
        """🗑️ on a picture: removed (with its job's status notice) when the person asked
        for it, moderates the room or is a bot admin; anyone else gets one notice."""
        sender = str(asked["sender"])
        usage_id = posted.usage_id if posted is not None else None
        row = await usage.asked(self.db, usage_id) if usage_id else None
        owner, status_event = row if row is not None else (None, None)
        if not await self._may_remove(room_id, sender, owner):
            await messages.send_notice(self.client, room_id, as_rich(MAY_DELETE), reply_to=asked)
            return
        reason = f"removed at the request of {sender}"
        for event_id in (target, status_event):
            if event_id is None:
                continue
            response = await self.client.room_redact(
                room_id, event_id, reason=reason, tx_id=messages.txn_id(asked["event_id"], event_id)
            )
            if not isinstance(response, RoomRedactResponse):  # logged, not tried again
                log.warning("could not remove %s: %s", event_id, response)
        await gallery.forget(self.db, target)
        if usage_id:
            await usage.mark_deleted(self.db, usage_id, sender)
        log.info("a picture of usage id %s was removed with 🗑️ by %s", usage_id, sender)
