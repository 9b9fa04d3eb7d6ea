"""The tiny Z-Image, FLUX.2 [klein] and Qwen-Image test models: written offline, loaded by
plain diffusers as their family's pipeline, and they draw, in batches, seeded, and from a
picture. Each is built once (a module fixture); the full-size architectures are only
checked on the meta device."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from generation.families.model_folder import inspect_model
from generation.testing.tiny import BUILDERS, make_test_model

PIPELINES = {
    "zimage": "ZImagePipeline",
    "flux2-klein": "Flux2KleinPipeline",
    "qwenimage": "QwenImagePipeline",
}
# What AutoPipelineForImage2Image.from_pipe gives: FLUX.2 [klein] is its own image-to-image
# pipeline, the picture a reference to edit from (no strength) rather than a start.
IMG2IMG = {
    "zimage": "ZImageImg2ImgPipeline",
    "flux2-klein": "Flux2KleinPipeline",
    "qwenimage": "QwenImageImg2ImgPipeline",
}
# Each family's own way of turning guidance off (distilled models take none), so that a call
# runs the denoiser once, as imgbot's defaults for these families do.
NO_GUIDANCE = {
    "zimage": {"guidance_scale": 0.0},
    "flux2-klein": {"guidance_scale": 1.0},
    "qwenimage": {},
}


@pytest.fixture(scope="module", params=sorted(PIPELINES))
def family(request, tmp_path_factory):
    from diffusers import DiffusionPipeline

    arch = request.param
    folder = make_test_model(tmp_path_factory.mktemp(arch) / arch, arch)
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return arch, folder, pipe


def draw(arch, pipe, prompt="a red cat", seed=1, **options):
    options = {
        "num_inference_steps": 2,
        "height": 64,
        "width": 64,
        "output_type": "np",
        **NO_GUIDANCE[arch],
        **options,
    }
    return pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), **options).images


def test_the_folder_is_small_and_loads_offline_as_its_familys_pipeline(family):
    arch, folder, pipe = family
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert size < 5_000_000
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == type(pipe).__name__ == PIPELINES[arch]
    assert inspect_model(folder) == arch  # imgbot's own reading of the folder agrees


def test_it_draws_a_small_picture_in_two_steps(family):
    arch, _, pipe = family
    images = draw(arch, pipe)
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all() and images.std() > 0


def test_a_batch_of_two_prompts_is_one_call(family):
    arch, _, pipe = family
    assert draw(arch, pipe, prompt=["a red cat", "a blue dog"]).shape == (2, 64, 64, 3)


def test_a_seeded_generator_gives_the_same_pixels_twice(family):
    arch, _, pipe = family
    first = draw(arch, pipe, seed=3)
    assert np.array_equal(first, draw(arch, pipe, seed=3))
    assert not np.array_equal(first, draw(arch, pipe, seed=4))


def test_image_to_image_goes_through_from_pipe(family):
    from diffusers import AutoPipelineForImage2Image

    arch, _, pipe = family
    i2i = AutoPipelineForImage2Image.from_pipe(pipe)
    assert type(i2i).__name__ == IMG2IMG[arch]
    i2i.set_progress_bar_config(disable=True)
    # FLUX.2 [klein] refuses reference pictures under 64 pixels a side.
    source = Image.fromarray((draw(arch, pipe)[0] * 255).astype("uint8")).resize((96, 64))
    options = {} if arch == "flux2-klein" else {"strength": 0.6}
    # (Without a size, Z-Image and FLUX.2 [klein] take the source's; Qwen-Image draws 1024².)
    images = draw(arch, i2i, image=source, height=64, width=96, **options)
    assert images.shape == (1, 64, 96, 3)
    if arch == "flux2-klein":  # the reference goes into the denoiser's attention
        assert not np.allclose(draw(arch, i2i, image=source), draw(arch, pipe))


@pytest.mark.parametrize("arch", sorted(PIPELINES))
def test_building_twice_gives_identical_weights(arch, tmp_path):
    def weights():
        torch.manual_seed(0)  # as make_test_model seeds it
        pipe = BUILDERS[arch](tmp_path)
        return {
            f"{name}.{key}": value
            for name, module in pipe.components.items()
            if isinstance(module, torch.nn.Module)
            for key, value in module.state_dict().items()
        }

    one, again = weights(), weights()
    assert one.keys() == again.keys()
    assert all(torch.equal(one[key], again[key]) for key in one)


def test_qwen_image_drops_exactly_its_system_prompt(tmp_path):
    from generation.testing.tiny_qwenimage import SYSTEM_PROMPT

    pipe = BUILDERS["qwenimage"](tmp_path)
    system = pipe.prompt_template_encode.split("{}")[0]
    assert system == SYSTEM_PROMPT  # the installed pipeline's, not an old copy
    assert len(pipe.tokenizer(system).input_ids) == pipe.prompt_template_encode_start_idx


# Z-Image-Turbo: a 6B denoiser; FLUX.2 [klein] 4B: a 4B one; both read prompts with
# Qwen3-4B (4.0B, its embeddings tied), beside an 84M VAE. Rounded as their cards give them.
REAL_SIZES = {
    "zimage-turbo": {"transformer": 6.15e9, "text_encoder": 4.02e9, "vae": 84e6},
    "flux2-klein-4b": {"transformer": 3.88e9, "text_encoder": 4.02e9, "vae": 84e6},
}


@pytest.mark.parametrize("arch", sorted(REAL_SIZES))
def test_the_full_size_architectures_have_the_real_sizes(arch):
    from generation.testing.full_size import random_pipeline

    pipe = random_pipeline(arch, device="meta")  # the architecture alone: no memory
    counts = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }
    assert counts == pytest.approx(REAL_SIZES[arch], rel=0.01)
