"""The messages between the bot and its bridge process: pickled values, each after its
length, over the bridge's stdin and a copy of its stdout (Ray's own noise goes to stderr).
Both ends are the same imgbot, so pickle is safe here: nothing else writes to these pipes."""

from __future__ import annotations

import pickle
import struct
import threading
from typing import Any, BinaryIO

_HEADER = struct.Struct("!I")


class Channel:
    """One end's writing side; several threads may send."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self._lock = threading.Lock()

    def send(self, message: Any) -> bool:
        """Write one message; False when the other end is gone."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            with self._lock:
                self.stream.write(_HEADER.pack(len(data)) + data)
                self.stream.flush()
        except (BrokenPipeError, OSError, ValueError):  # ValueError: the stream is closed
            return False
        return True


def receive(stream: BinaryIO) -> Any | None:
    """The next message, or None when the other end closed its side."""
    header = _exactly(stream, _HEADER.size)
    if header is None:
        return None
    data = _exactly(stream, _HEADER.unpack(header)[0])
    return None if data is None else pickle.loads(data)


def _exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
