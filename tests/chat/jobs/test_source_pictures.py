"""An edit's thread picture (bot.chat.jobs.source_pictures.thread_references) against a fake
homeserver that keeps events and files: what the person is told when the thread's first
picture is gone, and that an edit of the bot's own edit does not get that picture twice."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from nio import RoomGetEventError, RoomGetEventResponse
from PIL import Image

from bot.chat.jobs.source_pictures import thread_references
from bot.config import LimitSettings
from bot.matrix.sources import SourceError

LIMITS = LimitSettings()


class Response:
    def __init__(self, data: bytes | None):
        self.status = 200 if data is not None else 404
        self.content_length = len(data or b"")
        self.content = SimpleNamespace(iter_chunked=lambda size: self._chunks(data or b""))

    @staticmethod
    async def _chunks(data: bytes):
        yield data

    def release(self) -> None:
        pass


class Homeserver:
    """room_get_event and the v1 media download, as nio's client does them."""

    access_token = "token"

    def __init__(self, events: dict[str, dict], files: dict[str, bytes]):
        self.events, self.files = events, files
        self.downloads: list[str] = []

    async def room_get_event(self, room_id: str, event_id: str):
        if event_id not in self.events:
            return RoomGetEventError("Event not found", "M_NOT_FOUND")
        response = RoomGetEventResponse()
        response.event = SimpleNamespace(source=self.events[event_id])
        return response

    async def send(self, method: str, path: str, headers=None):
        media = path.rsplit("/", 1)[1]
        self.downloads.append(media)
        return Response(self.files.get(media))


def picture(url: str) -> dict:
    return {
        "type": "m.room.message",
        "sender": "@alice:hs",
        "content": {"msgtype": "m.image", "body": "a.png", "url": url},
    }


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def in_thread(root: str, reply: str) -> dict:
    return {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": False,
            "m.in_reply_to": {"event_id": reply},
        }
    }


async def test_a_thread_whose_first_message_is_gone_names_that_picture():
    server = Homeserver({"$b": picture("mxc://hs/b")}, {"b": png()})
    with pytest.raises(SourceError) as info:
        await thread_references(server, "!room:hs", in_thread("$gone", "$b"), "$b", 3, LIMITS)
    assert str(info.value) == "The thread's first picture could not be found."


async def test_an_edit_of_the_bots_own_edit_does_not_take_the_first_picture_again():
    server = Homeserver(
        {"$a": picture("mxc://hs/a"), "$c": picture("mxc://hs/c")}, {"a": png(), "c": png()}
    )
    content = in_thread("$a", "$c")
    # $c is the bot's edit of another picture, made with $a as its reference.
    again = await thread_references(
        server, "!room:hs", content, "$c", 3, LIMITS, made_from=("mxc://hs/b", "mxc://hs/a")
    )
    assert again == [] and server.downloads == []
    # The bot's picture made from something else still gets the thread's first picture.
    (reference,) = await thread_references(
        server, "!room:hs", content, "$c", 3, LIMITS, made_from=("mxc://hs/b",)
    )
    assert reference.url == "mxc://hs/a" and reference.image.size == (32, 32)
