"""The tiny FLUX.1 test model: written offline, loaded by plain diffusers as a FluxPipeline,
and it draws, in batches, seeded, and from a picture; it takes what [schnell] takes. Built
once (a module fixture); the full-size architecture is only checked on the meta device."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from generation.families.model_folder import inspect_model
from generation.testing.tiny import make_test_model


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    from diffusers import DiffusionPipeline

    folder = make_test_model(tmp_path_factory.mktemp("flux") / "flux", "flux")
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return folder, pipe


def draw(pipe, prompt="a red cat", seed=1, **options):
    options = {"num_inference_steps": 2, "height": 64, "width": 64, "output_type": "np", **options}
    return pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), **options).images


@pytest.fixture(scope="module")
def picture(flux):
    return draw(flux[1])


def test_the_folder_is_small_and_loads_offline_as_a_flux_pipeline(flux):
    folder, pipe = flux
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert size < 5_000_000
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == type(pipe).__name__ == "FluxPipeline"
    assert inspect_model(folder) == "flux"  # imgbot's own reading of the folder agrees
    assert pipe.transformer.config.guidance_embeds is False  # [schnell], not [dev]
    assert pipe.vae.config.latent_channels == 16


def test_the_t5_tokenizer_comes_back_with_t5s_special_ids(flux):
    _, pipe = flux
    tokenizer = pipe.tokenizer_2
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert len(tokenizer) == pipe.text_encoder_2.config.vocab_size
    ids = tokenizer("a red cat").input_ids
    assert ids[-1] == 1 and 2 not in ids  # ends with </s>; every letter known
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red cat"


def test_it_draws_a_small_picture_in_two_steps(picture):
    assert picture.shape == (1, 64, 64, 3)
    assert np.isfinite(picture).all() and picture.std() > 0


def test_a_batch_of_two_prompts_is_one_call(flux):
    assert draw(flux[1], prompt=["a red cat", "a blue dog"]).shape == (2, 64, 64, 3)


def test_a_seeded_generator_gives_the_same_pixels_twice(flux, picture):
    assert np.array_equal(picture, draw(flux[1], seed=1))
    assert not np.array_equal(picture, draw(flux[1], seed=2))


def test_sides_are_multiples_of_16_and_16_is_the_smallest(flux):
    _, pipe = flux
    assert draw(pipe, height=16, width=48).shape == (1, 16, 48, 3)
    # Other sides are rounded down with a warning, not refused.
    assert draw(pipe, height=24, width=40).shape == (1, 16, 32, 3)


def test_guidance_scale_does_nothing_without_a_guidance_embedding(flux, picture):
    # [schnell]'s guidance is distilled away; [dev] feeds guidance_scale to its embedder.
    assert np.array_equal(picture, draw(flux[1], guidance_scale=7.0))


def test_a_negative_prompt_needs_true_cfg_scale_above_1(flux, picture):
    _, pipe = flux
    assert np.array_equal(picture, draw(pipe, negative_prompt="blurry"))
    # With it the denoiser runs twice a step: true classifier-free guidance.
    assert not np.allclose(picture, draw(pipe, negative_prompt="blurry", true_cfg_scale=4.0))


def test_image_to_image_goes_through_from_pipe(flux, picture):
    from diffusers import AutoPipelineForImage2Image

    i2i = AutoPipelineForImage2Image.from_pipe(flux[1])
    assert type(i2i).__name__ == "FluxImg2ImgPipeline"
    i2i.set_progress_bar_config(disable=True)  # from_pipe does not carry it over
    source = Image.fromarray((picture[0] * 255).astype("uint8")).resize((96, 64))
    # The size must be given: without one it draws 1024x1024, not the source's size.
    # Strength 0.5 of 4 steps runs the last 2.
    options = {"image": source, "strength": 0.5, "num_inference_steps": 4, "width": 96}
    images = draw(i2i, **options)
    assert images.shape == (1, 64, 96, 3)
    assert np.isfinite(images).all() and np.array_equal(images, draw(i2i, **options))


def test_the_full_size_architecture_has_schnells_real_sizes():
    from generation.testing.full_size import FULL_SIZE, random_pipeline

    pipe = random_pipeline(FULL_SIZE["flux"], device="meta")  # the architecture alone
    counts = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }
    # A 12B denoiser, T5 v1.1 XXL's 4.8B encoder, CLIP-L's 123M, the 84M FLUX.1 VAE.
    real = {"transformer": 11.9e9, "text_encoder_2": 4.76e9, "text_encoder": 123e6, "vae": 84e6}
    assert counts == pytest.approx(real, rel=0.01)
    assert pipe.transformer.config.guidance_embeds is False
