"""The start with several models (generation.models) stops with the reason when the default
model cannot be loaded with the settings (a LoRA made for another model), as it does with one
model, instead of ending in a traceback; the same model asked for by a job later fails that
job, not the worker."""

from __future__ import annotations

import pytest

from bot.app import load_engine
from bot.config import Settings
from generation.families.model_folder import ModelError
from generation.job import GenerationError, Job
from generation.models.pool import ModelPool
from generation.testing.lora import make_test_lora
from generation.testing.tiny import make_test_model


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl", "sdxl")


@pytest.fixture(scope="module")
def sd_lora(test_model, tmp_path_factory):
    """A LoRA of the tiny SD model: its file says UNet, so the check lets it onto SDXL, and
    only the load finds its weights fit no layer there."""
    return make_test_lora(test_model, tmp_path_factory.mktemp("lora") / "brand.safetensors")


def settings(**generation) -> Settings:
    return Settings(
        matrix={"homeserver_url": "http://localhost:8008", "user_id": "@imgbot:localhost"},
        generation={"device": "cpu", "size": "64x64", "steps": 1, "warm_up": False, **generation},
    )


@pytest.mark.parametrize("models", [False, True], ids=["one model", "generation.models"])
def test_a_lora_that_fits_no_layer_of_the_default_stops_the_start_saying_so(
    sdxl, test_model, sd_lora, models
):
    with pytest.raises(SystemExit) as stopped:
        load_engine(
            settings(
                model=sdxl, loras={"brand": sd_lora}, models={"sd": test_model} if models else {}
            )
        )
    said = str(stopped.value)
    assert said.startswith(f"generation.loras.brand: {sd_lora} ") and "tiny-sdxl (SDXL)" in said


def test_a_job_on_a_model_that_cannot_load_fails_with_a_clear_error(sdxl, test_model, sd_lora):
    pool = ModelPool({"xl": sdxl, "sd": test_model}, "xl", "cpu", loras={"brand": sd_lora})
    with pytest.raises(ModelError, match="^generation.loras.brand: "):
        pool.load()
    job = Job(prompt="a lighthouse", seed=1, steps=1, width=64, height=64)
    with pytest.raises(
        GenerationError,
        match=r"^The model xl could not be loaded; the bot's "
        r"log says why\.$",
    ):
        pool.generate(job)
    assert pool.loaded == []
    assert (
        len(
            pool.generate(
                Job(prompt="a lighthouse", seed=1, steps=1, width=64, height=64, model="sd")
            )
        )
        == 1
    )
