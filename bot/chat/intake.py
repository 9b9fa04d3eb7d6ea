"""Taking events in: each sync's invites, commands and redactions, handed to their room's
lane (lanes.py) so that the sync loop waits for none of them, and handled there one event
at a time, each guarded so that one that cannot be handled does not stop the bot for
everyone else. The GPU is waited for in a task of its own."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from collections.abc import Callable

from nio import AsyncClient, InviteMemberEvent, JoinResponse, MegolmEvent, SyncResponse

from generation.scheduling.queue import GenerationQueue

from bot.chat.jobs.accepting import Acceptor
from bot.chat.jobs.pending import PendingJobs
from bot.chat.language.commands import ON_A_PICTURE, Generate, UsageError
from bot.chat.language.parser import parse
from bot.chat.language.rich import as_rich
from bot.chat.lanes import Lanes
from bot.chat.reactions import Reactions
from bot.chat.replies.answers import Replies
from bot.chat.storing import WhenStored
from bot.config import Settings
from bot.matrix import encryption, messages, power
from bot.ops.disk import DiskWatch
from bot.ops.tasks import TaskOwner
from bot.store import db as database
from bot.store import gallery

log = logging.getLogger(__name__)

# The one answer of a command that was taken but whose change the full disk refused.
NOT_SAVED = "The bot's server is out of disk space, so that could not be saved. Try again later."


def _is_edit(content: dict[str, Any]) -> bool:
    return (
        "m.new_content" in content or messages.relation_of(content).get("rel_type") == "m.replace"
    )


def _source(event: Any) -> dict[str, Any]:
    # nio's parsed invite events, and the ones it could not parse (BadEvent, UnknownBadEvent).
    source = getattr(event, "source", None)
    return source if isinstance(source, dict) else {}


def _redacted_id(event: dict[str, Any]) -> str | None:
    # Room versions up to 10 put `redacts` at the top level; version 11 in the content.
    redacts = event.get("redacts") or (event.get("content") or {}).get("redacts")
    return redacts if isinstance(redacts, str) else None


class Intake:
    """Takes each sync's events in and hands each command to the role that answers it."""

    def __init__(
        self,
        *,
        client: AsyncClient,
        settings: Settings,
        db,
        queue: GenerationQueue,
        tasks: TaskOwner,
        disk: DiskWatch,
        when_stored: WhenStored,
        pending: PendingJobs,
        rooms_known: asyncio.Event,
        acceptor: Acceptor,
        replies: Replies,
        reactions: Reactions,
        beat: Callable[[], None],
    ):
        self.client, self.settings, self.db, self.queue = client, settings, db, queue
        self.disk = disk  # whether a failed write is the full disk's doing
        self.when_stored = when_stored  # a command the full disk refuses waits for space
        self.pending = pending  # a redacted command's job is cancelled
        self.rooms_known = rooms_known  # set by the first sync
        self.acceptor = acceptor
        self.replies = replies
        self.reactions = reactions
        self.beat = beat
        self.lanes = Lanes(tasks, beat)
        self.undecrypted = encryption.Undecrypted(
            client, self._hand_on, self._undecryptable, wanted=settings.matrix.allows
        )
        self._handed: list[asyncio.Future] = []  # the work handed on by this sync
        self._joining: set[str] = set()  # rooms joined that no sync has shown yet
        self._left: set[str] = set()  # rooms the syncs showed the bot leave (nio keeps them)

    async def on_sync(self, response: SyncResponse, first: bool) -> asyncio.Future:
        """Hand the sync's events on; the future is done once they are all handled (the
        sync token is saved then, so that a restart before it sees them again)."""
        self.rooms_known.set()
        self._handed = []
        try:
            await encryption.keep_keys(self.client)
        except messages.NETWORK_ERRORS as exc:  # tried again after the next sync
            log.warning("could not update the encryption keys: %s", exc)
        except Exception as exc:
            if not database.is_disk_full(exc):  # nio keeps its keys in state_dir
                raise
            log.warning("could not update the encryption keys: the disk is full", exc_info=True)
        self._left.update(response.rooms.leave)
        self._left.difference_update(response.rooms.join)
        for room_id, info in response.rooms.invite.items():
            self._hand(
                room_id, lambda r=room_id, s=info.invite_state: self.on_invite(r, s), "an invite"
            )
        if not self.settings.matrix.encryption:
            for room_id in response.rooms.join:
                if messages.is_encrypted(self.client, room_id):
                    self._hand(
                        room_id,
                        lambda r=room_id: self._leave_encrypted(r),
                        "leaving an encrypted room",
                    )
        if not first:  # history: commands sent before the bot's first start are not answered
            await self._take_in(response)
        return asyncio.gather(*self._handed)

    def _hand(self, room_id: str, work, what: str) -> None:
        self._handed.append(self.lanes.hand(room_id, work, what))

    async def _hand_on(self, room_id: str, event: dict[str, Any]) -> None:
        self._hand(room_id, lambda: self.on_event(room_id, event), "an event")

    async def _take_in(self, response: SyncResponse) -> None:
        for room_id, info in response.rooms.join.items():
            room = getattr(self.client, "rooms", {}).get(room_id)
            if info.timeline.limited and room is not None and room.encrypted:
                # Lazy-loaded members: people who joined in the gap are not in nio's view,
                # and would not get the room key of the bot's answers.
                room.members_synced = False
            for event in info.timeline.events:
                if isinstance(event, MegolmEvent):  # its room key has not arrived (yet)
                    await self._guarded(self.undecrypted.add(room_id, event), room_id)
                else:
                    await self._hand_on(room_id, event.source)
        await self._guarded(self.undecrypted.retry(), "rooms waiting for keys")

    async def _guarded(self, handling, room_id: str) -> None:
        """One event that cannot be handled must not stop the bot for everyone else."""
        try:
            await handling
        except Exception:
            log.exception("could not handle an event in %s", room_id)
        self.beat()

    async def on_invite(self, room_id: str, invite_state: list) -> None:
        inviter = self._inviter(invite_state)
        if inviter is None or not self.settings.matrix.allows(inviter):
            # Invites from anyone else are declined, so they do not pile up.
            log.info("declining the invite to %s from %s", room_id, inviter)
            await self.client.room_leave(room_id)
            return
        most, rooms = self.settings.matrix.max_rooms, self._rooms_in()
        if rooms >= most:
            log.warning(
                "declining the invite to %s from %s: the bot is in %d rooms and "
                "matrix.max_rooms is %d",
                room_id,
                inviter,
                rooms,
                most,
            )
            await self.client.room_leave(room_id)
            return
        # Counted from now on: the invites of one sync are handled at once, in their rooms'
        # lanes, and nio knows a joined room only from the next sync.
        self._joining.add(room_id)
        response = None
        try:
            response = await self.client.join(room_id)
        finally:
            if not isinstance(response, JoinResponse):
                self._joining.discard(room_id)
        if isinstance(response, JoinResponse):
            log.info("joined %s on the invite of %s", room_id, inviter)
        else:
            log.warning(
                "could not join %s on the invite of %s: %s",
                room_id,
                inviter,
                getattr(response, "message", type(response).__name__),
            )

    def _inviter(self, invite_state: list) -> str | None:
        """Who invited the bot, from the invite event the homeserver itself delivers: the
        LAST membership event for the bot in `invite_state`. Synapse appends it after the
        stripped state that the inviting server sent along (rest/client/sync.py,
        encode_invited), which that server may fill with anything, a member event for the
        bot "sent" by one of our allowed users included. The real one's sender the
        homeserver did check (it must be of the server that sent the invite). A last one
        nio could not read, or one that is not an invite, invites nobody."""
        mine = [
            e
            for e in invite_state
            if _source(e).get("type") == "m.room.member"
            and _source(e).get("state_key") == self.client.user_id
        ]
        last = mine[-1] if mine else None
        if isinstance(last, InviteMemberEvent) and last.membership == "invite":
            return last.sender
        return None

    def _rooms_in(self) -> int:
        """The rooms the bot is in: those the syncs showed it join (nio's rooms, less those it
        left since: nio forgets a room only when asked to), and those it joined since."""
        known = set(getattr(self.client, "rooms", {})) - self._left
        self._joining.difference_update(known)
        return len(known) + len(self._joining)

    async def _leave_encrypted(self, room_id: str) -> None:
        """With matrix.encryption off, an encrypted room gets one notice, in the clear (the
        bot has no keys), saying why the bot leaves; it never answers there unencrypted."""
        log.warning("leaving %s: it is encrypted and matrix.encryption is off", room_id)
        content = {
            "msgtype": "m.notice",
            "body": (
                "This room is end-to-end encrypted and this bot runs with encryption turned "
                "off (matrix.encryption: false), so it cannot work here and leaves. Ask its "
                "admin to turn encryption on, or invite it to an unencrypted room."
            ),
        }
        try:
            await self.client.room_send(
                room_id, "m.room.message", content, tx_id=f"imgbot-leave-{room_id}"
            )
        finally:
            await self.client.room_leave(room_id)

    async def _undecryptable(self, room_id: str, event: dict[str, Any], text: str) -> None:
        if self.settings.matrix.allows(str(event.get("sender"))):
            self._hand(
                room_id,
                lambda: messages.send_notice(self.client, room_id, as_rich(text), reply_to=event),
                "a notice",
            )

    async def on_event(self, room_id: str, event: dict[str, Any]) -> None:
        if event.get("sender") == self.client.user_id:
            return
        if messages.ANSWER_TO in event:
            # Ours alone (a reaction read as a command): one that arrives from outside, a
            # key a remote server could add to its event, must not steer where answers go.
            event = {k: v for k, v in event.items() if k != messages.ANSWER_TO}
        if event.get("type") == "m.room.redaction":
            await self.on_redaction(room_id, event)
            return
        if event.get("type") == "m.reaction":
            await self.reactions.on_reaction(room_id, event)
            return
        content = event.get("content") or {}
        if (
            event.get("type") != "m.room.message"
            or content.get("msgtype") != "m.text"
            or _is_edit(content)
        ):
            return
        command = parse(
            str(content.get("body", "")),
            self.settings.matrix.command_prefix,
            self.settings.limits,
        )
        if command is None:
            return
        sender = event["sender"]
        if not self.settings.matrix.allows(sender):
            log.info("ignoring a command from %s, who is not in allowed_users", sender)
            return
        if await database.was_handled(self.db, event["event_id"]):
            return  # answered already, before a restart
        # A refused or accepted command is claimed in the same transaction as its usage row
        # (and its job), so that a crash between the two loses neither; the others now.
        # Nothing is sent before the claim is stored: a claim the full disk refused is
        # tried again, whole, once space is back.
        if isinstance(command, UsageError):
            await self.when_stored(
                event,
                lambda: self.acceptor.reject(
                    room_id, event, command.text, prompt=str(content.get("body"))
                ),
            )
        elif isinstance(command, (Generate, *ON_A_PICTURE)):
            await self.when_stored(
                event, lambda: self.acceptor.on_generate(room_id, event, command)
            )
        else:
            await self.when_stored(
                event, lambda: database.claim_event(self.db, event["event_id"], time.time())
            )
            try:
                await self.replies.answer(room_id, event, command)
            except Exception as exc:
                if not await self.disk.refused(exc):
                    raise
                # Taken, so never answered again: this notice is its one answer.
                log.warning(
                    "a %s command in %s could not be saved: the disk is full",
                    type(command).__name__,
                    room_id,
                )
                await messages.send_notice(self.client, room_id, as_rich(NOT_SAVED), reply_to=event)

    async def _forget_if_picture(self, room_id: str, redacted: str, sender: str) -> None:
        """One of the bot's pictures removed by a moderator: nothing continues from it any
        more (again, vary, its card). Only a redaction its sender may make counts: the
        homeserver checks it only when it applies it."""
        if not redacted or await gallery.find(self.db, redacted, room_id) is None:
            return
        if await power.may_redact_others(self.client, room_id, sender):
            await gallery.forget(self.db, redacted)
            log.info("forgot the picture %s: %s removed it", redacted, sender)

    async def on_redaction(self, room_id: str, event: dict[str, Any]) -> None:
        """A redacted command that is still queued is cancelled; one already running is
        finished but not posted (what was posted stays). A reaction taken back is a command
        redacted, except that once its job runs nothing changes. Only its owner's redaction counts,
        or one from someone who may redact others' events in the room: the auth rules let
        any redaction in (room versions 3+ check it only when it is applied), and a
        homeserver other than Synapse may pass on one that Synapse would withhold. A
        redaction in another room changes nothing."""
        redacted = _redacted_id(event) or ""
        pending = self.pending.of_command(redacted)
        if pending is None:
            await self._forget_if_picture(room_id, redacted, str(event.get("sender")))
            return
        if pending.room_id != room_id:
            return
        sender = str(event.get("sender"))
        if sender != pending.stored.sender and not await power.may_redact_others(
            self.client, room_id, sender
        ):
            log.info(
                "job %d stays: its command was redacted by %s, who is neither its "
                "owner nor may redact others' events there",
                pending.ticket.id,
                sender,
            )
            return
        if not self.queue.cancel(lambda ticket: ticket is pending.ticket):
            if pending.reaction:
                return  # a reaction taken back once its job runs changes nothing
            pending.withdrawn = True
        log.info("the command of job %d was redacted by %s", pending.ticket.id, sender)
