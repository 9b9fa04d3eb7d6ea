"""The engine: one loaded pipeline on one device, turning jobs into pictures.

Only the queue's worker thread calls `generate`; nothing else touches the pipeline.
"""

from __future__ import annotations

import gc
import json
import logging
import math
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


# The kinds of job an engine runs (upscaling needs no diffusion model).
RUNS = ("txt2img", "img2img")

# The picture side a family was trained at, for folders whose configs do not say.
NATIVE_SIDES = {"sd": 512, "sdxl": 1024}

# Weight file types in the order `from_pretrained` prefers them.
WEIGHT_SUFFIXES = (".safetensors", ".bin")


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
        side = NATIVE_SIDES[inspect_model(path)]
        return side, side


def weights_bytes(folder: str | Path) -> int:
    """An estimate of the memory a model's weights take once loaded: their size on disk.

    In each component folder (unet, vae, text_encoder, …) only the files a plain
    `from_pretrained` reads count: safetensors before .bin, and the plain files before a
    variant beside them (`model.fp16.safetensors`). For fp32 files loaded in half precision
    (the GPU case) this is an upper bound; the working memory of a generation comes on top.
    """
    total = 0
    for component in Path(folder).expanduser().iterdir():
        if component.is_dir():
            total += sum(f.stat().st_size for f in _weight_files(component))
    return total


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


def _quiet_libraries() -> None:
    """The hub libraries print progress bars and advice meant for notebooks; a service's
    log should carry only what matters (their errors still come through)."""
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


class Engine:
    """One model on one device; also the queue's runner when only one model is configured."""

    def __init__(self, model: str | Path, device: str = "auto", name: str = ""):
        self.path = Path(model).expanduser().resolve()
        self.name = name or self.path.name
        self.family = inspect_model(self.path)
        self._native_size = native_size(self.path)
        self.requested_device = device
        self.placement: Placement | None = None
        self.pipe = None
        self._image_to_image = None  # made from `pipe` on the first img2img job

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

    def unload(self) -> None:
        """Drop the pipeline and give its memory back to the device.

        Also after a failed load, to free what it had placed before it failed.
        """
        self.pipe = self._image_to_image = None
        gc.collect()  # pipelines hold reference cycles; free their tensors now, not later
        if self.placement is not None and self.placement.device.startswith("cuda"):
            import torch

            # Hand the allocator's cached blocks back, so that the next model (and
            # `torch.cuda.mem_get_info`) sees the memory as free.
            torch.cuda.empty_cache()

    @property
    def models(self) -> list[str]:
        return [self.name]

    def native_size(self, name: str = "") -> tuple[int, int]:
        """The (width, height) the model was trained at; `name` must be "" or this model's."""
        self._check(name)
        return self._native_size

    def _check(self, name: str) -> None:
        if name not in ("", self.name):
            raise unknown_model(name, self.models)

    def warm_up(self, width: int, height: int, steps: int = 1) -> float:
        """One throw-away run, so the first user's picture does not pay for kernel setup."""
        started = time.perf_counter()
        self.generate(Job(prompt="warm-up", seed=0, steps=steps, width=width, height=height))
        seconds = time.perf_counter() - started
        log.info("warm-up at %dx%d took %.2f s", width, height, seconds)
        return seconds

    @property
    def image_to_image(self):
        """The image-to-image pipeline over the loaded one's components (the same UNet, VAE
        and text encoders: no second copy of the weights), made on first use."""
        if self.pipe is None:
            raise RuntimeError("Engine.image_to_image used before load()")
        if self._image_to_image is None:
            from diffusers import AutoPipelineForImage2Image

            self._image_to_image = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._image_to_image.set_progress_bar_config(disable=True)
        return self._image_to_image

    def generate(self, job: Job) -> list:
        """Run the pipeline for one job and return its PIL images, `job.count` of them.

        txt2img and img2img jobs; an upscale job is not the engine's (see studio.py). The
        pictures of a job are one batch; when the batch does not fit in GPU memory they
        are made one after the other instead (same seeds, same pictures), and only a single
        picture that does not fit is the user's problem."""
        import torch

        self._check(job.model)
        if job.kind not in RUNS:
            raise GenerationError(f"The diffusion engine makes {' and '.join(RUNS)} jobs, "
                                  f"not {job.kind}.")
        if self.pipe is None:
            raise RuntimeError("Engine.generate called before load()")
        try:
            return self._run(job, range(job.count))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if job.count == 1:
                raise self._too_big(job) from None
        log.warning("a batch of %d at %dx%d did not fit in GPU memory; making them one by one",
                    job.count, job.width, job.height)
        images = []
        for index in range(job.count):
            try:
                images += self._run(job, [index])
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise self._too_big(job) from None
        return images

    @staticmethod
    def _too_big(job: Job) -> GenerationError:
        return GenerationError(f"The GPU ran out of memory for {job.width}x{job.height}; "
                               "try a smaller size.")

    def _run(self, job: Job, indices) -> list:
        import torch

        # One generator per picture, on the CPU, so a seed gives the same starting noise on
        # every machine, and picture i of a job starts from what seed+i alone would
        # (batched kernels may still differ from single ones in the last bit).
        generators = [torch.Generator("cpu").manual_seed(job.seed + i) for i in indices]
        count = len(generators)
        # The negative prompt only matters with classifier-free guidance (guidance > 1).
        negative = [job.negative_prompt] * count if job.negative_prompt else None
        common = dict(prompt=[job.prompt] * count, negative_prompt=negative,
                      guidance_scale=job.guidance, generator=generators, output_type="pil")
        with torch.inference_mode():
            if job.kind == "img2img":
                output = self.image_to_image(image=_source(job), strength=job.strength,
                                             num_inference_steps=img2img_steps(job), **common)
            else:
                output = self.pipe(num_inference_steps=job.steps, width=job.width,
                                   height=job.height, **common)
        return list(output.images)


def img2img_steps(job: Job) -> int:
    """The steps to ask an img2img pipeline for, so that it runs at least one.

    diffusers runs only the last int(steps × strength) of `steps` (the first ones would
    paint the part of the picture that is kept): 2 steps at strength 0.3 would run none and
    fail. So the steps are raised to ceil(1 / strength) where that is needed; the picture's
    record keeps the steps asked for."""
    if not 0 < job.strength <= 1:
        raise GenerationError(f"The strength of an image-to-image job is above 0 and at most "
                              f"1, not {job.strength}.")
    steps = max(job.steps, math.ceil(1 / job.strength))
    while int(steps * job.strength) < 1:  # 1 / strength may round down in floating point
        steps += 1
    return steps


def _source(job: Job):
    """The job's source picture in RGB at the job's size (Lanczos, where it differs)."""
    from PIL import Image

    if job.image is None:
        raise GenerationError("An image-to-image job needs a source picture.")
    if job.width % 8 or job.height % 8:
        # The pipeline would quietly round the size down (text-to-image refuses it).
        raise GenerationError(f"Image-to-image sizes are multiples of 8, not "
                              f"{job.width}x{job.height}.")
    image = job.image.convert("RGB")
    if image.size != (job.width, job.height):
        image = image.resize((job.width, job.height), Image.Resampling.LANCZOS)
    return image
