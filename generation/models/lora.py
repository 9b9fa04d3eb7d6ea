"""LoRA adapters on a loaded pipeline (diffusers' LoRA loading, through peft): loaded once
at start under their configured names, then switched per call. Switching sets scales on
the layers peft wrapped: the model is never reloaded, and a call without a LoRA runs with
the adapters off."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..families.known import Family
from ..families.model_folder import ModelError
from ..job import Job

# Key prefixes of the two ways a LoRA file is written (diffusers' and kohya's), by the kind
# of denoiser it was trained on.
_PREFIXES = {
    "unet": ("unet.", "lora_unet_"),
    "transformer": ("transformer.", "lora_transformer_", "diffusion_model."),
}


def made_for(path: Path) -> str | None:
    """ "unet" or "transformer": what the LoRA file was trained on, from its safetensors
    header alone (no torch); None where its keys do not say."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        if length > 100 * 2**20:
            raise ValueError("not a safetensors file (its header would be over 100 MB)")
        keys = [k for k in json.loads(file.read(length)) if k != "__metadata__"]
    for denoiser, prefixes in _PREFIXES.items():
        if (
            keys
            and all(k.startswith(prefixes + ("text_encoder", "lora_te")) for k in keys)
            and any(k.startswith(prefixes) for k in keys)
        ):
            return denoiser
    return None


def problem(path: Path, model: str, family: Family) -> str | None:
    """Why the LoRA file at `path` cannot go onto `model` (of `family`), from the file
    alone; None where it may. `load` checks again that its weights really fit."""
    if not path.is_file():
        return f"{path} is not a file (a LoRA .safetensors)"
    try:
        denoiser = made_for(path)
    except (OSError, ValueError, struct.error) as exc:
        return f"{path} is not a LoRA safetensors file: {exc}"
    if denoiser is not None and denoiser != family.denoiser:
        kind = "a UNet model (SD, SDXL)" if denoiser == "unet" else "a transformer model"
        return (
            f"{path} is a LoRA for {kind}, not for {model} ({family.label}, "
            f"a {family.denoiser} model)"
        )
    return None


def load(pipe, loras: dict[str, Path], model: str, family: Family) -> None:
    """Load each LoRA onto `pipe` under its name, off until a job asks for it; a ModelError
    naming the file and the family where one does not fit."""
    for name, path in loras.items():
        wrong = problem(path, model, family)
        if wrong is None:
            try:
                pipe.load_lora_weights(path, adapter_name=name)
            except (ValueError, RuntimeError, KeyError) as exc:  # shapes of another model
                why = (
                    "its layers have other sizes: it was trained for another model"
                    if "size mismatch" in str(exc)
                    else str(exc).splitlines()[0][:300]
                )
                wrong = f"{path} does not fit {model} ({family.label}): {why}"
            # diffusers skips, with a warning, the weights no layer of the model takes.
            if wrong is None and not any(
                name in names for names in pipe.get_list_adapters().values()
            ):
                wrong = (
                    f"{path} is not a LoRA for {model} ({family.label}): none of its "
                    "weights fit the model's layers"
                )
        if wrong is not None:
            raise ModelError(f"generation.loras.{name}: {wrong}")
    if loras:
        pipe.disable_lora()


def switch(
    pipe, current: tuple[str, float] | None, job: Job, loras: dict[str, Path]
) -> tuple[str, float] | None:
    """Put on the job's LoRA (or none) if it is not on already; returns what is on now."""
    if not loras:
        return None
    wanted = (job.lora, job.lora_weight) if job.lora else None
    if wanted == current:
        return current
    if wanted is None:
        pipe.disable_lora()
    else:
        pipe.enable_lora()
        pipe.set_adapters([wanted[0]], [wanted[1]])
    return wanted
