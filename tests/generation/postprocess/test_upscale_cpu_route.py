"""The CPU route of README "Run it for real" step 4: torch's CPU build, no torchvision, and
spandrel installed with --no-deps (the README's test command makes this very venv so). The
upscaler that `imgbot make-test-model --arch esrgan` writes loads there and upscales."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[3]

# Run apart, so that nothing another test imported (a torchvision stand-in, a loaded model)
# helps it along: what this process sees is what the operator's bot sees.
UPSCALE = """
import importlib.metadata, importlib.util, json, sys
from pathlib import Path
import torch
from PIL import Image
from generation.postprocess.upscale import Upscaler

facts = {"cuda": torch.version.cuda,
         "torchvision_found": importlib.util.find_spec("torchvision") is not None,
         "spandrel_requires": importlib.metadata.requires("spandrel") or []}
upscaler = Upscaler(Path(sys.argv[1]), "cpu")
upscaler.load()
upscaler.upscale(Image.open(sys.argv[2]), 4).save(sys.argv[3])
try:
    import torchvision  # noqa: F401
    facts["torchvision_imports"] = True
except ImportError:
    facts["torchvision_imports"] = False
facts["architecture"] = upscaler.model.architecture.id
print(json.dumps(facts))
"""


def picture() -> Image.Image:
    """Gradients in red and green, noise in blue."""
    rng = np.random.default_rng(3)
    data = np.zeros((40, 56, 3), np.uint8)
    data[..., 0] = np.linspace(0, 255, 56)[None, :]
    data[..., 1] = np.linspace(0, 255, 40)[:, None]
    data[..., 2] = rng.integers(0, 256, (40, 56))
    return Image.fromarray(data)


def test_the_cpu_route_loads_the_test_upscaler_and_upscales(tmp_path):
    made = subprocess.run(
        [sys.executable, "-m", "bot.cli", "make-test-model", str(tmp_path), "--arch", "esrgan"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    model = tmp_path / "test-esrgan-x4.safetensors"
    assert str(model) in made.stdout
    source = picture()
    source.save(tmp_path / "in.png")

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            UPSCALE,
            str(model),
            str(tmp_path / "in.png"),
            str(tmp_path / "out.png"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout.splitlines()[-1])
    if facts["cuda"] is not None or facts["torchvision_found"]:
        pytest.skip(
            f"not the CPU route here (torch CUDA {facts['cuda']}, torchvision "
            f"installed: {facts['torchvision_found']})"
        )
    # spandrel asks for torchvision and it is not there: installed with --no-deps.
    assert any(r.startswith("torchvision") for r in facts["spandrel_requires"]), facts
    assert facts["torchvision_imports"] is False
    assert facts["architecture"] == "ESRGAN"
    big = Image.open(tmp_path / "out.png")
    assert big.size == (source.width * 4, source.height * 4)
    # The picture itself, enlarged (the test upscaler carries it through, see
    # generation/testing/upscaler.py), not a blank or a resize of something else.
    back = np.asarray(big.convert("RGB").resize(source.size, Image.Resampling.BOX)).astype(int)
    assert np.abs(back - np.asarray(source).astype(int)).mean() < 8
