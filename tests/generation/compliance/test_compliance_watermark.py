"""The invisible watermark: written before the metadata, read back by `imgbot verify`,
surviving a JPEG re-encoding."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image, ImageChops, ImageStat

pytest.importorskip("imwatermark")  # installed with --no-deps (README's test command)

from bot.cli import main  # noqa: E402
from generation.compliance import Compliance  # noqa: E402
from generation.compliance.watermark import (  # noqa: E402
    MAX_WRONG,
    PAYLOAD,
    embed,
    read,
    wrong_bits,
)
from generation.postprocess.png import encode_png  # noqa: E402
from tests.generation.compliance.test_compliance_copy import scene  # noqa: E402


def test_watermark_is_invisible_and_read_back():
    image = scene(20, 1024)
    started = time.perf_counter()
    marked = embed(image)
    seconds = time.perf_counter() - started
    print(f"watermark at 1024²: {seconds * 1000:.0f} ms")
    assert marked.size == image.size and marked.mode == "RGB"
    assert max(ImageStat.Stat(ImageChops.difference(image, marked)).mean) < 3
    assert read(marked) == PAYLOAD
    assert read(image) != PAYLOAD
    buffer = io.BytesIO()
    marked.save(buffer, format="JPEG", quality=85)
    assert wrong_bits(read(Image.open(io.BytesIO(buffer.getvalue())))) <= MAX_WRONG


def test_jpeg_copies_keep_it_and_unmarked_pictures_never_show_it():
    # The README's figures, in small: a few bits flip in a JPEG copy, about half in a
    # picture that never had the watermark.
    for seed in range(3):
        buffer = io.BytesIO()
        embed(scene(seed, 512)).save(buffer, format="JPEG", quality=85)
        assert wrong_bits(read(Image.open(io.BytesIO(buffer.getvalue())))) <= MAX_WRONG
    for seed in range(100, 110):
        assert wrong_bits(read(scene(seed, 512))) > MAX_WRONG + 6


def test_small_pictures_are_left_as_they_are():
    small = scene(21, 128)
    assert embed(small) is small and read(small) is None


def test_screen_watermarks_what_is_sent_and_verify_reports_it(tmp_path, capsys):
    verdict = Compliance(watermark=True).screen(scene(22, 512))
    assert verdict.action == "send" and "watermark" in verdict.record["ms"]
    path = tmp_path / "marked.png"
    path.write_bytes(encode_png(verdict.image, {"seed": 1}))
    assert main(["verify", str(path)]) == 0
    assert f"watermark: {PAYLOAD.hex()} (imgbot)" in capsys.readouterr().out
    plain = tmp_path / "plain.png"
    plain.write_bytes(encode_png(scene(22, 512), {"seed": 1}))
    assert main(["verify", str(plain)]) == 0
    assert "watermark: none\n" in capsys.readouterr().out
