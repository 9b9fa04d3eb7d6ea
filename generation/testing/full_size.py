"""The real SD 1.5 and SDXL architectures, layer for layer, with random weights built in
memory: benchmarks on a machine without models do exactly the real arithmetic. (Z-Image-Turbo
and FLUX.2 [klein] 4B: full_size_qwen.py; FLUX.1 [schnell]: full_size_flux.py.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .full_size_flux import full_flux1_schnell
from .full_size_qwen import full_flux2_klein_4b, full_zimage_turbo
from .parts import scheduler, vae, write_clip_tokenizer_files


# make-test-model's architecture names → random_pipeline's.
FULL_SIZE = {
    "sd": "sd15",
    "sdxl": "sdxl",
    "flux": "flux1-schnell",
    "zimage": "zimage-turbo",
    "flux2-klein": "flux2-klein-4b",
}

# The real models' text encoders (openai/clip-vit-large-patch14 and the OpenCLIP ViT-bigG/14
# that SDXL adds), with CLIP's real vocabulary size so that the parameter counts are the real
# ones; the generated tokenizer only uses its first 514 ids.
_CLIP_L = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    hidden_act="quick_gelu",
    projection_dim=768,
)

_CLIP_BIG_G = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    hidden_act="gelu",
    projection_dim=1280,
)


def _clip_tokenizer(workdir: Path):
    from transformers import CLIPTokenizer

    ids = write_clip_tokenizer_files(workdir / "tokenizer")
    return CLIPTokenizer.from_pretrained(workdir / "tokenizer", model_max_length=77), ids


def _full_text_config(ids: dict[str, int], sizes: dict):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["eos"],
        max_position_embeddings=77,
        layer_norm_eps=1e-05,
        **sizes,
    )


def _full_vae(sample_size: int, scaling_factor: float):
    # force_upcast as in the real configs: plain diffusers decodes in float32 when the
    # pipeline runs in float16 (SDXL's VAE overflows in float16).
    return vae(
        sample_size,
        (128, 256, 512, 512),
        32,
        layers_per_block=2,
        scaling_factor=scaling_factor,
        force_upcast=True,
    )


def _full_sd15(workdir: Path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer, ids = _clip_tokenizer(workdir)
    unet = UNet2DConditionModel(  # runwayml/stable-diffusion-v1-5's unet/config.json
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    return StableDiffusionPipeline(
        vae=_full_vae(512, 0.18215),
        text_encoder=CLIPTextModel(_full_text_config(ids, _CLIP_L)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _full_sdxl(workdir: Path):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, ids = _clip_tokenizer(workdir)
    unet = UNet2DConditionModel(  # stabilityai/stable-diffusion-xl-base-1.0's unet/config.json
        sample_size=128,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        cross_attention_dim=2048,  # both text encoders' hidden states side by side
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        # six size/crop numbers embedded with 256 dims each, plus bigG's pooled 1280
        projection_class_embeddings_input_dim=2816,
        norm_num_groups=32,
    )
    return StableDiffusionXLPipeline(
        vae=_full_vae(1024, 0.13025),
        text_encoder=CLIPTextModel(_full_text_config(ids, _CLIP_L)),
        text_encoder_2=CLIPTextModelWithProjection(_full_text_config(ids, _CLIP_BIG_G)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler(),
    )


def _full_flux1_schnell(workdir: Path):
    tokenizer, ids = _clip_tokenizer(workdir)  # FLUX.1 reads prompts with CLIP-L too
    return full_flux1_schnell(tokenizer, _full_text_config(ids, _CLIP_L))


# Each builds its pipeline, tokenizer files in `workdir` (a temporary folder) included.
FULL_BUILDERS = {
    "sd15": _full_sd15,
    "sdxl": _full_sdxl,
    "flux1-schnell": _full_flux1_schnell,
    "zimage-turbo": full_zimage_turbo,
    "flux2-klein-4b": full_flux2_klein_4b,
}


def random_pipeline(arch: str, device: str = "cpu", dtype=None, seed: int = 0):
    """The full-size pipeline of `arch` (a FULL_BUILDERS key: "sd15", "sdxl", …) with random
    weights, built in memory: the real layers, parameter counts and FLOPs, for benchmarks on
    a machine that has no model. Its pictures are noise.

    Fast: the modules are built on the meta device (no memory, no initialisation), then each
    parameter is allocated straight on `device` in `dtype` (default float32) and filled
    from one generator seeded with `seed`: uniform in ±1/sqrt(fan_in) (PyTorch's own default
    scale for linear layers), norm scales 1, biases 0. The
    same seed, device and dtype give the same weights. `device="meta"` stops before the
    filling: the architecture alone, instantly, to count parameters."""
    import torch
    from accelerate import init_empty_weights

    if arch not in FULL_BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(FULL_BUILDERS)}")
    # Parameters on meta; buffers (CLIP's position ids) are built for real, being tiny.
    with tempfile.TemporaryDirectory() as tmp, init_empty_weights(include_buffers=False):
        pipe = FULL_BUILDERS[arch](Path(tmp))
    for module in pipe.components.values():
        # init_empty_weights unties what transformers ties, such as Qwen3-4B's input and
        # output embeddings (389M parameters counted twice): tie them again.
        if hasattr(module, "tie_weights"):
            module.tie_weights()
    if str(device) == "meta":
        return pipe
    dtype = dtype or torch.float32
    generator = torch.Generator(device).manual_seed(seed)
    for _, module in sorted(pipe.components.items()):
        if isinstance(module, torch.nn.Module):
            _materialise(module, device, dtype, generator)
    return pipe


def _materialise(module, device, dtype, generator) -> None:
    """Give every meta parameter of `module` real memory on `device`, with random values."""
    import math

    import torch

    made = {}  # a parameter two modules share (tied embeddings) stays one, filled once
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            if id(param) not in made:
                data = torch.empty(param.shape, dtype=dtype, device=device)
                if param.dim() < 2:  # norm scales and biases
                    data.fill_(1.0 if name == "weight" else 0.0)
                else:
                    bound = 1 / math.sqrt(math.prod(param.shape[1:]))
                    data.uniform_(-bound, bound, generator=generator)
                made[id(param)] = torch.nn.Parameter(data)
            sub._parameters[name] = made[id(param)]
    module.to(device)  # the buffers
