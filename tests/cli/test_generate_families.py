"""`imgbot generate` on the new families, as a person runs it: the family's own steps, its
size grid and its missing negative prompt said in words, no traceback."""

from __future__ import annotations

import pytest

from generation.testing.tiny import make_test_model
from tests.cli.test_cli import imgbot


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {arch: make_test_model(root / arch, arch) for arch in ("zimage", "flux2-klein")}


def test_a_zimage_picture_takes_the_familys_steps(folders, tmp_path):
    made = imgbot("generate", "a fox", "--model", str(folders["zimage"]), "--size", "64x64",
                  "--device", "cpu", "-o", str(tmp_path / "fox.png"))
    assert made.returncode == 0, made.stderr
    assert "8 steps, 64x64" in made.stdout and (tmp_path / "fox.png").is_file()


def test_sizes_off_the_grid_and_a_negative_prompt_on_klein_get_words(folders, tmp_path):
    off = imgbot("generate", "a fox", "--model", str(folders["zimage"]), "--size", "72x64",
                 "--device", "cpu", "-o", str(tmp_path / "a.png"))
    assert off.returncode == 2 and "Traceback" not in off.stderr
    assert ("Z-Image pictures have sides that are multiples of 16, not 72x64; try --size "
            "64x64, or --ar.") in off.stderr
    refused = imgbot("generate", "a fox --no blur", "--model", str(folders["flux2-klein"]),
                     "--device", "cpu", "-o", str(tmp_path / "b.png"))
    assert refused.returncode == 2
    assert "takes no negative prompt" in refused.stderr and not (tmp_path / "b.png").exists()
