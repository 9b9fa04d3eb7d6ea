"""generation.vae is an AutoencoderKL: beside a model whose latents it does not share (FLUX.2
and Qwen-Image decode with VAEs of other classes, Z-Image's AutoencoderKL has 16 latent
channels) it is left out with a warning naming why, and the model draws with its own."""

from __future__ import annotations

import json
import logging

import pytest

from generation.job import Job
from generation.models.engine import Engine
from generation.testing.tiny import make_test_model
from tests.generation.runtime.test_speedups import vae_folder


@pytest.mark.parametrize(
    "arch, why",
    [
        ("flux2-klein", "the model's VAE is an AutoencoderKLFlux2, not an AutoencoderKL"),
        ("qwenimage", "the model's VAE is an AutoencoderKLQwenImage, not an AutoencoderKL"),
        ("zimage", "latent channels 4, the model's VAE has 16"),
    ],
)
def test_a_vae_the_family_cannot_use_is_left_out_naming_why(arch, why, tmp_path, caplog):
    model = make_test_model(tmp_path / arch, arch)
    engine = Engine(model, "cpu", vae=vae_folder(tmp_path / "sd-vae", seed=2))
    with caplog.at_level(logging.WARNING):
        engine.load()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("generation.vae" in w and why in w and "keeps its own VAE" in w for w in warned), (
        warned
    )
    own = json.loads((model / "vae" / "config.json").read_text())
    vae = engine.pipe.vae
    assert type(vae).__name__ == own["_class_name"]
    assert dict(vae.config).get("latent_channels") == own.get("latent_channels")
    (picture,) = engine.generate(Job(prompt="a kite", seed=1, steps=1, width=64, height=64))
    assert picture.size == (64, 64)
    engine.unload()
