"""The real Z-Image-Turbo and FLUX.2 [klein] 4B architectures, layer for layer, for
`full_size.random_pipeline`: both read prompts with Qwen3-4B. Built on the meta device
there; never instantiate them for real in a test (24 and 16 GB in float32)."""

from __future__ import annotations

from pathlib import Path

from .parts import flux1_vae
from .qwen_parts import qwen3_config, qwen_tokenizer

# Qwen/Qwen3-4B's config.json (both families ship it as their text encoder), with Qwen's real
# vocabulary size so that the parameter counts are the real ones; the generated tokenizer
# only uses its first few hundred ids.
_QWEN3_4B = dict(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)


def _qwen3_4b(workdir: Path):
    tokenizer = qwen_tokenizer(workdir / "tokenizer")
    config = qwen3_config(tokenizer, **_QWEN3_4B)
    return tokenizer, config


def full_zimage_turbo(workdir: Path):
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    tokenizer, text_config = _qwen3_4b(workdir)
    transformer = ZImageTransformer2DModel(  # Tongyi-MAI/Z-Image-Turbo's transformer/config.json
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=3840,
        n_layers=30,
        n_refiner_layers=2,
        n_heads=30,
        n_kv_heads=30,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=2560,  # Qwen3-4B's hidden size
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[32, 48, 48],
        axes_lens=[1536, 512, 512],  # diffusers' class default says 1024; the shipped config 1536
    )
    # its vae/config.json: FLUX.1's VAE
    vae = flux1_vae((128, 256, 512, 512), layers=2, groups=32, sample_size=1024)
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False),
        vae=vae,
        text_encoder=Qwen3Model(text_config),
        tokenizer=tokenizer,
        transformer=transformer,
    )


def full_flux2_klein_4b(workdir: Path):
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3ForCausalLM

    tokenizer, text_config = _qwen3_4b(workdir)
    # black-forest-labs/FLUX.2-klein-4B's transformer/config.json (as quoted by the projects
    # that load it: mflux, DiffSynth-Studio, InvokeAI): 5 double- and 20 single-stream
    # blocks, 24 heads of 128 (3072 wide).
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,  # 32 latent channels in 2x2 patches
        num_layers=5,
        num_single_layers=20,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=7680,  # Qwen3-4B's layers 9, 18 and 27 side by side: 3 x 2560
        timestep_guidance_channels=256,
        mlp_ratio=3.0,
        axes_dims_rope=(32, 32, 32, 32),
        rope_theta=2000,
        eps=1e-6,
        guidance_embeds=False,
    )
    return Flux2KleinPipeline(
        # FLUX.2's scheduler: its shift follows the picture size (the pipeline's own `mu`)
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential"
        ),
        vae=AutoencoderKLFlux2(),  # diffusers' defaults are the FLUX.2 VAE's config
        text_encoder=Qwen3ForCausalLM(text_config),
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,  # the 4-step 4B; klein-base-4B is the same network undistilled
    )
