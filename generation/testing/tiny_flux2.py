"""A tiny random-weight FLUX.2 [klein] (the 4B's architecture, step-distilled as the 4B is):
a double- and single-stream DiT, a Qwen3 text encoder and the FLUX.2 VAE's layout."""

from __future__ import annotations

from pathlib import Path

from .qwen_parts import qwen3_config, qwen_tokenizer

# The text encoder layers whose hidden states the pipeline stacks, by default, into the
# denoiser's text input (Qwen3-4B has 36; these are the pipeline's `text_encoder_out_layers`).
_OUT_LAYERS = (9, 18, 27)


def build(workdir: Path):
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3ForCausalLM

    tokenizer = qwen_tokenizer(workdir / "tokenizer")
    # Sizes from diffusers' tests/pipelines/flux2/test_pipeline_flux2_klein.py
    # `get_dummy_components`, but with 27 layers (the test has 2 and passes
    # text_encoder_out_layers=(1,)) so that the pipeline's default layers exist, and a head
    # size of 8 instead of Qwen3's 128. 27 16-wide layers are 60k parameters.
    text_encoder = Qwen3ForCausalLM(
        qwen3_config(
            tokenizer,
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=max(_OUT_LAYERS),
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
        )
    )  # as Qwen3-4B's
    latent_channels = 4
    # The FLUX.2 VAE's layout with 8 channels a block: four blocks for its 8x downscale (the
    # test's one block has none), then 2x2 patches of the latents, batch-normalised.
    vae = AutoencoderKLFlux2(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=latent_channels * 4,  # a 2x2 patch of latents per token
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        # the chosen layers' hidden states side by side (7680 = 3 x 2560 for the 4B)
        joint_attention_dim=len(_OUT_LAYERS) * text_encoder.config.hidden_size,
        timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,  # klein has no guidance embedding
    )
    # FLUX.2's scheduler config: the shift follows the picture size (the pipeline passes its
    # own `mu` for it), exponentially.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential"
    )
    # is_distilled: the 4B's model_index.json says so; the base models leave it out.
    return Flux2KleinPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )
