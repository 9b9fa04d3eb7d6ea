"""The parts every test model shares: CLIP tokenizer files generated here (nothing is
downloaded), text-encoder configs, a VAE and a scheduler."""

from __future__ import annotations

import json
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


def tokenizer_and_text_config(workdir: Path):
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


def vae(sample_size: int, channels: tuple[int, ...] = (8, 8, 8, 8), groups: int = 4, **config):
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


def flux1_vae(
    channels: tuple[int, ...] = (8, 8, 8, 8),
    layers: int = 1,
    groups: int = 4,
    sample_size: int = 64,
    **config,
):
    """FLUX.1's VAE layout (Z-Image ships it too): 16 latent channels, four blocks for its
    8x downscale, no quant convs, its scaling and shift. The defaults are the tiny one's,
    8 channels a block; the real one has (128, 256, 512, 512), 2 layers, 32 groups."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=list(channels),
        layers_per_block=layers,
        latent_channels=16,
        norm_num_groups=groups,
        sample_size=sample_size,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **config,
    )


def scheduler():
    from diffusers import EulerDiscreteScheduler

    # What few-step distilled models (SDXL-Lightning, Turbo) ship with.
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
