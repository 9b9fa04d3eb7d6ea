"""A tiny random-weight FLUX.1 (the [schnell] variant: no guidance embedding): a double- and
single-stream DiT reading CLIP's pooled prompt and T5's per-token one, and the FLUX.1 VAE's
layout, with 16 latent channels."""

from __future__ import annotations

from pathlib import Path

from .parts import flux1_vae, tokenizer_and_text_config
from .t5_parts import t5_config, t5_tokenizer

_LATENT_CHANNELS = 16  # FLUX.1's


def build(workdir: Path):
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    # Sizes from diffusers' tests/pipelines/flux/test_pipeline_flux.py `get_dummy_components`,
    # except where a comment says otherwise.
    tokenizer, clip_config = tokenizer_and_text_config(workdir)
    tokenizer_2 = t5_tokenizer()
    # The test loads hf-internal-testing/tiny-random-t5, which cannot be downloaded here: a T5
    # as wide (32, 4 heads of 8, 8 position buckets), 2 layers deep as the CLIP one is, and
    # gated-GELU as the T5 v1.1 XXL that FLUX.1 ships.
    text_encoder_2 = T5EncoderModel(
        t5_config(
            tokenizer_2,
            d_model=32,
            d_ff=37,
            d_kv=8,
            num_heads=4,
            num_layers=2,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=_LATENT_CHANNELS * 4,  # a 2x2 patch of latents per token
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_encoder_2.config.d_model,  # T5's states, token by token
        pooled_projection_dim=clip_config.hidden_size,  # CLIP's pooled output
        axes_dims_rope=(4, 4, 8),  # the head size, 16, split over (text, row, column)
        guidance_embeds=False,  # as [schnell]; [dev] embeds its guidance number
    )
    # The FLUX.1 VAE's layout, 8 channels a block (diffusers' test has one block and one
    # channel): four blocks give the real 8x downscale.
    vae = flux1_vae()
    return FluxPipeline(
        scheduler=schnell_scheduler(),
        vae=vae,
        text_encoder=CLIPTextModel(clip_config),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def schnell_scheduler():
    """FLUX.1 [schnell]'s scheduler_config.json: no shift, fixed or resolution-dependent
    ([dev]'s has shift 3 and use_dynamic_shifting), so the pipeline's `mu` is unused."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=1.0,
        use_dynamic_shifting=False,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )
