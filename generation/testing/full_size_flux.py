"""The real FLUX.1 [schnell] architecture, layer for layer, for `full_size.random_pipeline`:
12B of transformer, T5 v1.1 XXL's 4.8B encoder and CLIP ViT-L/14's text tower. Built on the
meta device there; never instantiate it for real in a test (68 GB in float32)."""

from __future__ import annotations

from .parts import flux1_vae
from .t5_parts import t5_config, t5_tokenizer
from .tiny_flux import schnell_scheduler

# google/t5-v1_1-xxl's config.json (FLUX.1's text_encoder_2/config.json), with T5's real
# vocabulary size so that the parameter counts are the real ones; the generated tokenizer
# only uses its first few hundred ids.
_T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_ff=10240,
    d_kv=64,
    num_heads=64,
    num_layers=24,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    tie_word_embeddings=False,
)


def full_flux1_schnell(clip_tokenizer, clip_config):
    """`clip_tokenizer` and `clip_config`: CLIP ViT-L/14's, as full_size.py builds them for
    SD 1.5 (FLUX.1 ships the same text tower)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    tokenizer_2 = t5_tokenizer()
    # black-forest-labs/FLUX.1-schnell's transformer/config.json
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels in 2x2 patches
        num_layers=19,
        num_single_layers=38,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,  # T5 XXL's width
        pooled_projection_dim=768,  # CLIP ViT-L's
        axes_dims_rope=(16, 56, 56),
        guidance_embeds=False,  # [dev]'s one difference: True, a guidance embedder more
    )
    vae = flux1_vae(
        (128, 256, 512, 512), layers=2, groups=32, sample_size=1024, force_upcast=True
    )  # its vae/config.json
    return FluxPipeline(
        scheduler=schnell_scheduler(),
        vae=vae,
        text_encoder=CLIPTextModel(clip_config),
        tokenizer=clip_tokenizer,
        text_encoder_2=T5EncoderModel(t5_config(tokenizer_2, **_T5_XXL)),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
