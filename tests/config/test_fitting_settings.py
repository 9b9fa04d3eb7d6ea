"""`generation.quantize` and `generation.offload` (README "Big models"): their defaults,
and a wrong value refused with the choices named."""

from __future__ import annotations

import pytest

from bot.config import load_settings
from tests.config.test_config import REPO, config_error, minimal, with_section, write


def test_the_defaults_quantize_nothing_and_offload_only_what_does_not_fit(tmp_path):
    generation = load_settings(write(tmp_path, minimal())).generation
    assert (generation.quantize, generation.offload) == ("none", "auto")


@pytest.mark.parametrize(
    "quantize, offload", [("int8", "model"), ("fp8", "group"), ("none", "none")]
)
def test_each_choice_loads(tmp_path, quantize, offload):
    data = with_section("generation", quantize=quantize, offload=offload, device="cuda:0")
    generation = load_settings(write(tmp_path, data)).generation
    assert (generation.quantize, generation.offload) == (quantize, offload)


@pytest.mark.parametrize(
    "key, value, words",
    [
        (
            "quantize",
            "int4",
            "generation.quantize: 'int4': choose none, int8 (any GPU, or the "
            "CPU) or fp8 (a GPU of compute capability 8.9 or newer",
        ),
        (
            "offload",
            "disk",
            "generation.offload: 'disk': choose auto (offload only a model "
            "larger than the card's free memory), none, model or group",
        ),
    ],
)
def test_a_wrong_value_names_the_choices(tmp_path, key, value, words):
    assert words in config_error(tmp_path, with_section("generation", **{key: value}))


@pytest.mark.parametrize("devices", [{"device": "cpu"}, {"devices": ["cuda:0", "mps"]}])
def test_fp8_is_refused_for_a_device_without_fp8(tmp_path, devices):
    message = config_error(tmp_path, with_section("generation", quantize="fp8", **devices))
    assert "quantize fp8 needs a CUDA GPU of compute capability 8.9 or newer" in message
    assert "use int8 there" in message


def test_the_example_documents_both():
    text = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    assert "  quantize: none\n" in text and "  offload: auto\n" in text
    settings = load_settings(REPO / "config.example.yaml")
    assert (settings.generation.quantize, settings.generation.offload) == ("none", "auto")
