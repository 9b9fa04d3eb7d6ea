"""Sending to Matrix: notices, pictures and replies, in one place.

Every helper returns the new event's ID, or None when the homeserver would not take it
(after a bounded number of retries, each with the same transaction ID so that a retry of a
request that did arrive never posts twice).
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from nio import AsyncClient, RoomSendResponse, UploadResponse

log = logging.getLogger(__name__)

RETRY_DELAYS = (1, 2, 4, 8)
# What a request to an unreachable or failing homeserver raises (rather than returns).
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def relation_of(content: dict[str, Any]) -> dict[str, Any]:
    """An event's `m.relates_to`, or {} when there is none or it is malformed (any room
    member can send content of any shape; it must not break handling)."""
    relation = content.get("m.relates_to")
    return relation if isinstance(relation, dict) else {}


def reply_relation(event_source: dict[str, Any]) -> dict[str, Any]:
    """`m.relates_to` for a reply to this event; inside a thread, the reply stays there."""
    event_id = event_source["event_id"]
    relation = relation_of(event_source.get("content", {}))
    if relation.get("rel_type") == "m.thread" and relation.get("event_id"):
        return {"rel_type": "m.thread", "event_id": relation["event_id"],
                "is_falling_back": False, "m.in_reply_to": {"event_id": event_id}}
    return {"m.in_reply_to": {"event_id": event_id}}


def _reply_fields(reply_to: dict[str, Any] | None) -> dict[str, Any]:
    if reply_to is None:
        return {}
    return {"m.relates_to": reply_relation(reply_to),
            # Mention the person, so they are notified when their answer arrives.
            "m.mentions": {"user_ids": [reply_to["sender"]]}}


async def _with_retries(what: str, attempt_once) -> Any:
    """Run `attempt_once` (returning (value, None) or (None, problem)) with bounded backoff."""
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            value, problem = await attempt_once()
            if problem is None:
                return value
        except NETWORK_ERRORS as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if delay is None:
            log.error("giving up %s after %d tries: %s", what, attempt + 1, problem)
            return None
        log.warning("%s failed (%s); retrying in %d s", what, problem, delay)
        await asyncio.sleep(delay)
    return None


async def send(client: AsyncClient, room_id: str, content: dict[str, Any],
               event_type: str = "m.room.message") -> str | None:
    tx_id = str(uuid.uuid4())

    async def once():
        response = await client.room_send(room_id, event_type, content, tx_id=tx_id,
                                          ignore_unverified_devices=True)
        if isinstance(response, RoomSendResponse):
            return response.event_id, None
        return None, f"{response.status_code}: {response.message}"

    return await _with_retries(f"sending to {room_id}", once)


async def send_notice(client: AsyncClient, room_id: str, text: str,
                      reply_to: dict[str, Any] | None = None,
                      html: str | None = None) -> str | None:
    """A text reply; `html`, when given, is what clients show, and `text` its fallback."""
    # m.notice, so that other bots do not answer the bot.
    content = {"msgtype": "m.notice", "body": text, **_reply_fields(reply_to)}
    if html is not None:
        content.update(format="org.matrix.custom.html", formatted_body=html)
    return await send(client, room_id, content)


async def upload(client: AsyncClient, data: bytes, mimetype: str, filename: str) -> str | None:
    """Upload bytes to the media repository; the mxc:// URI, or None."""

    async def once():
        response, _ = await client.upload(
            lambda *_: io.BytesIO(data), content_type=mimetype, filename=filename,
            filesize=len(data))
        if isinstance(response, UploadResponse):
            return response.content_uri, None
        return None, f"{response.status_code}: {response.message}"

    return await _with_retries(f"uploading {filename}", once)


@dataclass(frozen=True)
class Picture:
    """An encoded picture and what `info` says about it."""

    data: bytes
    width: int
    height: int
    mimetype: str = "image/png"

    def info(self) -> dict[str, Any]:
        return {"w": self.width, "h": self.height, "mimetype": self.mimetype,
                "size": len(self.data)}


async def send_image(client: AsyncClient, room_id: str, png: bytes, *, width: int, height: int,
                     filename: str, caption: str, reply_to: dict[str, Any] | None = None,
                     thumbnail: Picture | None = None) -> str | None:
    """Upload a PNG (and its thumbnail, when given) and post it as an m.image, with the
    caption as its body."""
    picture = Picture(png, width, height)
    url = await upload(client, png, picture.mimetype, filename)
    if url is None:
        return None
    info = picture.info()
    if thumbnail is not None:
        # A thumbnail is a courtesy to clients on slow links: without one the picture is
        # still sent.
        thumbnail_url = await upload(client, thumbnail.data, thumbnail.mimetype,
                                     "thumbnail-" + filename.rsplit(".", 1)[0] + ".jpg")
        if thumbnail_url is not None:
            info.update(thumbnail_url=thumbnail_url, thumbnail_info=thumbnail.info())
    content = {
        "msgtype": "m.image",
        # A body that differs from `filename` is shown as a caption (Matrix 1.10).
        "body": caption,
        "filename": filename,
        "url": url,
        "info": info,
        **_reply_fields(reply_to),
    }
    return await send(client, room_id, content)
