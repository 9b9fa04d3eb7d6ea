"""Families imgbot has no entry for in known.py but diffusers' AutoPipeline knows
(Sana, Lumina 2, CogView 4, HiDream, …): driven when their text-to-image pipeline takes
what a job gives it, with the traits read from the pipeline's own signature; refused with
the family named where it cannot be driven.

Imports diffusers (and so torch): only for a folder whose pipeline known.py does not
know, so `imgbot check` stays quick for the common ones."""

from __future__ import annotations

import inspect
from pathlib import Path

from .known import BY_PIPELINE, Family, ModelError

# What every job passes to a text-to-image call.
NEEDED = ("prompt", "width", "height", "num_inference_steps", "generator")


def other_family(path: Path, class_name: str) -> Family:
    supported = ", ".join(f"{f.label} ({name})" for name, f in BY_PIPELINE.items())
    try:
        import diffusers
        from diffusers.pipelines.auto_pipeline import (
            AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
            AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
        )
    except ImportError as exc:  # pragma: no cover - diffusers is a dependency
        raise ModelError(
            f"{path} holds a {class_name}; diffusers cannot be imported to "
            f"look it up ({exc}); supported: {supported}"
        ) from None
    families = {cls.__name__: key for key, cls in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.items()}
    key = families.get(class_name)
    if key is None:
        raise ModelError(
            f"{path} holds a {class_name}, which is not a text-to-image "
            f"pipeline diffusers' AutoPipeline knows; supported: {supported}"
        )
    params = inspect.signature(getattr(diffusers, class_name).__call__).parameters
    missing = [name for name in NEEDED if name not in params]
    if missing or any(word in class_name for word in ("Control", "Inpaint", "Kontext")):
        why = (
            f"its pipeline takes no {', '.join(missing)}"
            if missing
            else "it needs a control or mask picture beside the prompt"
        )
        raise ModelError(
            f"{path} holds a {class_name} (diffusers family {key!r}): imgbot "
            f"cannot drive it, as {why}; supported: {supported}"
        )

    def default(name, fallback):
        value = params[name].default if name in params else fallback
        return fallback if value is inspect.Parameter.empty or value is None else value

    guidance = (
        next((name for name in ("true_cfg_scale", "guidance_scale") if name in params), None)
        if "negative_prompt" in params
        else ("guidance_scale" if "guidance_scale" in params else None)
    )
    return Family(
        key=key,
        label=f"{class_name} (diffusers family {key!r})",
        native_side=1024,
        steps=int(default("num_inference_steps", 28)),
        guidance_default=float(default(guidance, 0.0)) if guidance else 0.0,
        guidance=guidance,
        negative_prompt="negative_prompt" in params,
        cfg="negative_prompt" in params,
        multiple=16,
        denoiser="unet" if (path / "unet").is_dir() else "transformer",
        strength=key in AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
    )
