"""An imperceptible watermark in the pixels (invisible-watermark's dwtDctSvd, 48 bits).

Metadata is lost whenever someone takes a screenshot or a tool strips it; a watermark in
the pixels survives a screenshot and most JPEG re-encoding, which is why the code of
practice asks for both. dwtDctSvd is the method Stable Diffusion's reference scripts use: a few
grey levels in the U channel of the DWT, at about 0.4 s a 1024² picture on one CPU core.
The 48 bits are `PAYLOAD`. JPEG re-encoding flips a few of them (at quality 85, up to 6
in our measurements), so a picture carries the watermark when at most `MAX_WRONG` bits
differ. Reading a picture that has none gives about 24 wrong bits (random bits); 6 or fewer
by chance is about 1 in 20 million.

invisible-watermark asks for `opencv-python`, which must not be installed beside
`opencv-python-headless` (the two overwrite each other's `cv2`) and needs libGL, which a
server may lack. It only needs the `cv2` module, which the headless build provides, so it is
installed with `pip install --no-deps invisible-watermark` (see the README). Its package
also imports torch (for a method we do not use), which the GPU world has anyway.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import ComplianceError

PAYLOAD = b"imgbot"  # 48 bits
BITS = len(PAYLOAD) * 8
METHOD = "dwtDctSvd"
MIN_PIXELS = 256 * 256  # below this the library refuses (too few blocks to carry 48 bits)
MAX_WRONG = 6


def wrong_bits(found: bytes, payload: bytes = PAYLOAD) -> int:
    """How many of the 48 bits read differ from the payload."""
    return sum(bin(a ^ b).count("1") for a, b in zip(found, payload))


class WatermarkUnavailable(ComplianceError):
    """invisible-watermark (or cv2) is not installed."""


def _library():
    try:
        import cv2
        from imwatermark import WatermarkDecoder, WatermarkEncoder
    except ImportError as exc:
        raise WatermarkUnavailable(
            f"compliance.watermark needs invisible-watermark and opencv-python-headless "
            f"({exc}); install them as the README's Compliance section says"
        ) from None
    return cv2, WatermarkEncoder, WatermarkDecoder


def available() -> str | None:
    """None when watermarks can be written and read, else why not."""
    try:
        _library()
    except WatermarkUnavailable as exc:
        return str(exc)
    return None


def embed(image: Image.Image, payload: bytes = PAYLOAD) -> Image.Image:
    """The picture with `payload` in its pixels; a picture too small to carry it is
    returned as it is (the caller's metadata still marks it)."""
    if image.width * image.height < MIN_PIXELS:
        return image
    cv2, encoder_class, _ = _library()
    encoder = encoder_class()
    encoder.set_watermark("bytes", payload)
    bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    marked = encoder.encode(bgr, METHOD)
    return Image.fromarray(cv2.cvtColor(marked, cv2.COLOR_BGR2RGB))


def read(image: Image.Image) -> bytes | None:
    """The 48 bits found in the picture (random for one without a watermark), or None when
    the picture is too small to carry them."""
    if image.width * image.height < MIN_PIXELS:
        return None
    cv2, _, decoder_class = _library()
    bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    return decoder_class("bytes", BITS).decode(bgr, METHOD)
