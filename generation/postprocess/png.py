"""PNG encoding with the generation parameters embedded, so a picture documents itself.

Every picture also carries the IPTC digital source type marker in XMP (see
`generation.compliance.marking`; "made by a trained model" unless the picture's claim says
otherwise), in PNG and JPEG alike; a `sign` step, when given, is the very last thing done to
the encoded bytes (a C2PA signature covers everything before it).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from PIL import Image, PngImagePlugin

from ..compliance.marking import TRAINED_ALGORITHMIC_MEDIA, XMP_KEY, xmp_packet

# Signs encoded bytes of a mimetype and returns the signed bytes (a C2PA manifest added).
Sign = Callable[[bytes, str], bytes]


def parameters_text(params: dict[str, Any]) -> str:
    """The parameters in the "parameters" text layout that A1111-style tools read."""
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields = [
        ("Steps", params.get("steps")),
        ("Seed", params.get("seed")),
        ("Size", params.get("size")),
        ("CFG scale", params.get("guidance")),
        ("Model", params.get("model")),
        ("Style", params.get("style")),
        # Only in the parameters of img2img, upscale and enhanced pictures (Job.parameters).
        ("Denoising strength", params.get("strength")),
        ("Upscale", f"{params['upscale']}x" if params.get("upscale") else None),
        ("Enhance", "on" if params.get("enhance") else None),
    ]
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v not in (None, "")))
    return "\n".join(lines)


def encode_png(
    image: Image.Image,
    params: dict[str, Any],
    sign: Sign | None = None,
    source_type: str | None = TRAINED_ALGORITHMIC_MEDIA,
) -> bytes:
    """Encode as PNG with `parameters` (human-readable) and `imgbot` (JSON) text chunks and
    the XMP marker of `source_type` (None: none); signed last when `sign` is given."""
    info = PngImagePlugin.PngInfo()
    # The XMP specification's place in a PNG: an uncompressed iTXt chunk with this keyword.
    info.add_itxt(XMP_KEY, xmp_packet(source_type))
    # iTXt keeps any prompt language intact; tEXt would be Latin-1 only.
    info.add_itxt("parameters", parameters_text(params))
    info.add_itxt("imgbot", json.dumps(params, ensure_ascii=False, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return sign(buffer.getvalue(), "image/png") if sign else buffer.getvalue()


def read_parameters(data: bytes) -> dict[str, Any]:
    """The `imgbot` parameters of a PNG this module wrote; {} when there are none."""
    with Image.open(io.BytesIO(data)) as image:
        text = image.text.get("imgbot") if hasattr(image, "text") else None
    return json.loads(text) if text else {}


# Larger pictures get a thumbnail: what a chat client shows in the timeline, and all that a
# phone on a slow link has to fetch before the person decides to open the picture.
THUMBNAIL_SIDE = 640


def encode_thumbnail(
    image: Image.Image,
    side: int = THUMBNAIL_SIDE,
    source_type: str | None = TRAINED_ALGORITHMIC_MEDIA,
) -> tuple[bytes, int, int] | None:
    """A JPEG at most `side` pixels wide and high, or None when the picture is that small."""
    if max(image.size) <= side:
        return None
    thumb = image.convert("RGB")
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85, xmp=xmp_packet(source_type).encode("utf-8"))
    return buffer.getvalue(), thumb.width, thumb.height


@dataclass(frozen=True)
class Encoded:
    """A picture encoded for upload, and what was done to fit the server's limit."""

    data: bytes
    mimetype: str
    width: int
    height: int
    note: str | None = None  # None: the PNG as made


def _size_words(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.0f} KiB"


def _jpeg(
    image: Image.Image, comment: str, quality: int, sign: Sign | None, source_type: str | None
) -> bytes:
    buffer = io.BytesIO()
    # The parameters travel in the JPEG comment, as they do in the PNG's text chunk.
    image.save(
        buffer,
        format="JPEG",
        quality=quality,
        comment=comment.encode("utf-8"),
        xmp=xmp_packet(source_type).encode("utf-8"),
    )
    return sign(buffer.getvalue(), "image/jpeg") if sign else buffer.getvalue()


def encode_for_upload(
    image: Image.Image,
    params: dict[str, Any],
    limit: int | None = None,
    sign: Sign | None = None,
    source_type: str | None = TRAINED_ALGORITHMIC_MEDIA,
) -> Encoded | None:
    """The PNG, or when it is larger than `limit` bytes a JPEG of falling quality, then of
    falling size; None when not even a small one fits. Each is signed before its size is
    compared with the limit, so the signature's bytes count too."""
    png = encode_png(image, params, sign, source_type)
    if limit is None or len(png) <= limit:
        return Encoded(png, "image/png", image.width, image.height)
    cap = f"the server takes files up to {_size_words(limit)}"
    rgb = image.convert("RGB")
    comment = parameters_text(params)
    for quality in (92, 85, 75):
        data = _jpeg(rgb, comment, quality, sign, source_type)
        if len(data) <= limit:
            return Encoded(
                data, "image/jpeg", rgb.width, rgb.height, f"sent as JPEG, quality {quality}: {cap}"
            )
    scaled = rgb
    while min(scaled.size) > 64:
        size = (max(1, scaled.width * 3 // 4), max(1, scaled.height * 3 // 4))
        scaled = rgb.resize(size, Image.Resampling.LANCZOS)
        data = _jpeg(scaled, comment, 75, sign, source_type)
        if len(data) <= limit:
            return Encoded(
                data,
                "image/jpeg",
                scaled.width,
                scaled.height,
                f"scaled to {scaled.width}×{scaled.height} and sent as JPEG: {cap}",
            )
    return None
