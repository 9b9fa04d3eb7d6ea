"""The engine: one loaded pipeline on one device, turning jobs into pictures.

Only the queue's worker thread calls `generate`; nothing else touches the pipeline.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from . import speed
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
    """One model on one device; also the queue's runner when only one model is configured.

    Options (speed.py): `vae`, a VAE folder used in place of the model's own (an fp16-safe
    one for SDXL); `fast_decoder`, a tiny decoder folder (TAESD, TAESDXL) for jobs that ask
    for it (`Job.fast`); `compile`, torch.compile the UNet and the VAE decoder, with the
    compiled kernels kept in `cache_dir` (process-wide, see `speed.use_compile_cache`)."""

    # What an Engine made without __init__ (`from_pipeline`) has: none of the options, and
    # jobs with and without a negative prompt kept apart (see `batch_key`).
    vae_path: Path | None = None
    fast_decoder_path: Path | None = None
    compile = False
    cache_dir: Path | None = None
    tiny_decoder = None
    _zeros_for_empty = True

    def __init__(self, model: str | Path, device: str = "auto", name: str = "", *,
                 vae: str | Path | None = None, fast_decoder: str | Path | None = None,
                 compile: bool = False, cache_dir: str | Path | None = None):  # noqa: A002
        self.path = Path(model).expanduser().resolve()
        self.name = name or self.path.name
        self.family = inspect_model(self.path)
        self._native_size = native_size(self.path)
        self._zeros_for_empty = _zeros_for_empty_negative(self.path)
        self.requested_device = device
        self.placement: Placement | None = None
        self.pipe = None
        self._image_to_image = None  # made from `pipe` on the first img2img job
        # The folders' configs are read now, so that a wrong folder stops the start.
        try:
            if vae is not None:
                self.vae_path = Path(vae).expanduser().resolve()
                speed.autoencoder_config(self.vae_path, "AutoencoderKL", "VAE")
            if fast_decoder is not None:
                self.fast_decoder_path = Path(fast_decoder).expanduser().resolve()
                speed.autoencoder_config(self.fast_decoder_path, "AutoencoderTiny",
                                         "fast decoder")
        except speed.FolderError as exc:
            raise ModelError(str(exc)) from None
        self.compile = compile
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None

    def load(self) -> None:
        """Load the weights once, from the local folders only, onto the chosen device, and
        make them fast (`speed_up`)."""
        import torch
        from diffusers import AutoPipelineForText2Image

        _quiet_libraries()
        self.placement = choose(self.requested_device)
        started = time.perf_counter()
        # A configured VAE is passed in, so that the model's own is not loaded at all.
        vae = (speed.load_vae(self.vae_path, self.path, self.placement)
               if self.vae_path is not None else None)
        pipe = AutoPipelineForText2Image.from_pretrained(
            self.path, dtype=self.placement.dtype, local_files_only=True,
            **({"vae": vae} if vae is not None else {}),
        )
        pipe.to(self.placement.device)
        pipe.set_progress_bar_config(disable=True)
        torch.set_grad_enabled(False)
        if self.fast_decoder_path is not None:
            self.tiny_decoder = speed.load_tiny_decoder(self.fast_decoder_path, self.placement)
        log.info(
            "loaded %s (%s) on %s in %s in %.1f s",
            self.name, self.family, self.placement.device, self.placement.dtype_name,
            time.perf_counter() - started,
        )
        self.speed_up(pipe, vae_configured=vae is not None)
        self.pipe = pipe

    def speed_up(self, pipe, vae_configured: bool = False) -> list[str]:
        """Apply the speed-ups (speed.py) to a pipeline on `self.placement`, and log in one
        line what is on, and what is not and why. Returns that line's parts."""
        notes = speed.optimize(pipe, self.placement)
        notes.append(speed.vae_precision(pipe, self.name, self.family, self.placement,
                                         vae_configured))
        if self.compile:
            if self.cache_dir is not None:
                speed.use_compile_cache(self.cache_dir)
            notes.append(speed.compile_models(pipe, self.placement))
        else:
            notes.append("compile: off")
        notes.append("fast decoder: " + ("on" if self.tiny_decoder is not None else "none"))
        log.info("speed-ups for %s: %s", self.name, "; ".join(notes))
        return notes

    def unload(self) -> None:
        """Drop the pipeline and give its memory back to the device.

        Also after a failed load, to free what it had placed before it failed.
        """
        self.pipe = self._image_to_image = self.tiny_decoder = None
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

    def warm_up(self, width: int, height: int, steps: int = 1, *,
                sizes: Iterable[tuple[int, int]] = (), guidance: float = 0.0,
                batch: int = 1) -> float:
        """Throw-away runs, so that the first user's picture pays neither for kernel setup
        nor (with `compile`) for compiling: one picture at width×height and at each of
        `sizes`, and with `batch` over 1 a batch of 2, which makes the compiled batch size
        dynamic (each batch up to `batch` then runs without compiling). `guidance` as jobs
        will have it: above 1 the UNet sees twice the pictures. Returns the seconds."""
        shapes = [(width, height, 1), *((w, h, 1) for w, h in sizes)]
        if batch > 1:
            shapes.append((width, height, 2))
        started = time.perf_counter()
        for w, h, count in dict.fromkeys(shapes):  # in order, each once
            self.generate(Job(prompt="warm-up", seed=0, steps=steps, width=w, height=h,
                              guidance=guidance, count=count))
        seconds = time.perf_counter() - started
        log.info("warm-up at %s took %.2f s", ", ".join(
            f"{w}x{h}" + (f" (batch of {count})" if count > 1 else "")
            for w, h, count in dict.fromkeys(shapes)), seconds)
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

        self._check_job(job)
        try:
            return self._run([(job, index) for index in range(job.count)])
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if job.count == 1:
                raise self._too_big(job) from None
        log.warning("a batch of %d at %dx%d did not fit in GPU memory; making them one by one",
                    job.count, job.width, job.height)
        images = []
        for index in range(job.count):
            try:
                images += self._run([(job, index)])
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise self._too_big(job) from None
        return images

    def batch_key(self, job: Job) -> tuple | None:
        """What jobs must share to be made in one `generate_batch` call; None: made alone."""
        if job.model not in ("", self.name):
            return None  # `generate` says what is wrong with it
        return batch_key(job, self.name, self._zeros_for_empty)

    def generate_batch(self, jobs: list[Job]) -> list[list]:
        """Several txt2img jobs of one `batch_key` in one pipeline call: the pictures of each
        job, as `generate` would make them alone (the same seeds, so the same pictures up to
        the last bit of batched kernels). When they do not fit in GPU memory together, the
        jobs are made one after the other, each as `generate` makes it."""
        import torch

        keys = [self.batch_key(job) for job in jobs]
        if None in keys or len(set(keys)) > 1:
            raise ValueError("only txt2img jobs of one model, size, steps, guidance and "
                             f"decoder share a batch, not {keys}")
        if len(jobs) <= 1:
            return [self.generate(job) for job in jobs]
        self._check_job(jobs[0])
        images = None
        try:
            images = self._run([(job, index) for job in jobs for index in range(job.count)])
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
        if images is None:  # out of the except block, so that the batch's tensors are gone
            log.warning("a batch of %d jobs (%d pictures) at %dx%d did not fit in GPU "
                        "memory; making them one job at a time", len(jobs),
                        sum(job.count for job in jobs), jobs[0].width, jobs[0].height)
            return [self.generate(job) for job in jobs]
        made, start = [], 0
        for job in jobs:
            made.append(images[start:start + job.count])
            start += job.count
        return made

    def _check_job(self, job: Job) -> None:
        self._check(job.model)
        if job.kind not in RUNS:
            raise GenerationError(f"The diffusion engine makes {' and '.join(RUNS)} jobs, "
                                  f"not {job.kind}.")
        if self.pipe is None:
            raise RuntimeError("Engine.generate called before load()")
        if job.fast and self.tiny_decoder is None:
            raise GenerationError("This bot has no fast decoder; ask without --fast.")

    @staticmethod
    def _too_big(job: Job) -> GenerationError:
        return GenerationError(f"The GPU ran out of memory for {job.width}x{job.height}; "
                               "try a smaller size.")

    def _run(self, pictures: list[tuple[Job, int]]) -> list:
        """One pipeline call making `pictures`, (job, index) pairs of jobs of one shape (the
        first job's size, steps, guidance, kind and decoder are everyone's)."""
        import torch

        job = pictures[0][0]
        # One generator per picture, on the CPU, so a seed gives the same starting noise on
        # every machine, and picture i of a job starts from what seed+i alone would
        # (batched kernels may still differ from single ones in the last bit).
        generators = [torch.Generator("cpu").manual_seed(j.seed + i) for j, i in pictures]
        # The negative prompt only matters with classifier-free guidance (guidance > 1).
        # Beside jobs that have one, a job without one has "", which is what the pipeline
        # uses for None (SDXL uses zeros instead: `batch_key` keeps those jobs apart).
        negatives = [j.negative_prompt for j, _ in pictures]
        common = dict(prompt=[j.prompt for j, _ in pictures],
                      negative_prompt=negatives if any(negatives) else None,
                      guidance_scale=job.guidance, generator=generators, output_type="pil")
        pipe = self.image_to_image if job.kind == "img2img" else self.pipe
        with torch.inference_mode(), self._decoder(pipe, job.fast):
            if job.kind == "img2img":
                output = pipe(image=_source(job), strength=job.strength,
                              num_inference_steps=img2img_steps(job), **common)
            else:
                output = pipe(num_inference_steps=job.steps, width=job.width,
                              height=job.height, **common)
        return list(output.images)

    @contextmanager
    def _decoder(self, pipe, fast: bool):
        """For a fast job, the tiny decoder in the pipeline's VAE seat during the call (it
        also encodes an img2img source). Only the worker thread calls the pipeline, so no
        other job sees the swap."""
        if not fast:
            yield
            return
        full, pipe.vae = pipe.vae, self.tiny_decoder
        try:
            yield
        finally:
            pipe.vae = full


def batch_key(job: Job, model: str = "", zeros_for_empty: bool = True) -> tuple | None:
    """What jobs must share to be made in one pipeline call, or None: the job is made alone.

    txt2img jobs of one model, size, steps, guidance and decoder share a call; their
    prompts, negative prompts, seeds and counts may differ. img2img jobs each start from a
    picture of their own, and upscale jobs are no diffusion: they are made alone. With
    guidance above 1 and `zeros_for_empty` (SDXL's `force_zeros_for_empty_prompt`: no
    negative prompt means a negative embedding of zeros, where a batch beside other
    negative prompts would give it the encoding of ""), jobs with a negative prompt and
    jobs without one are made apart."""
    if job.kind != "txt2img":
        return None
    negative = bool(job.negative_prompt) if zeros_for_empty and job.guidance > 1 else None
    return (model or job.model, job.width, job.height, job.steps, job.guidance, job.fast,
            negative)


def _zeros_for_empty_negative(folder: Path) -> bool:
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


def from_pipeline(pipe, name: str, device: str = "auto",
                  compile: bool = False) -> Engine:  # noqa: A002
    """An Engine over a pipeline already built in memory instead of loaded from a folder (the
    bench's full-size random-weight models, `test_model.random_pipeline`): moved to the
    device and precision `load()` would choose and sped up as `load()` does (`speed_up`,
    torch.compile with `compile`), it then runs jobs like a loaded one. It has no folder:
    `path` is None, and `load()` is not to be called (`unload()` works)."""
    import torch

    if type(pipe).__name__ not in SUPPORTED:
        raise ModelError(f"the engine drives {', '.join(sorted(SUPPORTED))}, "
                         f"not a {type(pipe).__name__}")
    _quiet_libraries()
    engine = Engine.__new__(Engine)  # what __init__ sets, without a folder to read it from
    sample = pipe.unet.config.sample_size
    height, width = (sample, sample) if isinstance(sample, int) else sample
    engine.path, engine.name = None, name
    engine.family = SUPPORTED[type(pipe).__name__]
    engine._native_size = (width * pipe.vae_scale_factor, height * pipe.vae_scale_factor)
    engine.requested_device, engine._image_to_image = device, None
    engine.compile = compile
    engine.placement = choose(device)
    # What load() does after from_pretrained.
    pipe.to(engine.placement.device, engine.placement.dtype)
    pipe.set_progress_bar_config(disable=True)
    torch.set_grad_enabled(False)
    engine.speed_up(pipe)
    engine.pipe = pipe
    return engine
