"""The optional descriptor tier of the copy check: a local copy-detection model.

Perceptual hashes miss crops and heavy edits; a copy-detection descriptor (e.g. Meta's
SSCD, a TorchScript file, 512 numbers a picture) sees them. A cosine similarity of at least
`MATCH` to a reference is a match; from `REVIEW` to `MATCH` the verdict is "review": logged,
not acted on. The model is a file the operator downloaded on purpose, with its SHA-256 in
the config, checked before it is loaded (a TorchScript file is code); nothing is ever
downloaded here. Mind the model's licence: SSCD's weights are CC-BY-NC (non-commercial).

The input is what SSCD expects: the picture resized to 288 pixels on its shorter side,
ImageNet's mean and deviation; the output is L2-normalised here, whatever the model does.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ComplianceError

log = logging.getLogger(__name__)

MATCH = 0.75
REVIEW = 0.5
SIDE = 288
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class DescriptorError(ComplianceError):
    """The model file is missing, is not the one configured, or cannot be loaded."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Near:
    name: str
    cosine: float
    verdict: str  # match, review or clear

    def record(self) -> dict:
        return {"reference": self.name, "cosine": round(self.cosine, 4), "verdict": self.verdict}


class Descriptor:
    def __init__(self, model, names: list[str], vectors: list[np.ndarray]):
        self._model = model
        self._names = names
        self._vectors = np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)

    @classmethod
    def load(cls, path: Path, sha256: str, index) -> Descriptor:
        """The checked model, with the descriptors of the indexed references (`index`)."""
        import torch

        path = Path(path).expanduser()
        try:
            found = file_sha256(path)
        except OSError as exc:
            raise DescriptorError(f"cannot read {path}: {exc.strerror}") from None
        if found != sha256.lower():
            raise DescriptorError(f"{path} has SHA-256 {found}, not the configured {sha256}")
        try:
            model = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError) as exc:
            raise DescriptorError(f"{path} is not a TorchScript model: {exc}") from None
        descriptor = cls(model, [], [])
        names, vectors = [], []
        # One reference at a time, shrunk as it is read: a folder of large photos never
        # sits in memory whole.
        for reference in index.references if index is not None else []:
            try:
                with Image.open(index.folder / reference.name) as image:
                    image.draft("RGB", (SIDE * 2, SIDE * 2))  # JPEGs decode small
                    vectors.append(descriptor.embed(image))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                log.warning(
                    "reference %s cannot be read for the descriptor tier (%s); it is left out",
                    reference.name,
                    exc,
                )
                continue
            names.append(reference.name)
        return cls(model, names, vectors)

    def embed(self, image: Image.Image) -> np.ndarray:
        import torch

        rgb = image.convert("RGB")
        scale = SIDE / min(rgb.size)
        rgb = rgb.resize(
            (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
            Image.Resampling.BILINEAR,
        )
        pixels = (np.asarray(rgb, dtype=np.float32) / 255.0 - MEAN) / STD
        batch = torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy())
        with torch.inference_mode():
            vector = self._model(batch).reshape(-1).float().numpy()
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def nearest(self, image: Image.Image) -> Near | None:
        """The most similar reference and the verdict; None without references."""
        if not self._names:
            return None
        cosines = self._vectors @ self.embed(image)
        best = int(np.argmax(cosines))
        cosine = float(cosines[best])
        verdict = "match" if cosine >= MATCH else "review" if cosine >= REVIEW else "clear"
        return Near(self._names[best], cosine, verdict)
