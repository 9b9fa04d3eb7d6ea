"""Automatic contrast and sharpness: the "improve" step of the showcase, with Pillow alone.

Deterministic (no randomness, no model), and mild on purpose: a picture that was already
good must not come back with blown highlights, colour casts or halos."""

from __future__ import annotations

from PIL import Image, ImageFilter, ImageOps

# Ignore the darkest and brightest 0.5 % of pixels when finding the range to stretch: a few
# specular highlights or black borders would otherwise stop the stretch, and clipping more
# than that flattens real highlights.
CUTOFF = 0.5
# Unsharp mask: a 2-pixel radius sharpens detail at the scale of 512–1024 pixel pictures
# and their upscales without thickening outlines; 60 % (Pillow's default is 150) stays
# below visible halos; the threshold of 3 levels leaves flat areas (sky, skin, noise and
# JPEG blocks in a source picture) alone.
RADIUS, PERCENT, THRESHOLD = 2, 60, 3


def enhance(image: Image.Image) -> Image.Image:
    """The picture with its contrast stretched and its detail sharpened, in RGB."""
    rgb = image.convert("RGB")
    # preserve_tone stretches all three channels by the same amount (found on the
    # luminance), so contrast grows and the colours stay as they were; per channel it would
    # also "correct" the white balance of, say, a sunset.
    stretched = ImageOps.autocontrast(rgb, cutoff=CUTOFF, preserve_tone=True)
    return stretched.filter(ImageFilter.UnsharpMask(RADIUS, PERCENT, THRESHOLD))
