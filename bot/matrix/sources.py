"""The picture a command replies to: found, fetched through the authenticated media API,
and checked before any GPU work. Everything here is untrusted input."""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from nio import AsyncClient, RoomGetEventResponse
from nio.crypto.attachments import decrypt_attachment
from PIL import Image, ImageOps, UnidentifiedImageError

from bot.config import LimitSettings
from generation.errors import ImgbotError
from bot.matrix.messages import NETWORK_ERRORS, bearer, relation_of

# Pillow's format names -> how people call them. MPO is a JPEG with extra images inside
# (phone cameras write it for HDR and depth); its first image is the picture. Only these
# decoders ever see a file from chat (`formats=` of Image.open): Pillow's others (TIFF, PSD,
# EPS through Ghostscript, and dozens more) are code no one needs to expose to strangers.
# No GIF: an animation's first frame is rarely the picture someone meant.
ACCEPTED = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}
OPENERS = ["PNG", "JPEG", "WEBP"]  # Pillow's JPEG opener gives an MPO file as MPO
FORMATS_WORDS = "a PNG, JPEG or WebP"
# The first bytes of the formats people send most that the bot does not read, so that the
# notice names what was sent without any parser of those formats seeing it.
_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"),
    (b"8BPS", "PSD"),
    (b"BM", "BMP"),
    (b"%!PS", "PostScript (EPS)"),
    (b"\xc5\xd0\xd3\xc6", "PostScript (EPS)"),
    (b"%PDF", "PDF"),
)
MIN_SIDE = 16
DOWNLOAD_SECONDS = 60.0
CHUNK = 1 << 16


class SourceError(ImgbotError):
    """Why the picture cannot be used, in words for the person who asked."""


class NotAPicture(SourceError):
    """The message replied to is there, and it is not a picture."""


class Unavailable(SourceError):
    """The picture could not be fetched now (the homeserver is away or failing); later it
    may be."""


@dataclass(frozen=True)
class Source:
    url: str  # the picture's locator (see `locator`)
    image: Image.Image  # decoded, RGB, upright
    data: bytes  # the file as fetched


def replied_to(content: dict[str, Any], thread_root: bool = False) -> str | None:
    """The event a message replies to. In a thread, clients add a reply to the thread's
    latest message marked `is_falling_back`: that is not a deliberate reply; with
    `thread_root`, the thread's first message stands in for it (a thread started on a
    picture is about that picture)."""
    relation = relation_of(content)
    if relation.get("is_falling_back"):
        root = relation.get("event_id") if relation.get("rel_type") == "m.thread" else None
        return root if thread_root and isinstance(root, str) else None
    reply = relation.get("m.in_reply_to")
    event_id = reply.get("event_id") if isinstance(reply, dict) else None
    return event_id if isinstance(event_id, str) else None


async def picture_event(client: AsyncClient, room_id: str, event_id: str) -> dict[str, Any]:
    """The picture message `event_id` of this room; SourceError when it is not one."""
    try:
        response = await client.room_get_event(room_id, event_id)
    except NETWORK_ERRORS as exc:
        raise _unavailable(exc) from None
    if not isinstance(response, RoomGetEventResponse):
        raise SourceError("The message you replied to could not be found.")
    event = response.event.source  # decrypted by nio, in an encrypted room
    content = event.get("content") or {}
    if event.get("type") == "m.room.encrypted":
        raise SourceError(
            "The message you replied to could not be decrypted: this bot's "
            "device did not get its room key."
        )
    if event.get("type") != "m.room.message" or content.get("msgtype") != "m.image":
        raise NotAPicture("Reply to a picture (an image message) for that.")
    locator(content)  # a picture without a usable file says so now
    return event


# The Matrix spec's grammar (appendices, "Server name"; content repository, "Matrix Content
# URIs"): hostname (IPv4, [IPv6] or DNS name) with an optional port, and a media ID of
# [A-Za-z0-9_-]. A DNS name here has no empty label, so neither "." nor ".." is one: a URI
# like mxc://../config would otherwise climb out of the download path.
_SERVER_NAME = re.compile(
    r"""
    (?: \d{1,3} (?: \.\d{1,3} ){3}                      # IPv4
      | \[ [0-9A-Fa-f:.]{2,45} \]                        # [IPv6]
      | (?=[A-Za-z0-9.-]{1,255}(?::|$))                 # a DNS name, at most 255 long,
        [A-Za-z0-9-]+ (?: \.[A-Za-z0-9-]+ )* )          # made of non-empty labels
    (?: :\d{1,5} )?                                    # the port
    """,
    re.VERBOSE,
)
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]+")


def media_address(url: str) -> tuple[str, str]:
    """(server name, media ID) of an mxc:// URI, each checked against the spec's grammar
    before any URL is made from them; SourceError when the URI breaks it."""
    server, _, media_id = url.removeprefix("mxc://").partition("/")
    if (
        not url.startswith("mxc://")
        or not _SERVER_NAME.fullmatch(server)
        or not _MEDIA_ID.fullmatch(media_id)
    ):
        raise SourceError("That picture has no file the bot can fetch.")
    return server, media_id


def locator(content: dict[str, Any]) -> str:
    """Where a picture message's file is: its mxc:// URI, and for an encrypted file (an
    EncryptedFile in `file`) the key, iv and hash after a "#", which `fetch` needs to
    check and decrypt it."""
    file = content.get("file")
    if isinstance(file, dict):
        url = file.get("url")
        key, hashes = file.get("key"), file.get("hashes")  # any shape: untrusted input
        parts = {
            "key": key.get("k") if isinstance(key, dict) else None,
            "iv": file.get("iv"),
            "sha256": hashes.get("sha256") if isinstance(hashes, dict) else None,
        }
        if isinstance(url, str) and all(isinstance(v, str) and v for v in parts.values()):
            media_address(url)
            return f"{url}#{urlencode(parts)}"
    elif isinstance(content.get("url"), str):
        media_address(content["url"])
        return content["url"]
    raise SourceError("That picture has no file the bot can fetch.")


async def fetch(
    client: AsyncClient, url: str, declared: int | None, limits: LimitSettings
) -> Source:
    """Download the picture at `url` (`declared`: the size its message gives) and check it;
    SourceError says what is wrong."""
    if isinstance(declared, int) and declared > limits.max_input_bytes:
        raise _too_large(declared, limits)
    address, _, keys = url.partition("#")
    try:
        data = await asyncio.wait_for(_download(client, address, limits), DOWNLOAD_SECONDS)
    except (*NETWORK_ERRORS, asyncio.TimeoutError) as exc:
        raise _unavailable(exc) from None
    if keys:
        data = _decrypted(data, keys)
    image = await asyncio.to_thread(decode, data, limits)
    return Source(url, image, data)


def _decrypted(data: bytes, keys: str) -> bytes:
    fields = {name: values[0] for name, values in parse_qs(keys).items()}
    try:
        return decrypt_attachment(data, fields["key"], fields["sha256"], fields["iv"])
    except KeyError:
        raise SourceError("That picture has no file the bot can fetch.") from None
    except Exception as exc:  # nio's EncryptionError: the hash does not match, or a bad key
        raise SourceError(
            f"The picture's file does not match its message, so it was not used ({exc})."
        ) from None


async def _download(client: AsyncClient, url: str, limits: LimitSettings) -> bytes:
    """The file, read in chunks and abandoned past the limit: a message may declare a small
    size for a huge file, and nio's own download would read all of it into memory."""
    server, media_id = media_address(url)  # also a URL kept from before this check
    response = await client.send(
        "GET",
        f"/_matrix/client/v1/media/download/{quote(server)}/{quote(media_id)}",
        headers=bearer(client),
    )
    try:
        if response.status >= 500:
            raise Unavailable(
                f"The picture could not be fetched (the homeserver answered "
                f"{response.status}); try again in a moment."
            )
        if response.status != 200:
            raise SourceError(
                f"The picture could not be fetched (the homeserver answered {response.status})."
            )
        if (response.content_length or 0) > limits.max_input_bytes:
            raise _too_large(response.content_length, limits)
        data = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK):
            data += chunk
            if len(data) > limits.max_input_bytes:
                raise SourceError(
                    f"The picture is over the limit of {_mib(limits.max_input_bytes)}."
                )
        return bytes(data)
    finally:
        response.release()


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(
        f"The picture could not be fetched ({type(exc).__name__}); try again in a moment."
    )


def _too_large(size: int, limits: LimitSettings) -> SourceError:
    return SourceError(
        f"The picture is {_mib(size)}, over the limit of {_mib(limits.max_input_bytes)}."
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def decode(data: bytes, limits: LimitSettings) -> Image.Image:
    """The picture in `data` as an upright RGB image; SourceError for anything else.

    The size is checked from the header, before any pixel is decoded, so a small file that
    claims to be enormous (a decompression bomb) costs nothing."""
    try:
        image = Image.open(io.BytesIO(data), formats=OPENERS)
    except Image.DecompressionBombError:
        raise SourceError(
            f"That picture is over the limit of {limits.max_input_pixels:,} pixels."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        named = next((name for start, name in _SIGNATURES if data.startswith(start)), None)
        if named is not None and named != "PDF":
            raise SourceError(f"That picture is a {named}; send {FORMATS_WORDS}.") from None
        raise SourceError(
            f"That file is not a picture the bot can read; send {FORMATS_WORDS}."
        ) from None
    if image.format not in ACCEPTED:  # a plugin that answers for another format
        raise SourceError(f"That picture is a {image.format}; send {FORMATS_WORDS}.")
    width, height = image.size
    if width * height > limits.max_input_pixels:
        raise SourceError(
            f"That picture is {width}×{height} pixels, over the limit of "
            f"{limits.max_input_pixels:,} pixels."
        )
    if min(width, height) < MIN_SIDE:
        raise SourceError(
            f"That picture is {width}×{height} pixels; it needs at least {MIN_SIDE} on each side."
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)  # phone photos are stored sideways
    except Exception:  # noqa: BLE001 - a damaged file raises whatever its decoder raises
        raise SourceError("That picture is damaged and cannot be read.") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scaled to 8 bits, or "RGB" would clip it to white.
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent parts become white, as most viewers show them.
        background = Image.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")
