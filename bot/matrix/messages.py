"""Sending to Matrix: notices, pictures and replies, in one place.

Every helper returns the new event's ID, or None when the homeserver would not take it.
Failures that may pass (the homeserver down, restarting or overloaded) are retried with a
capped backoff for up to `patience` seconds; a refusal (the bot is not in the room, the file
is too large) is not. Each send keeps one transaction ID through its retries, so a retry of
a request that did arrive never posts twice; an answer to a command takes its transaction
ID from the command (`txn_id`), so that even a send repeated after a crash and a restart
(same device, same access token) is taken by the homeserver as the one already made.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from nio import AsyncClient, RoomSendResponse, UploadResponse
from nio.exceptions import EncryptionError, GroupEncryptionError, LocalProtocolError

from generation.errors import ImgbotError

log = logging.getLogger(__name__)

# Replies sent while a sync is being handled give up soon (the sync loop must go on);
# pictures, sent from tasks of their own, wait for the homeserver to come back.
QUICK = 15.0
PATIENT = 3600.0
RETRY_CAP = 60.0
# One try of a send, key sharing included: nio waits without a limit for a key share in
# progress, and one that failed half-way is never finished (see _unstick).
SEND_TRY_SECONDS = 120.0
# What a request to an unreachable or failing homeserver raises (rather than returns).
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def txn_id(command_event_id: str, part: str) -> str:
    """The transaction ID of one reply (`part`) to a command: the same after a restart."""
    digest = hashlib.sha256(f"{command_event_id}\n{part}".encode()).hexdigest()
    return f"imgbot-{digest[:40]}"


class HomeserverError(ImgbotError):
    """The homeserver, or the bot's standing there (its login, token, identity, rooms),
    failed what was asked; the words say why."""


class Refused(HomeserverError):
    """The homeserver answered, and the answer will not change by asking again."""

    def __init__(self, problem: str, errcode: str | None = None):
        super().__init__(problem)
        self.errcode = errcode


class Unreachable(HomeserverError):
    """The homeserver could not be reached (or would not take the bot's token) for as long
    as the caller was willing to wait; the send may well work later."""


def _problem(response) -> str:
    """Why a request failed; raises Refused for an answer that a retry cannot change."""
    status = getattr(getattr(response, "transport_response", None), "status", None)
    problem = f"{response.status_code}: {response.message}"
    if status == 401:
        # The token was revoked: no send works until someone logs the bot in again (the
        # sync loop stops the bot for that). Whatever was to be sent is kept.
        raise Unreachable(problem)
    # 429s are waited out inside nio (as long as the server says); 408 and 5xx may pass.
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        raise Refused(problem, getattr(response, "status_code", None))
    return problem


def relation_of(content: dict[str, Any]) -> dict[str, Any]:
    """An event's `m.relates_to`, or {} when there is none or it is malformed (any room
    member can send content of any shape; it must not break handling)."""
    relation = content.get("m.relates_to")
    return relation if isinstance(relation, dict) else {}


# A command that is not a message of its own (a reaction on a picture) is answered in reply
# to the event it is about: the command's event dict carries that event's reply target here
# (event ID, whom to mention, its relation), and every reply to the command goes there.
ANSWER_TO = "imgbot.answer_to"


def answered_at(event_source: dict[str, Any]) -> dict[str, Any]:
    """What a reply to this command refers to: the event itself, or its ANSWER_TO."""
    return event_source.get(ANSWER_TO) or event_source


def reply_target(event: dict[str, Any]) -> dict[str, Any]:
    """The part of a command event that a reply refers to, as the job store keeps it: its
    ID, its sender, and its relation (so that an answer in a thread stays in the thread);
    nothing else. A reaction's is the picture it is on (ANSWER_TO), with its key."""
    if event.get(ANSWER_TO):
        return dict(event[ANSWER_TO])
    relation = (event.get("content") or {}).get("m.relates_to")
    content = {"m.relates_to": relation} if isinstance(relation, dict) else {}
    return {"event_id": event["event_id"], "sender": event["sender"], "content": content}


def reply_relation(event_source: dict[str, Any]) -> dict[str, Any]:
    """`m.relates_to` for a reply to this event; inside a thread, the reply stays there."""
    event_source = answered_at(event_source)
    event_id = event_source["event_id"]
    relation = relation_of(event_source.get("content", {}))
    if relation.get("rel_type") == "m.thread" and relation.get("event_id"):
        return {
            "rel_type": "m.thread",
            "event_id": relation["event_id"],
            "is_falling_back": False,
            "m.in_reply_to": {"event_id": event_id},
        }
    return {"m.in_reply_to": {"event_id": event_id}}


def _reply_fields(reply_to: dict[str, Any] | None) -> dict[str, Any]:
    if reply_to is None:
        return {}
    reply_to = answered_at(reply_to)
    return {
        "m.relates_to": reply_relation(reply_to),
        # Mention the person, so they are notified when their answer arrives.
        "m.mentions": {"user_ids": [reply_to["sender"]]},
    }


async def _with_retries(what: str, attempt_once, patience: float, strict: bool) -> Any:
    """Run `attempt_once` (returning (value, None) or (None, problem)) until it succeeds,
    is refused, or `patience` seconds have passed; backoff 1, 2, 4 … capped at RETRY_CAP.

    A failure returns None, or with `strict` raises Refused or Unreachable, so that the
    caller can tell "will never work" from "not now"."""
    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        attempt += 1
        try:
            value, problem = await attempt_once()
            if problem is None:
                return value
        except (Refused, Unreachable) as exc:
            log.error("%s failed: %s", what, exc)
            if strict:
                raise
            return None
        except NETWORK_ERRORS as exc:
            problem = f"{type(exc).__name__}: {exc}"
        delay = min(RETRY_CAP, 2.0 ** (attempt - 1))
        if time.monotonic() + delay > deadline:
            log.error("giving up %s after %d tries: %s", what, attempt, problem)
            if strict:
                raise Unreachable(problem)
            return None
        log.warning("%s failed (%s); retrying in %.0f s", what, problem, delay)
        await asyncio.sleep(delay)


async def send(
    client: AsyncClient,
    room_id: str,
    content: dict[str, Any],
    event_type: str = "m.room.message",
    *,
    txn_id: str | None = None,
    patience: float = QUICK,
    strict: bool = False,
) -> str | None:
    tx_id = txn_id or str(uuid.uuid4())

    async def once():
        if is_encrypted(client, room_id) and client.olm is None:
            # nio would send it in the clear: the mistake other bots make.
            raise Refused(
                "the room is encrypted and this bot's encryption is off (matrix.encryption)"
            )
        try:
            response = await asyncio.wait_for(
                client.room_send(
                    room_id, event_type, content, tx_id=tx_id, ignore_unverified_devices=True
                ),
                SEND_TRY_SECONDS,
            )
        except (GroupEncryptionError, EncryptionError) as exc:
            _unstick(client, room_id)
            return None, f"{type(exc).__name__}: {exc}"
        except LocalProtocolError as exc:  # MembersSyncError (a failed request) included
            _unstick(client, room_id)
            if room_id not in client.rooms:  # e.g. a room the bot has left
                raise Refused(f"the bot is not in {room_id}") from None
            return None, f"{type(exc).__name__}: {exc}"
        except (*NETWORK_ERRORS, asyncio.CancelledError):
            _unstick(client, room_id)
            raise
        if isinstance(response, RoomSendResponse):
            return response.event_id, None
        return None, _problem(response)

    return await _with_retries(f"sending to {room_id}", once, patience, strict)


class Formatted(Protocol):
    """Text that renders both as a plain body and as HTML (the chat's replies are:
    bot.chat.language.rich.RichText)."""

    def plain(self) -> str: ...

    def html(self) -> str: ...


def notice_content(text: str | Formatted, html: str | None = None) -> dict[str, Any]:
    """An m.notice's text: the plain `body`, and the `formatted_body` that clients show
    where there is one (`html`, or the Formatted text's own)."""
    if isinstance(text, str):
        body = text
    else:
        body, html = text.plain(), text.html()
    # m.notice, so that other bots do not answer the bot.
    content: dict[str, Any] = {"msgtype": "m.notice", "body": body}
    if html is not None:
        content.update(format="org.matrix.custom.html", formatted_body=html)
    return content


async def send_notice(
    client: AsyncClient,
    room_id: str,
    text: str | Formatted,
    reply_to: dict[str, Any] | None = None,
    html: str | None = None,
    *,
    txn_id: str | None = None,
    patience: float = QUICK,
    strict: bool = False,
) -> str | None:
    """A text reply: Formatted text, or a plain `text` with the `html` that clients show
    instead where one is given."""
    content = {**notice_content(text, html), **_reply_fields(reply_to)}
    return await send(client, room_id, content, txn_id=txn_id, patience=patience, strict=strict)


def _unstick(client: AsyncClient, room_id: str) -> None:
    """After a send to an encrypted room failed: a key share nio left half-done would make
    every later send to the room wait for ever, and one it marked as done may have missed
    devices; both are dropped, so the next send shares a fresh room key."""
    if getattr(client, "olm", None) is None:
        return
    waiting = client.sharing_session.pop(room_id, None)
    if waiting is not None:
        waiting.set()
    client.invalidate_outbound_session(room_id)


def is_encrypted(client: AsyncClient, room_id: str) -> bool:
    room = client.rooms.get(room_id)
    return bool(room is not None and room.encrypted) or room_id in client.encrypted_rooms


async def upload(
    client: AsyncClient,
    data: bytes,
    mimetype: str,
    filename: str,
    patience: float = QUICK,
    strict: bool = False,
    encrypt: bool = False,
) -> dict[str, Any] | None:
    """Upload bytes to the media repository; None, or where the file is as a message
    gives it: {"url": mxc URI}, or for an encrypted room {"file": the URI with the key, iv
    and hash (an EncryptedFile)}, encrypted by nio (AES-CTR, unpadded base64)."""

    async def once():
        response, keys = await client.upload(
            lambda *_: io.BytesIO(data),
            content_type=mimetype,
            filename=filename,
            filesize=len(data),
            encrypt=encrypt,
        )
        if not isinstance(response, UploadResponse):
            return None, _problem(response)
        if encrypt:
            return {"file": {"url": response.content_uri, "mimetype": mimetype, **keys}}, None
        return {"url": response.content_uri}, None

    return await _with_retries(f"uploading {filename}", once, patience, strict)


def bearer(client: AsyncClient) -> dict[str, str]:
    """The header of an authenticated request nio has no method for (the v1 media API)."""
    return {"Authorization": f"Bearer {client.access_token}"}


async def upload_limit(client: AsyncClient) -> int | None:
    """The homeserver's largest upload in bytes (`m.upload.size`), or None when it does not
    say. Asked through the authenticated media API, then the older one."""
    for path in ("/_matrix/client/v1/media/config", "/_matrix/media/v3/config"):
        try:
            response = await client.send("GET", path, headers=bearer(client))
            if response.status == 200:
                size = (await response.json()).get("m.upload.size")
                return size if isinstance(size, int) and size > 0 else None
        except (*NETWORK_ERRORS, ValueError) as exc:
            log.warning("could not read the homeserver's upload limit: %s", exc)
            return None
    return None


@dataclass(frozen=True)
class Picture:
    """An encoded picture and what `info` says about it."""

    data: bytes
    width: int
    height: int
    mimetype: str = "image/png"
    note: str | None = None  # what was done to fit the server's upload limit

    def info(self) -> dict[str, Any]:
        return {
            "w": self.width,
            "h": self.height,
            "mimetype": self.mimetype,
            "size": len(self.data),
        }


async def send_image(
    client: AsyncClient,
    room_id: str,
    picture: Picture,
    *,
    filename: str,
    caption: str,
    reply_to: dict[str, Any] | None = None,
    thumbnail: Picture | None = None,
    txn_id: str | None = None,
    patience: float = QUICK,
    strict: bool = False,
) -> str | None:
    """Upload a picture (and its thumbnail, when given) and post it as an m.image, with the
    caption as its body."""
    content = await image_content(
        client,
        room_id,
        picture,
        filename=filename,
        caption=caption,
        reply_to=reply_to,
        thumbnail=thumbnail,
        patience=patience,
        strict=strict,
    )
    if content is None:
        return None
    return await send(client, room_id, content, txn_id=txn_id, patience=patience, strict=strict)


async def image_content(
    client: AsyncClient,
    room_id: str,
    picture: Picture,
    *,
    filename: str,
    caption: str,
    reply_to: dict[str, Any] | None = None,
    thumbnail: Picture | None = None,
    patience: float = QUICK,
    strict: bool = False,
) -> dict[str, Any] | None:
    """Upload a picture (and its thumbnail) for an m.image to the room; the message's
    content, to `send` when its turn comes, or None when the upload failed."""
    # In an encrypted room the files are encrypted too; without encryption, send() refuses.
    encrypt = client.olm is not None and is_encrypted(client, room_id)
    where = await upload(
        client, picture.data, picture.mimetype, filename, patience, strict, encrypt
    )
    if where is None:
        return None
    info = picture.info()
    if thumbnail is not None:
        # A thumbnail is a courtesy to clients on slow links: without one the picture is
        # still sent.
        thumbnail_at = await upload(
            client,
            thumbnail.data,
            thumbnail.mimetype,
            "thumbnail-" + filename.rsplit(".", 1)[0] + ".jpg",
            patience,
            encrypt=encrypt,
        )
        if thumbnail_at is not None:
            info.update(
                {f"thumbnail_{k}": v for k, v in thumbnail_at.items()},
                thumbnail_info=thumbnail.info(),
            )
    return {
        "msgtype": "m.image",
        # A body that differs from `filename` is shown as a caption (Matrix 1.10).
        "body": caption,
        "filename": filename,
        **where,
        "info": info,
        **_reply_fields(reply_to),
    }
