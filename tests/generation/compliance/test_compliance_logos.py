"""The two further tiers of the copy check: logos found by keypoints (SIFT + RANSAC), and
a local descriptor model (TorchScript) with its SHA-256 checked."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from generation.compliance import Compliance
from generation.compliance.embedding import Descriptor, DescriptorError, file_sha256
from generation.compliance.logos import Logos
from generation.compliance.references import build
from tests.generation.compliance.test_compliance_copy import scene


def logo() -> Image.Image:
    """A made-up brand mark: a ring, a star and letters, with plenty of corners."""
    image = Image.new("RGB", (300, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 280, 280), outline=(0, 0, 160), width=18)
    draw.polygon(
        [
            (150, 40),
            (180, 120),
            (265, 120),
            (195, 170),
            (225, 255),
            (150, 205),
            (75, 255),
            (105, 170),
            (35, 120),
            (120, 120),
        ],
        fill=(20, 20, 20),
    )
    draw.text((95, 125), "ACME", fill=(0, 120, 0), font=ImageFont.load_default(size=48))
    return image


def other_logo() -> Image.Image:
    """Another company's mark: bars, a triangle and other letters."""
    image = Image.new("RGB", (300, 300), (250, 240, 200))
    draw = ImageDraw.Draw(image)
    for i in range(5):
        draw.rectangle((30 + i * 50, 200 - i * 30, 60 + i * 50, 270), fill=(180, 60, 0))
    draw.polygon([(40, 150), (150, 20), (260, 150)], outline=(0, 0, 0), width=10)
    draw.text((90, 90), "ZETA", fill=(0, 0, 0), font=ImageFont.load_default(size=44))
    return image


@pytest.fixture(scope="module")
def logos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logos")
    logo().save(folder / "acme.png")
    return Logos.load(folder)


def test_a_logo_placed_in_a_picture_is_found(logos):
    picture = scene(30, 1024)
    picture.paste(logo().resize((260, 260)).rotate(12, expand=False, fillcolor="white"), (600, 500))
    found = logos.find(picture)
    assert found is not None and found.name == "acme.png" and found.inliers >= 12
    verdict = Compliance(logos=logos, on_match="block").screen(picture)
    assert verdict.action == "block" and "logo 'acme.png'" in verdict.reasons[0]


def test_pictures_without_the_logo_are_clear(logos):
    for seed in range(31, 36):
        assert logos.find(scene(seed, 1024)) is None
    other = scene(36, 1024)
    other.paste(other_logo().resize((260, 260)), (100, 100))
    assert logos.find(other) is None


class Pool(torch.nn.Module):
    """A stand-in descriptor: a 4×4 colour layout of the picture (no weights)."""

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "descriptor.pt"
    torch.jit.script(Pool()).save(str(path))
    return path


def test_descriptor_tier_matches_a_copy_and_checks_the_file(model, tmp_path):
    folder = tmp_path / "references"
    folder.mkdir()
    for seed in range(3):
        scene(seed).save(folder / f"ref-{seed}.png")
    index = build(folder)
    descriptor = Descriptor.load(model, file_sha256(model), index)
    near = descriptor.nearest(scene(1).crop((40, 40, 480, 480)))
    assert near.name == "ref-1.png" and near.verdict == "match" and near.cosine > 0.75
    verdict = Compliance(embedding=descriptor, on_match="warn").screen(scene(2))
    assert verdict.action == "warn" and verdict.record["embedding"]["reference"] == "ref-2.png"
    with pytest.raises(DescriptorError, match="not the configured"):
        Descriptor.load(model, "0" * 64, index)
