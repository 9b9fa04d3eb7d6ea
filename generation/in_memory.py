"""An engine over a pipeline built in memory rather than loaded from a folder: the bench's
full-size random-weight models run through the same engine as a loaded one."""

from __future__ import annotations

from . import fitting
from .device import choose
from .engine import Engine, quiet_libraries
from .families import BY_PIPELINE, refine
from .model_folder import ModelError


def from_pipeline(pipe, name: str, device: str = "auto",
                  compile: bool = False, quantize: str = "none") -> Engine:  # noqa: A002
    """An Engine over a pipeline already built in memory instead of loaded from a folder (the
    bench's full-size random-weight models, `testing.full_size.random_pipeline`): moved to the
    device and precision `load()` would choose and sped up as `load()` does (`speed_up`,
    torch.compile with `compile`; the denoiser quantized with `quantize`, as
`generation.quantize`), it then runs jobs like a loaded one. It has no folder:
    `path` is None, and `load()` is not to be called (`unload()` works)."""
    import torch

    family = BY_PIPELINE.get(type(pipe).__name__)
    if family is None:
        raise ModelError(f"the engine drives {', '.join(sorted(BY_PIPELINE))}, "
                         f"not a {type(pipe).__name__}")
    quiet_libraries()
    engine = Engine.__new__(Engine)  # what __init__ sets, without a folder to read it from
    engine.traits = refine(family, dict(pipe.config),
                           dict(getattr(getattr(pipe, "transformer", None), "config", {})))
    engine.path, engine.name, engine.family = None, name, engine.traits.key
    if family.denoiser == "unet":
        sample = pipe.unet.config.sample_size
        height, width = (sample, sample) if isinstance(sample, int) else sample
        engine._native_size = (width * pipe.vae_scale_factor, height * pipe.vae_scale_factor)
    else:  # a transformer's config gives no size: the family's own
        engine._native_size = (family.native_side, family.native_side)
    engine.requested_device, engine._image_to_image = device, None
    engine.compile = compile
    engine.placement = choose(device, fp16_safe=engine.traits.denoiser == "unet")
    # What load() does after from_pretrained.
    pipe.to(engine.placement.device, engine.placement.dtype)
    if quantize != "none":
        fitting.check(quantize, engine.placement)
        on = engine.placement.device  # layer by layer on the card, as fitting.fit does
        fitting.quantize_denoiser(getattr(pipe, family.denoiser), quantize,
                                  on if on.startswith("cuda") else None)
        engine.fit = fitting.Fit(quantize, "none", (f"quantize: {quantize} (torchao, "
                                                   f"{family.denoiser})", "offload: none"))
    pipe.set_progress_bar_config(disable=True)
    torch.set_grad_enabled(False)
    engine.speed_up(pipe)
    engine.pipe = pipe
    return engine
