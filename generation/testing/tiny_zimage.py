"""A tiny random-weight Z-Image (Z-Image-Turbo's architecture): a single-stream DiT, a
Qwen3 text encoder and the FLUX.1 VAE's layout, 1.6 MB in all."""

from __future__ import annotations

from pathlib import Path

from .parts import flux1_vae
from .qwen_parts import qwen3_config, qwen_tokenizer


def build(workdir: Path):
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    tokenizer = qwen_tokenizer(workdir / "tokenizer")
    # Sizes from diffusers' tests/pipelines/z_image/test_z_image.py `get_dummy_components`,
    # with a head size of 8 instead of Qwen3's 128 (the test's 16-wide encoder keeps 128).
    text_encoder = Qwen3Model(
        qwen3_config(
            tokenizer,
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=1024,
        )
    )
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=text_encoder.config.hidden_size,  # the text encoder's states go in
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],  # the head size, 16, split over (text position, row, column)
        # Z-Image-Turbo's rotary table lengths (the test's are 256, 32, 32): prompts as long
        # and pictures as large (512 patches a side) as the real model takes.
        axes_lens=[1536, 512, 512],
    )
    # The padding tokens are created with torch.empty: random leftovers of memory, NaN at
    # times; seeded values make the model the same every time.
    with torch.no_grad():
        for pad in (transformer.x_pad_token, transformer.cap_pad_token):
            pad.normal_(std=0.02)
    vae = flux1_vae()  # Z-Image-Turbo ships FLUX.1's VAE
    # Z-Image-Turbo's scheduler_config.json: a fixed shift of 3, no resolution-dependent one.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)
    return ZImagePipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
