"""Random-weight diffusion models in diffusers format, and a random-weight upscaler, for
tests and the demo.

The folders this writes are loaded by exactly the same code path as a real model
(`generation.engine.load_pipeline`), so a test that passes with them exercises the real
loading path. Nothing is downloaded: the CLIP tokenizer files are generated here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

# The tiny layer sizes follow diffusers' own `get_dummy_components` in its pipeline tests:
# the smallest configurations that still run every block type of the real architecture.
_TEXT_CONFIG = dict(
    hidden_size=32,
    intermediate_size=37,
    layer_norm_eps=1e-05,
    num_attention_heads=4,
    num_hidden_layers=2,
    hidden_act="gelu",
    projection_dim=32,
)


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE (CLIP's tokenizer) uses for bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_clip_tokenizer_files(folder: Path) -> dict[str, int]:
    """Write vocab.json and merges.txt of a character-level CLIP tokenizer.

    Returns the ids of the special tokens, which the text encoder's config must match.
    """
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # First line is a header that CLIP's tokenizer skips; no merges keeps it character-level.
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return {"bos": vocab["<|startoftext|>"], "eos": vocab["<|endoftext|>"], "size": len(vocab)}


def _tokenizer_and_text_config(workdir: Path):
    from transformers import CLIPTextConfig, CLIPTokenizer

    ids = write_clip_tokenizer_files(workdir / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(workdir / "tokenizer", model_max_length=77)
    config = CLIPTextConfig(
        vocab_size=ids["size"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["eos"],
        **_TEXT_CONFIG,
    )
    return tokenizer, config


def _vae(sample_size: int):
    from diffusers import AutoencoderKL

    # Four blocks give the real models' 8× latent downscale, so sizes behave as they would.
    return AutoencoderKL(
        block_out_channels=[8, 8, 8, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size,
    )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # What few-step distilled models (SDXL-Lightning, Turbo) ship with.
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )


def _build_sd(workdir: Path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer, text_config = _tokenizer_and_text_config(workdir)
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
        vae=_vae(512),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl(workdir: Path):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, text_config = _tokenizer_and_text_config(workdir)
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
        vae=_vae(1024),
        text_encoder=CLIPTextModel(text_config),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
    )


BUILDERS = {"sd": _build_sd, "sdxl": _build_sdxl}


def make_test_model(folder: str | Path, arch: str = "sd", seed: int = 0) -> Path:
    """Write a tiny random-weight pipeline of the given architecture into `folder`."""
    import torch

    if arch not in BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(BUILDERS)}")
    folder = Path(folder)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = BUILDERS[arch](Path(tmp))
        pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def make_test_upscaler(path: str | Path, scale: int = 4, seed: int = 0) -> Path:
    """Write a tiny random-weight ESRGAN (the architecture of Real-ESRGAN, 16 filters, one
    block) to `path` as .safetensors, loadable by spandrel like a downloaded upscaler.

    Random weights alone turn every picture black, which would hide tiling mistakes; so
    the first three feature channels carry the picture through the main path (a nearest-
    neighbour enlargement) and the random trunk only adds a little texture on top. Seeded:
    the same file every time. `scale` 1 makes a model that is not an upscaler."""
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from .upscale import import_spandrel

    import_spandrel()  # spandrel's architectures import torchvision; see there
    from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet

    torch.manual_seed(seed)
    net = RRDBNet(num_filters=16, num_blocks=1, scale=scale)

    def convs(module: nn.Module) -> list[nn.Conv2d]:
        return [m for m in module.modules() if isinstance(m, nn.Conv2d)]

    trunk = convs(net.model[1])  # the residual trunk: feature map + trunk(feature map)
    main = [c for c in convs(net.model) if all(c is not t for t in trunk)]
    with torch.no_grad():
        for index, conv in enumerate(main):
            # Channels 0-2 pass R, G, B on (the centre tap of a 3×3 kernel); after the first
            # conv they also take 5 % of the random channels, so that the trunk shows.
            conv.weight[:3].mul_(0.0 if index == 0 else 0.05)
            conv.bias[:3].zero_()
            for channel in range(3):
                conv.weight[channel, channel, 1, 1] += 1
        trunk[-1].weight[:3].mul_(0.1)  # a small residual on the picture's own channels
        trunk[-1].bias[:3].mul_(0.1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path
