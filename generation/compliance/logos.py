"""Logos inside a picture: keypoint matching (OpenCV SIFT + RANSAC), no model weights.

A logo rarely fills a generated picture, so the whole-picture hashes of `references` do not
see it; local keypoints do. Each logo's SIFT keypoints are computed once at start; a
picture's keypoints (on a copy at most `PICTURE_SIDE` pixels wide) are matched to each
logo's with Lowe's ratio test, and the matches must agree on one perspective transform
(RANSAC) for at least `MIN_INLIERS` keypoints: scattered look-alike corners do not. It finds
a logo that is scaled, turned or skewed; it misses one drawn anew in another style (what
a diffusion model usually does), which no keypoint method can see.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .references import SUFFIXES

log = logging.getLogger(__name__)

PICTURE_SIDE = 768  # SIFT on a 1024² picture costs twice as much and finds the same logos
LOGO_SIDE = 400
RATIO = 0.75  # Lowe's ratio test
MIN_INLIERS = 12


@dataclass(frozen=True)
class LogoFound:
    name: str
    inliers: int  # keypoints that agree on where the logo is
    matches: int  # keypoints that passed the ratio test

    def record(self) -> dict:
        return {"logo": self.name, "inliers": self.inliers, "matches": self.matches}


def _grey(image: Image.Image, side: int) -> np.ndarray:
    grey = image.convert("L")
    if max(grey.size) > side:
        grey.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(grey)


class Logos:
    def __init__(self, logos: dict[str, np.ndarray]):
        import cv2

        self._cv2 = cv2
        self._sift = cv2.SIFT_create()
        self._logos = {}  # name: (keypoint coordinates, descriptors)
        for name, grey in logos.items():
            points, descriptors = self._sift.detectAndCompute(grey, None)
            if descriptors is None or len(points) < MIN_INLIERS:
                log.warning(
                    "logo %s has too few keypoints (%d) to be found; it is left out",
                    name,
                    0 if descriptors is None else len(points),
                )
                continue
            self._logos[name] = (np.float32([p.pt for p in points]), descriptors)

    @property
    def names(self) -> list[str]:
        return list(self._logos)

    @classmethod
    def load(cls, folder: Path) -> Logos:
        folder = Path(folder).expanduser()
        logos = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in SUFFIXES:
                try:
                    with Image.open(path) as image:
                        logos[str(path.relative_to(folder))] = _grey(image, LOGO_SIDE)
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    log.warning("logo %s cannot be read (%s); it is left out", path, exc)
        found = cls(logos)
        if not found.names:
            log.warning(
                "no logo in %s can be searched for (%d pictures read): the logo "
                "check finds nothing",
                folder,
                len(logos),
            )
        return found

    def find(self, image: Image.Image) -> LogoFound | None:
        """The logo found with the most agreeing keypoints, or None."""
        cv2 = self._cv2
        # A detector of its own: pictures are checked in parallel threads, and OpenCV's
        # detectors keep state between calls.
        points, descriptors = cv2.SIFT_create().detectAndCompute(_grey(image, PICTURE_SIDE), None)
        if descriptors is None or len(points) < MIN_INLIERS:
            return None
        where = np.float32([p.pt for p in points])
        matcher = cv2.BFMatcher(cv2.NORM_L2)
        best = None
        for name, (logo_where, logo_descriptors) in self._logos.items():
            pairs = matcher.knnMatch(logo_descriptors, descriptors, k=2)
            good = [m for m, *rest in pairs if rest and m.distance < RATIO * rest[0].distance]
            if len(good) < MIN_INLIERS:
                continue
            source = logo_where[[m.queryIdx for m in good]].reshape(-1, 1, 2)
            target = where[[m.trainIdx for m in good]].reshape(-1, 1, 2)
            transform, mask = cv2.findHomography(source, target, cv2.RANSAC, 5.0)
            if transform is None:
                continue
            inliers = int(mask.sum())
            if inliers >= MIN_INLIERS and (best is None or inliers > best.inliers):
                best = LogoFound(name, inliers, len(good))
        return best
