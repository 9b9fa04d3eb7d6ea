"""PNG encoding with the generation parameters embedded, so a picture documents itself."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image, PngImagePlugin


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
    ]
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v not in (None, "")))
    return "\n".join(lines)


def encode_png(image: Image.Image, params: dict[str, Any]) -> bytes:
    """Encode as PNG with `parameters` (human-readable) and `imgbot` (JSON) text chunks."""
    info = PngImagePlugin.PngInfo()
    # iTXt keeps any prompt language intact; tEXt would be Latin-1 only.
    info.add_itxt("parameters", parameters_text(params))
    info.add_itxt("imgbot", json.dumps(params, ensure_ascii=False, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def read_parameters(data: bytes) -> dict[str, Any]:
    """The `imgbot` parameters of a PNG this module wrote; {} when there are none."""
    with Image.open(io.BytesIO(data)) as image:
        text = image.text.get("imgbot") if hasattr(image, "text") else None
    return json.loads(text) if text else {}


# Larger pictures get a thumbnail: what a chat client shows in the timeline, and all that a
# phone on a slow link has to fetch before the person decides to open the picture.
THUMBNAIL_SIDE = 640


def encode_thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> tuple[bytes, int, int] | None:
    """A JPEG at most `side` pixels wide and high, or None when the picture is that small."""
    if max(image.size) <= side:
        return None
    thumb = image.convert("RGB")
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue(), thumb.width, thumb.height
