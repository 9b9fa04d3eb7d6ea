"""The frames between the bot and its bridge process, over the bridge's stdin and a copy of
its stdout (spawned), or over one Unix socket (the bridge as its own user, socket mode).

A frame is a JSON header (a dict with a "kind", see `messages`) and raw binary parts (PNG
bytes), each after its length, all sizes checked before anything is read into memory. Never
pickle: the bridge is the Ray driver, and whatever a cluster member makes its workers return
is unpickled there, so a frame from the bridge is data to check, never code to run.

Wire: !III (header length, number of parts, total length of the parts), the header (UTF-8
JSON), then each part as !I (its length) and its bytes.
"""

from __future__ import annotations

import json
import struct
import threading
from typing import BinaryIO

from ..errors import ClusterError

_START = struct.Struct("!III")
_PART = struct.Struct("!I")

MAX_HEADER = 4 * 1024 * 1024  # the JSON: jobs' records, a survey, a log line
MAX_PARTS = 1024  # pictures (and source pictures) in one frame
# One picture: PNG, uncompressed on the worker (actor._png), so about 3 bytes a pixel; a
# 8192x8192 upscale (limits.max_upscaled_pixels at its default) is 192 MiB.
MAX_PART = 320 * 1024 * 1024
# Every part of one frame together. The bot allows a frame from the bridge only what the
# batch it answers can need (`Admit`); this is the bound for everything else.
MAX_TOTAL = 512 * 1024 * 1024
READ_CHUNK = 1024 * 1024


class FrameError(ClusterError):
    """What came is not a frame this side accepts; the connection ends (the words say why)."""


class Channel:
    """One end's writing side; several threads may send. With a `limit`, a frame that the
    other end has not taken within that many seconds (it stopped reading) calls `stuck`,
    which ends the connection, so that the send fails rather than blocks for ever."""

    def __init__(self, stream: BinaryIO, limit: float | None = None, stuck=None):
        self.stream = stream
        self.limit, self.stuck = limit, stuck
        self._lock = threading.Lock()

    def send(self, header: dict, parts: list[bytes] | tuple = ()) -> bool:
        """Write one frame; False when the other end is gone."""
        data = encode(header, parts)
        watch = None
        try:
            with self._lock:
                if self.limit is not None:
                    watch = threading.Timer(self.limit, self.stuck)
                    watch.daemon = True
                    watch.start()
                self.stream.write(data)
                self.stream.flush()
        except (BrokenPipeError, OSError, ValueError):  # ValueError: the stream is closed
            return False
        finally:
            if watch is not None:
                watch.cancel()
        return True


def encode(header: dict, parts: list[bytes] | tuple = ()) -> bytes:
    """One frame's bytes; FrameError when it is over the limits (a bug of this side)."""
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    _check_sizes(len(text), len(parts), sum(len(part) for part in parts))
    if any(len(part) > MAX_PART for part in parts):
        raise FrameError(f"a part of a {header.get('kind')!r} frame is over {MAX_PART} bytes")
    pieces = [_START.pack(len(text), len(parts), sum(len(part) for part in parts)), text]
    for part in parts:
        pieces += [_PART.pack(len(part)), bytes(part)]
    return b"".join(pieces)


def receive(stream: BinaryIO, admit=None) -> tuple[dict, list[bytearray]] | None:
    """The next frame (its header and its parts), or None when the other end closed its
    side. FrameError when what came is not a frame within the limits: the caller ends the
    connection. `admit(header, count, total)`, when given, is asked after the header and
    before any part is read; it raises FrameError for parts this side does not wait for,
    so that a frame announcing more is never read, nor room made for it."""
    start = _exactly(stream, _START.size)
    if start is None:
        return None
    header_size, count, total = _START.unpack(start)
    _check_sizes(header_size, count, total)
    text = _exactly(stream, header_size)
    if text is None:
        return None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FrameError("a frame's header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise FrameError("a frame's header is not a dict with a kind")
    if admit is not None:
        admit(header, count, total)
    parts, left = [], total
    for _ in range(count):
        size = _exactly(stream, _PART.size)
        if size is None:
            return None
        (length,) = _PART.unpack(size)
        if length > MAX_PART or length > left:
            raise FrameError(
                f"a part of {length} bytes is over the limit "
                f"({min(MAX_PART, left)} bytes left for it)"
            )
        left -= length
        part = _exactly(stream, length)
        if part is None:
            return None
        parts.append(part)
    if left:
        raise FrameError("a frame's parts are shorter than it said")
    return header, parts


def _check_sizes(header: int, count: int, total: int) -> None:
    if header > MAX_HEADER:
        raise FrameError(f"a frame's header of {header} bytes is over {MAX_HEADER}")
    if count > MAX_PARTS:
        raise FrameError(f"a frame of {count} parts is over {MAX_PARTS}")
    if total > MAX_TOTAL:
        raise FrameError(f"a frame of {total} bytes of parts is over {MAX_TOTAL}")


def _exactly(stream: BinaryIO, size: int) -> bytearray | None:
    """`size` bytes read into one buffer made for them (no chunks joined: that would
    need twice the memory); None when the stream ends first."""
    data = bytearray(size)
    view, done = memoryview(data), 0
    while done < size:
        got = stream.readinto(view[done : done + READ_CHUNK])
        if not got:
            return None
        done += got
    view.release()
    return data
