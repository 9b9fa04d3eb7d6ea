"""Decoding a picture someone posted: untrusted bytes in, an upright RGB picture or a
clear reason out."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.config import LimitSettings
from bot.chat.jobs.iterate import source_size
from bot.chat.jobs.source_pictures import fitted
from bot.matrix.sources import SourceError, decode, replied_to
from tests.chat.jobs.test_iterate_matrix import claims_to_be, encoded

LIMITS = LimitSettings()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_the_three_formats_are_read(fmt):
    image = decode(encoded(Image.new("RGB", (40, 30), "red"), fmt), LIMITS)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_transparency_becomes_white():
    clear = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    assert decode(encoded(clear, "PNG"), LIMITS).getpixel((5, 5)) == (255, 255, 255)


def test_a_phone_photo_stored_sideways_is_turned_upright():
    photo = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif)
    assert decode(buffer.getvalue(), LIMITS).size == (20, 40)


@pytest.mark.parametrize(
    "data,words",
    [
        (b"GIF89a" + b"\x00" * 40, "send a PNG, JPEG or WebP"),
        (b"not a picture", "not a picture the bot can read"),
        (claims_to_be(5000, 5000), "over the limit of 16,777,216 pixels"),
        (claims_to_be(8, 8), "needs at least 16 on each side"),
        (encoded(Image.new("RGB", (64, 64)), "PNG")[:60], "damaged"),
    ],
)
def test_what_cannot_be_used_is_named(data, words):
    with pytest.raises(SourceError, match=words):
        decode(data, LIMITS)


def test_replies_but_not_thread_fallbacks():
    assert replied_to({"m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}) == "$a"
    assert (
        replied_to(
            {
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": "$root",
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": "$last"},
                }
            }
        )
        is None
    )
    assert replied_to({"m.relates_to": "nonsense"}) is None


def test_a_source_keeps_its_shape_within_the_models_size():
    wide = Image.new("RGB", (1200, 400))
    width, height = source_size(wide, (512, 512), 2_359_296)  # 3:1, clamped to 21:9
    assert width % 64 == 0 and height % 64 == 0
    assert width / height == pytest.approx(21 / 9, rel=0.05)
    assert width * height == pytest.approx(512 * 512, rel=0.1)
    assert fitted(wide, 128, 64).size == (128, 64)


def test_sixteen_bit_greyscale_keeps_its_tones():
    grey = Image.new("I;16", (20, 20), 32768)  # half of 65535
    assert decode(encoded(grey, "PNG"), LIMITS).getpixel((1, 1)) == (128, 128, 128)
