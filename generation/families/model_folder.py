"""Reading a model folder without loading it: its family, native size and weights' size.

No torch here: `imgbot check` and the start read folders before any model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..job import GenerationError
from .known import BY_PIPELINE, FAMILIES, Family, ModelError, refine

# model_index.json class names we know how to drive, by family key.
SUPPORTED = {name: family.key for name, family in BY_PIPELINE.items()}


# The picture side a family was trained at, for folders whose configs do not say.
NATIVE_SIDES = {key: family.native_side for key, family in FAMILIES.items()}


# Weight file types in the order `from_pretrained` prefers them.
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def inspect_model(folder: str | Path) -> str:
    """Return the family key ("sd", "sdxl", "flux", "zimage", …) of a local diffusers
    folder, or raise ModelError."""
    return family_of(folder).key


def family_of(folder: str | Path) -> Family:
    """The family of a local diffusers folder, its variant told apart by its configs; or
    ModelError saying why imgbot cannot drive it."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ModelError(f"{path} is not a folder (models load from local folders only)")
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelError(f"{path} has no model_index.json: not a diffusers model folder")
    try:
        data = json.loads(index.read_text())
        class_name = data["_class_name"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{index} is not a valid model index: {exc}") from exc
    if class_name in BY_PIPELINE:
        return refine(BY_PIPELINE[class_name], data, _config(path / "transformer"))
    from .auto_pipeline import other_family  # imports diffusers: only for these

    return other_family(path, class_name)


def _config(component: Path) -> dict:
    try:
        data = json.loads((component / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def native_size(folder: str | Path) -> tuple[int, int]:
    """The (width, height) a model was trained at, from its configs alone (no torch).

    The UNet's `sample_size` is in latents; the VAE's blocks give the latent's downscale
    (2 ** (blocks - 1), 8 for every SD/SDXL VAE): 64 × 8 = 512 for SD 1.5, 128 × 8 = 1024
    for SDXL. A folder whose configs do not say gets its family's usual size.
    """
    path = Path(folder).expanduser()
    try:
        sample = json.loads((path / "unet" / "config.json").read_text())["sample_size"]
        blocks = json.loads((path / "vae" / "config.json").read_text())["block_out_channels"]
        height, width = (sample, sample) if isinstance(sample, int) else sample
        if not blocks or not all(isinstance(n, int) and n > 0 for n in (height, width)):
            raise ValueError(f"sample_size {sample!r}, block_out_channels {blocks!r}")
        scale = 2 ** (len(blocks) - 1)
        return width * scale, height * scale
    except (OSError, ValueError, KeyError, TypeError):
        side = family_of(path).native_side  # transformer families: their usual size
        return side, side


def weights_bytes(folder: str | Path) -> int:
    """An estimate of the memory a model's weights take once loaded: their size on disk.

    In each component folder (unet, vae, text_encoder, …) only the files a plain
    `from_pretrained` reads count: safetensors before .bin, and the plain files before a
    variant beside them (`model.fp16.safetensors`). For fp32 files loaded in half precision
    (the GPU case) this is an upper bound; the working memory of a generation comes on top.
    """
    return sum(f.stat().st_size for files in component_weights(folder).values() for f in files)


def component_weights(folder: str | Path) -> dict[str, list[Path]]:
    """The weight files a plain `from_pretrained` reads, by component folder name."""
    return {
        component.name: _weight_files(component)
        for component in sorted(Path(folder).expanduser().iterdir())
        if component.is_dir()
    }


def _weight_files(component: Path) -> list[Path]:
    files = [f for f in component.iterdir() if f.is_file()]
    for suffix in WEIGHT_SUFFIXES:
        chosen = [f for f in files if f.suffix == suffix]
        if chosen:
            # A variant has its name between the stem and the suffix: "model.fp16".
            return [f for f in chosen if "." not in f.stem] or chosen
    return []


def unknown_model(name: str, models: list[str]) -> GenerationError:
    return GenerationError(f"Unknown model {name!r}; choose one of {', '.join(models)}.")


def zeros_for_empty_negative(folder: Path) -> bool:
    """Whether the pipeline in `folder` uses zeros as the negative embedding of a job with no
    negative prompt: SDXL's `force_zeros_for_empty_prompt` (True unless its index says
    otherwise); SD 1.x encodes "" instead."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return True  # not known: the safe answer
    if index.get("_class_name") != "StableDiffusionXLPipeline":
        return False
    return bool(index.get("force_zeros_for_empty_prompt", True))
