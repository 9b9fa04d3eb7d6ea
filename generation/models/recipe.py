"""Building the runner a worker drives, from plain values: the bot builds its local workers
with it, and each Ray actor builds its own on its host the same way (generation.cluster),
so that a picture made on a cluster is made as one made here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..postprocess.finishing_runner import FinishingRunner
from ..scheduling.runner import LocalRunner


@dataclass(frozen=True)
class Recipe:
    """What a worker loads: plain values (they travel to a Ray actor as they are)."""

    catalogue: dict[str, Path]  # every model folder by name, the default first
    pool: bool = False  # several models (generation.models): a pool that loads on first use
    device: str = "auto"
    max_loaded_models: int | None = None
    engine_options: dict = field(default_factory=dict)  # Engine's keyword arguments
    warm_up: bool = True
    size: tuple[int, int] = (1024, 1024)  # the size the warm-up makes
    guidance: float = 0.0
    max_batch: int = 1
    upscaler: Path | None = None


def diffusion_runner(recipe: Recipe) -> LocalRunner:
    """The engine, or the pool of engines, not loaded yet: only the folders' configs are
    read (ModelError says what is wrong with one)."""
    from .engine import Engine
    from .pool import ModelPool

    default, folder = next(iter(recipe.catalogue.items()))
    if recipe.pool:
        return ModelPool(
            recipe.catalogue,
            default,
            recipe.device,
            recipe.max_loaded_models,
            **recipe.engine_options,
        )
    return Engine(folder, recipe.device, **recipe.engine_options)


def warm_up(runner: LocalRunner, recipe: Recipe) -> None:
    """For the configured size, and for a batch, so that neither a lone job nor a batch pays
    for kernel setup (or, with compile, for compiling)."""
    if recipe.warm_up:
        runner.warm_up(*recipe.size, guidance=recipe.guidance, batch=recipe.max_batch)


def with_upscaler(
    runner: LocalRunner, recipe: Recipe, device: str | None = None
) -> FinishingRunner:
    """The queue's runner: the model (or models) with the upscaler beside it, loaded now so
    that a wrong file stops the start (UpscalerError names it)."""
    from ..runtime.device import choose
    from ..postprocess.upscale import Upscaler

    upscaler = Upscaler(recipe.upscaler, choose(device or recipe.device).device)
    upscaler.load()
    if recipe.warm_up:
        upscaler.warm_up()
    return FinishingRunner(runner, upscaler)
