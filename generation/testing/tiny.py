"""Tiny random-weight model folders in diffusers format (a few MB: SD and SDXL here, the
transformer families in tiny_*.py), and a tiny TAESD-like decoder: loaded by exactly the path
a real model takes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import tiny_flux, tiny_flux2, tiny_qwenimage, tiny_qwenimage_edit, tiny_zimage
from .full_size import FULL_SIZE, random_pipeline
from .parts import scheduler, tokenizer_and_text_config, vae


def _build_sd(workdir: Path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer, text_config = tokenizer_and_text_config(workdir)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_config.hidden_size,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    return StableDiffusionPipeline(
        vae=vae(512),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl(workdir: Path):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, text_config = tokenizer_and_text_config(workdir)
    hidden = text_config.hidden_size
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        # six size/crop numbers embedded with 8 dims each, plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * 8 + text_config.projection_dim,
        cross_attention_dim=2 * hidden,
        norm_num_groups=4,
    )
    return StableDiffusionXLPipeline(
        vae=vae(1024),
        text_encoder=CLIPTextModel(text_config),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler(),
    )


BUILDERS = {"sd": _build_sd, "sdxl": _build_sdxl, "flux": tiny_flux.build}
BUILDERS |= {
    "zimage": tiny_zimage.build,
    "flux2-klein": tiny_flux2.build,  # a module each
    "qwenimage": tiny_qwenimage.build,
    "qwenimage-edit": tiny_qwenimage_edit.build,
}


def make_test_model(
    folder: str | Path, arch: str = "sd", seed: int = 0, full_size: bool = False
) -> Path:
    """Write a random-weight pipeline of the given architecture into `folder`: tiny, or with
    `full_size` the real architecture (`random_pipeline`) in float16, as real models are
    shipped (2.1 GB for sd, 6.9 GB for sdxl)."""
    import torch

    if arch not in BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(BUILDERS)}")
    if full_size and arch not in FULL_SIZE:
        raise ValueError(f"no full-size {arch}; full size: {', '.join(FULL_SIZE)}")
    folder = Path(folder)
    if full_size:
        pipe = random_pipeline(FULL_SIZE[arch], dtype=torch.float16, seed=seed)
        pipe.save_pretrained(folder, safe_serialization=True)
        return folder
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = BUILDERS[arch](Path(tmp))
        pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def make_test_tiny_decoder(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight AutoencoderTiny (the architecture of TAESD, 8 channels a
    block instead of 64) into `folder`, loadable like a downloaded TAESD as
    `generation.fast_decoder`. Seeded: the same folder every time."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)
    )
    folder = Path(folder)
    tiny.save_pretrained(folder, safe_serialization=True)
    return folder
