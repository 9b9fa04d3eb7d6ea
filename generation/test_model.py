"""Random-weight diffusion models in diffusers format, and a random-weight upscaler, for
tests, the demo and the benchmark.

The folders this writes are loaded by exactly the same code path as a real model
(`generation.engine.load_pipeline`), so a test that passes with them exercises the real
loading path. Nothing is downloaded: the CLIP tokenizer files are generated here.

Two sizes: tiny (a few MB, for tests) and full size (`random_pipeline`: the real SD 1.5 or
SDXL architecture, layer for layer, for benchmarks on a machine without models). Their
pictures are noise, but a full-size one does exactly the real model's arithmetic.
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


def _vae(sample_size: int, channels: tuple[int, ...] = (8, 8, 8, 8), groups: int = 4,
         **config):
    from diffusers import AutoencoderKL

    # Four blocks give the real models' 8× latent downscale, so sizes behave as they would.
    return AutoencoderKL(
        block_out_channels=list(channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=sample_size,
        **config,
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


def make_test_model(folder: str | Path, arch: str = "sd", seed: int = 0,
                    full_size: bool = False) -> Path:
    """Write a random-weight pipeline of the given architecture into `folder`: tiny, or with
    `full_size` the real architecture (`random_pipeline`) in float16, as real models are
    shipped (2.1 GB for sd, 6.9 GB for sdxl)."""
    import torch

    if arch not in BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(BUILDERS)}")
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


# ---- full size --------------------------------------------------------------------------------

# make-test-model's architecture names → random_pipeline's.
FULL_SIZE = {"sd": "sd15", "sdxl": "sdxl"}

# The real models' text encoders (openai/clip-vit-large-patch14 and the OpenCLIP ViT-bigG/14
# that SDXL adds), with CLIP's real vocabulary size so that the parameter counts are the real
# ones; the generated tokenizer only uses its first 514 ids.
_CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
               num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768)
_CLIP_BIG_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120,
                   num_hidden_layers=32, num_attention_heads=20, hidden_act="gelu",
                   projection_dim=1280)


def _full_text_config(ids: dict[str, int], sizes: dict):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                          pad_token_id=ids["eos"], max_position_embeddings=77,
                          layer_norm_eps=1e-05, **sizes)


def _full_vae(sample_size: int, scaling_factor: float):
    # force_upcast as in the real configs: plain diffusers decodes in float32 when the
    # pipeline runs in float16 (SDXL's VAE overflows in float16).
    return _vae(sample_size, (128, 256, 512, 512), 32, layers_per_block=2,
                scaling_factor=scaling_factor, force_upcast=True)


def _full_sd15(tokenizer, ids):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

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
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _full_sdxl(tokenizer, ids):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

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
        scheduler=_scheduler(),
    )


FULL_BUILDERS = {"sd15": _full_sd15, "sdxl": _full_sdxl}


def random_pipeline(arch: str, device: str = "cpu", dtype=None, seed: int = 0):
    """The full-size SD 1.5 or SDXL pipeline (`arch` "sd15" or "sdxl") with random weights,
    built in memory: the real layers, parameter counts and FLOPs, for benchmarks on a machine
    that has no model. Its pictures are noise.

    Fast: the modules are built on the meta device (no memory, no initialisation), then each
    parameter is allocated straight on `device` in `dtype` (default float32) and filled
    from one generator seeded with `seed`: uniform in ±1/sqrt(fan_in) (PyTorch's own default
    scale for linear layers), norm scales 1, biases 0. The
    same seed, device and dtype give the same weights. `device="meta"` stops before the
    filling: the architecture alone, instantly, to count parameters."""
    import torch
    from accelerate import init_empty_weights

    if arch not in FULL_BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of "
                         f"{', '.join(FULL_BUILDERS)}")
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        ids = write_clip_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    # Parameters on meta; buffers (CLIP's position ids) are built for real, being tiny.
    with init_empty_weights(include_buffers=False):
        pipe = FULL_BUILDERS[arch](tokenizer, ids)
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

    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            data = torch.empty(param.shape, dtype=dtype, device=device)
            if param.dim() < 2:  # norm scales and biases
                data.fill_(1.0 if name == "weight" else 0.0)
            else:
                bound = 1 / math.sqrt(math.prod(param.shape[1:]))
                data.uniform_(-bound, bound, generator=generator)
            sub._parameters[name] = torch.nn.Parameter(data)
    module.to(device)  # the buffers


def make_test_tiny_decoder(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight AutoencoderTiny (the architecture of TAESD, 8 channels a
    block instead of 64) into `folder`, loadable like a downloaded TAESD as
    `generation.fast_decoder`. Seeded: the same folder every time."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    tiny = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8),
                           decoder_block_out_channels=(8, 8, 8, 8))
    folder = Path(folder)
    tiny.save_pretrained(folder, safe_serialization=True)
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
