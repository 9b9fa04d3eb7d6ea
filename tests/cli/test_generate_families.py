"""`imgbot generate` on the new families, as a person runs it: the family's own steps, its
size grid and its missing negative prompt said in words, a model that only edits refused in
the command line's terms, and the config's model settings (quantize) applied as the bot
applies them; no traceback."""

from __future__ import annotations

import pytest
import torch
import yaml

from generation.testing.tiny import make_test_model
from tests.cli.test_cli import imgbot


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        arch: make_test_model(root / arch, arch)
        for arch in ("zimage", "flux2-klein", "qwenimage-edit")
    }


def test_a_zimage_picture_takes_the_familys_steps(folders, tmp_path):
    made = imgbot(
        "generate",
        "a fox",
        "--model",
        str(folders["zimage"]),
        "--size",
        "64x64",
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "fox.png"),
    )
    assert made.returncode == 0, made.stderr
    assert "8 steps, 64x64" in made.stdout and (tmp_path / "fox.png").is_file()


def test_sizes_off_the_grid_and_a_negative_prompt_on_klein_get_words(folders, tmp_path):
    off = imgbot(
        "generate",
        "a fox",
        "--model",
        str(folders["zimage"]),
        "--size",
        "72x64",
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "a.png"),
    )
    assert off.returncode == 2 and "Traceback" not in off.stderr
    assert (
        "Z-Image pictures have sides that are multiples of 16, not 72x64; try `--size "
        "64x64`, or `--ar`."
    ) in off.stderr
    refused = imgbot(
        "generate",
        "a fox --no blur",
        "--model",
        str(folders["flux2-klein"]),
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "b.png"),
    )
    assert refused.returncode == 2
    assert "takes no negative prompt" in refused.stderr and not (tmp_path / "b.png").exists()


def test_a_model_that_only_edits_is_refused_in_the_command_lines_words(folders, tmp_path):
    folder = folders["qwenimage-edit"]
    refused = imgbot(
        "generate",
        "a fox",
        "--model",
        str(folder),
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "fox.png"),
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (
        f"imgbot generate: {folder} is a Qwen-Image-Edit model, which only edits pictures: "
        "it cannot make one from a prompt. Give --model a model that makes pictures from "
        "prompts"
    ) in refused.stderr
    assert "reply to a picture" not in refused.stderr  # chat's words, not the shell's
    assert not (tmp_path / "fox.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto takes a GPU here")
def test_the_configs_quantize_is_applied_as_by_the_bot(folders, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "matrix": {
                    "homeserver_url": "http://localhost:8008",
                    "user_id": "@imgbot:localhost",
                },
                "state_dir": str(tmp_path / "state"),
                "generation": {
                    "model": str(folders["zimage"]),
                    "size": "64x64",
                    "device": "auto",
                    "quantize": "fp8",
                    "warm_up": False,
                },
            }
        )
    )
    refused = imgbot("generate", "a fox", "-c", str(config), "-o", str(tmp_path / "fox.png"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (
        "imgbot generate: generation.quantize: fp8 needs an NVIDIA GPU of compute "
        "capability 8.9 or newer"
    ) in refused.stderr  # as `imgbot run` refuses it
    assert not (tmp_path / "fox.png").exists()
