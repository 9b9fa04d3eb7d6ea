"""The engine: one loaded pipeline on one device, turning jobs into pictures.

Only the queue's worker thread calls `generate`; nothing else touches the pipeline.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .device import Placement, choose
from .job import GenerationError, Job

log = logging.getLogger(__name__)

# model_index.json class names we know how to drive, by family.
SUPPORTED = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
}


class ModelError(Exception):
    """The model folder cannot be used; the message says why."""


def inspect_model(folder: str | Path) -> str:
    """Return the family ("sd" or "sdxl") of a local diffusers folder, or raise ModelError."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ModelError(f"{path} is not a folder (models load from local folders only)")
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelError(f"{path} has no model_index.json: not a diffusers model folder")
    try:
        class_name = json.loads(index.read_text())["_class_name"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{index} is not a valid model index: {exc}") from exc
    if class_name not in SUPPORTED:
        raise ModelError(
            f"{path} holds a {class_name}; supported: {', '.join(sorted(SUPPORTED))}"
        )
    return SUPPORTED[class_name]


def _quiet_libraries() -> None:
    """The hub libraries print progress bars and advice meant for notebooks; a service's
    log should carry only what matters (their errors still come through)."""
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


class Engine:
    def __init__(self, model: str | Path, device: str = "auto"):
        self.path = Path(model).expanduser().resolve()
        self.name = self.path.name
        self.family = inspect_model(self.path)
        self.requested_device = device
        self.placement: Placement | None = None
        self.pipe = None

    def load(self) -> None:
        """Load the weights once, from the local folder only, onto the chosen device."""
        import torch
        from diffusers import AutoPipelineForText2Image

        _quiet_libraries()
        self.placement = choose(self.requested_device)
        started = time.perf_counter()
        pipe = AutoPipelineForText2Image.from_pretrained(
            self.path, dtype=self.placement.dtype, local_files_only=True
        )
        pipe.to(self.placement.device)
        pipe.set_progress_bar_config(disable=True)
        torch.set_grad_enabled(False)
        self.pipe = pipe
        log.info(
            "loaded %s (%s) on %s in %s in %.1f s",
            self.name, self.family, self.placement.device, self.placement.dtype_name,
            time.perf_counter() - started,
        )

    def warm_up(self, width: int, height: int, steps: int = 1) -> float:
        """One throw-away run, so the first user's picture does not pay for kernel setup."""
        started = time.perf_counter()
        self.generate(Job(prompt="warm-up", seed=0, steps=steps, width=width, height=height))
        seconds = time.perf_counter() - started
        log.info("warm-up at %dx%d took %.2f s", width, height, seconds)
        return seconds

    def generate(self, job: Job) -> list:
        """Run the pipeline for one job and return its PIL images, `job.count` of them."""
        import torch

        if self.pipe is None:
            raise RuntimeError("Engine.generate called before load()")
        # 1. One generator per picture, on the CPU, so a seed gives the same starting noise
        #    on every machine, and picture i of a job starts from what seed+i alone would
        #    (batched kernels may still differ from single ones in the last bit).
        generators = [torch.Generator("cpu").manual_seed(job.seed + i) for i in range(job.count)]
        # 2. The negative prompt only matters with classifier-free guidance (guidance > 1).
        negative = [job.negative_prompt] * job.count if job.negative_prompt else None
        # 3. Run the pipeline; running out of GPU memory is the user's size, not a crash.
        try:
            with torch.inference_mode():
                output = self.pipe(
                    prompt=[job.prompt] * job.count,
                    negative_prompt=negative,
                    num_inference_steps=job.steps,
                    guidance_scale=job.guidance,
                    width=job.width,
                    height=job.height,
                    generator=generators,
                    output_type="pil",
                )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise GenerationError(
                f"The GPU ran out of memory for {job.count} × {job.width}x{job.height}; "
                "try a smaller size or fewer pictures."
            ) from None
        return list(output.images)
