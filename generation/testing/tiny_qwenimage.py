"""A tiny random-weight Qwen-Image: a double-stream DiT, a Qwen2.5-VL text encoder (with its
vision tower, which text-to-image leaves unused) and the Qwen-Image VAE's layout."""

from __future__ import annotations

from pathlib import Path

from .qwen_parts import qwen_tokenizer

# The system prompt QwenImagePipeline wraps every prompt in (its `prompt_template_encode`)
# and whose 34 tokens it drops from the encoder's output; the tokenizer gets merges that make
# them 34 here too. A test holds this copy to the installed pipeline's.
SYSTEM_PROMPT = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
    "<|im_start|>user\n"
)


def build(workdir: Path):
    from diffusers import QwenImagePipeline

    tokenizer = qwen_tokenizer(workdir / "tokenizer", words=SYSTEM_PROMPT + "assistant")
    return QwenImagePipeline(tokenizer=tokenizer, **components(tokenizer))


def components(tokenizer, **transformer) -> dict:
    """The scheduler, VAE, text encoder and denoiser, for `tokenizer`'s vocabulary; the
    edit model (tiny_qwenimage_edit.py) shares them, its denoiser told `transformer`."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    # Sizes from diffusers' tests/pipelines/qwenimage/test_qwenimage.py
    # `get_dummy_components`, with this tokenizer's vocabulary and special ids.
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            # the head size, 8, halved: 4 rotary frequencies over (time, row, column)
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "bos_token_id": None,
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    z_dim = 4
    denoiser = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=z_dim * 4,  # a 2x2 patch of latents per token
        out_channels=z_dim,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=config.text_config.hidden_size,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
        **transformer,
    )
    # The real VAE's four levels and two temporal downsamplings, for its 8x downscale (the
    # test's three levels give 4x), at 8 channels instead of 96; unit latent statistics.
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    # Qwen/Qwen-Image's scheduler_config.json: a shift that grows with the picture's token
    # count, exponentially, and a schedule stretched to end at 0.02.
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        time_shift_type="exponential",
        use_dynamic_shifting=True,
    )
    return dict(scheduler=scheduler, vae=vae, text_encoder=text_encoder, transformer=denoiser)
