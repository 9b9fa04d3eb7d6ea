"""The picture a command replies to: found, fetched through the authenticated media API,
and checked before any GPU work. Everything here is untrusted input."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from typing import Any

from nio import AsyncClient, DownloadError, RoomGetEventResponse
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import LimitSettings
from .messages import NETWORK_ERRORS, relation_of

# Pillow's format names -> how people call them.
ACCEPTED = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
MIN_SIDE = 16
DOWNLOAD_SECONDS = 60.0  # nio downloads with no timeout of their own


class SourceError(Exception):
    """Why the picture cannot be used, in words for the person who asked."""


@dataclass(frozen=True)
class Source:
    url: str  # the picture's mxc:// URI
    image: Image.Image  # decoded, RGB, upright
    data: bytes  # the file as fetched


def replied_to(content: dict[str, Any]) -> str | None:
    """The event a message replies to. In a thread, clients add a reply to the thread's
    latest message marked `is_falling_back`: that is not a deliberate reply."""
    relation = relation_of(content)
    if relation.get("is_falling_back"):
        return None
    reply = relation.get("m.in_reply_to")
    event_id = reply.get("event_id") if isinstance(reply, dict) else None
    return event_id if isinstance(event_id, str) else None


async def picture_event(client: AsyncClient, room_id: str, event_id: str) -> dict[str, Any]:
    """The picture message `event_id` of this room; SourceError when it is not one."""
    try:
        response = await client.room_get_event(room_id, event_id)
    except NETWORK_ERRORS as exc:
        raise SourceError(f"The picture could not be fetched ({type(exc).__name__}); "
                          "try again in a moment.") from None
    if not isinstance(response, RoomGetEventResponse):
        raise SourceError("The message you replied to could not be found.")
    event = response.event.source
    content = event.get("content") or {}
    if event.get("type") != "m.room.message" or content.get("msgtype") != "m.image":
        raise SourceError("Reply to a picture (an image message) for that.")
    if "file" in content:
        raise SourceError("Pictures in encrypted rooms cannot be used yet.")
    if not isinstance(content.get("url"), str) or not content["url"].startswith("mxc://"):
        raise SourceError("That picture has no file the bot can fetch.")
    return event


async def fetch(client: AsyncClient, url: str, declared: int | None,
                limits: LimitSettings) -> Source:
    """Download the picture at `url` (`declared`: the size its message gives) and check it;
    SourceError says what is wrong."""
    if isinstance(declared, int) and declared > limits.max_input_bytes:
        raise _too_large(declared, limits)
    try:
        response = await asyncio.wait_for(client.download(mxc=url), DOWNLOAD_SECONDS)
    except (*NETWORK_ERRORS, asyncio.TimeoutError) as exc:
        raise SourceError(f"The picture could not be fetched ({type(exc).__name__}); "
                          "try again in a moment.") from None
    if isinstance(response, DownloadError):
        raise SourceError(f"The picture could not be fetched: {response.message}.")
    data = response.body
    if len(data) > limits.max_input_bytes:
        raise _too_large(len(data), limits)
    image = await asyncio.to_thread(decode, data, limits)
    return Source(url, image, data)


def _too_large(size: int, limits: LimitSettings) -> SourceError:
    return SourceError(f"The picture is {_mib(size)}; the limit is "
                       f"{_mib(limits.max_input_bytes)}.")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def decode(data: bytes, limits: LimitSettings) -> Image.Image:
    """The picture in `data` as an upright RGB image; SourceError for anything else.

    The size is checked from the header, before any pixel is decoded, so a small file that
    claims to be enormous (a decompression bomb) costs nothing."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise SourceError(f"That picture is over the limit of {limits.max_input_pixels:,} "
                          "pixels.") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise SourceError("That file is not a picture the bot can read; send a PNG, JPEG "
                          "or WebP.") from None
    if image.format not in ACCEPTED:
        raise SourceError(f"That picture is a {image.format}; send a PNG, JPEG or WebP.")
    width, height = image.size
    if width * height > limits.max_input_pixels:
        raise SourceError(f"That picture is {width}×{height} pixels, over the limit of "
                          f"{limits.max_input_pixels:,} pixels.")
    if min(width, height) < MIN_SIDE:
        raise SourceError(f"That picture is {width}×{height} pixels; it needs at least "
                          f"{MIN_SIDE} on each side.")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)  # phone photos are stored sideways
    except (OSError, ValueError, Image.DecompressionBombError):
        raise SourceError("That picture is damaged and cannot be read.") from None
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent parts become white, as most viewers show them.
        background = Image.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")
