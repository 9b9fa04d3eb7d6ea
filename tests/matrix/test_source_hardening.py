"""A picture someone replies to is a stranger's bytes at a stranger's address: only the
accepted formats' decoders read it, and an mxc:// URI outside the spec's grammar never
becomes a request to the homeserver."""

from __future__ import annotations

import io

import pytest
from PIL import BmpImagePlugin, EpsImagePlugin, GifImagePlugin, Image, TiffImagePlugin

from bot.config import LimitSettings
from bot.matrix import sources
from bot.matrix.sources import SourceError, decode, fetch, locator

LIMITS = LimitSettings()


def saved(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt,plugin,named",
    [
        ("TIFF", TiffImagePlugin.TiffImageFile, "TIFF"),
        # its pixels would come from Ghostscript
        ("EPS", EpsImagePlugin.EpsImageFile, "PostScript (EPS)"),
        ("BMP", BmpImagePlugin.BmpImageFile, "BMP"),
        ("GIF", GifImagePlugin.GifImageFile, "GIF"),
    ],
)
def test_a_valid_file_of_another_format_is_refused_unread(fmt, plugin, named, monkeypatch):
    data = saved(fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # a valid file of that format
    parsed = []
    monkeypatch.setattr(plugin, "_open", lambda self: parsed.append(fmt))
    with pytest.raises(SourceError) as refused:
        decode(data, LIMITS)
    # named from its first bytes, so that the person knows what to send instead
    assert str(refused.value) == f"That picture is a {named}; send a PNG, JPEG or WebP."
    assert not parsed  # that format's parser never saw the stranger's bytes


def test_a_phone_camera_s_jpeg_with_more_images_inside_is_still_read():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(
        buffer, format="MPO", save_all=True, append_images=[Image.new("RGB", (32, 32))]
    )
    assert decode(buffer.getvalue(), LIMITS).getpixel((0, 0)) == (254, 0, 0)


class Homeserver:
    """The client's one way to the homeserver in `fetch`, recording each request."""

    def __init__(self):
        self.requests = []

    async def send(self, method, path, **kwargs):
        self.requests.append((method, path))
        raise AssertionError(f"a request was made: {method} {path}")


BAD = [
    "mxc://../config",  # climbs to /_matrix/client/v1/media/config
    "mxc://example.org/..",
    "mxc://example.org/../../_synapse/admin",
    "mxc://example.org/abc%2F..%2F..",
    "mxc://example.org/abc?allow_redirect=true",
    "mxc://exa mple.org/abc",
    "mxc://example.org:123456/abc",
    "mxc://a..b/abc",
    "mxc:///abc",
    "mxc://example.org/",
    "https://example.org/abc",
]


@pytest.mark.parametrize("url", BAD)
async def test_an_mxc_uri_outside_the_grammar_is_refused_without_a_request(url):
    server = Homeserver()
    with pytest.raises(SourceError, match="no file the bot can fetch"):
        await fetch(server, url, None, LIMITS)
    with pytest.raises(SourceError, match="no file the bot can fetch"):
        locator({"url": url})
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "mxc://example.org/AbC_12-x",
        "mxc://1.2.3.4:8448/m",
        "mxc://[2001:db8::1]:8448/m",
        "mxc://localhost/m",
    ],
)
def test_the_spec_s_addresses_are_taken(url):
    assert locator({"url": url}) == url
    server, media_id = sources.media_address(url)
    assert url == f"mxc://{server}/{media_id}"


@pytest.mark.synapse
async def test_in_chat_a_tiff_and_a_climbing_mxc_uri_get_a_clear_notice(
    make_settings, engine, alice
):
    from tests.helpers.chatting import bot_running

    async with bot_running(make_settings(), engine):
        room = await alice.room_with("@imgbot:localhost")
        tiff = await alice.send_picture(room, saved("TIFF"), "image/tiff", 32, 32, body="scan.tiff")
        asked = await alice.reply(room, tiff, "!img a watercolour --strength 0.5")
        (refused,) = await alice.wait_reply(room, asked, "m.notice")
        climbing = await alice.send(
            room,
            "photo.png",
            msgtype="m.image",
            url="mxc://../config",
            info={"mimetype": "image/png"},
        )
        asked = await alice.reply(room, climbing, "!img a watercolour --strength 0.5")
        (nowhere,) = await alice.wait_reply(room, asked, "m.notice")
    assert "That picture is a TIFF; send a PNG, JPEG or WebP." in refused["content"]["body"]
    assert "That picture has no file the bot can fetch." in nowhere["content"]["body"]
    assert not alice.replies(room, asked, "m.image")
