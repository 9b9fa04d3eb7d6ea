"""The engine: one loaded pipeline on one device, turning jobs into pictures.

Only the queue's worker thread calls `generate`; nothing else touches the pipeline.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from ..families import edit_only
from ..families.known import BY_PIPELINE, SD, Family, refine
from ..families.model_folder import (
    ModelError,
    family_of,
    native_size,
    unknown_model,
    zeros_for_empty_negative,
)
from ..job import GenerationError, Job
from ..runtime import quantize_offload, speedups
from ..runtime.device import Placement, choose, make_current
from ..scheduling.runner import LocalRunner
from . import lora, pipeline_call

log = logging.getLogger(__name__)


# The kinds of job an engine runs (upscaling needs no diffusion model).
RUNS = ("txt2img", "img2img", "edit")


def quiet_libraries() -> None:
    """The hub libraries print progress bars and advice meant for notebooks; a service's
    log should carry only what matters (their errors still come through)."""
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


class Engine(LocalRunner):
    """One model on one device; also the queue's runner when only one model is configured.

    Options (speedups.py): `vae`, a VAE folder used in place of the model's own (an fp16-safe
    one for SDXL); `fast_decoder`, a tiny decoder folder (TAESD, TAESDXL) for jobs that ask
    for it (`Job.fast`); `compile`, torch.compile the UNet and the VAE decoder, with the
    compiled kernels kept in `cache_dir` (process-wide, see `speedups.use_compile_cache`);
    `quantize` and `offload`, a quantized denoiser and offloading (quantize_offload.py)."""

    # What an Engine over a pipeline built in memory (`from_pipeline`) has: none of the
    # options, and jobs with and without a negative prompt kept apart (see `batch_key`).
    vae_path: Path | None = None
    fast_decoder_path: Path | None = None
    compile = False
    cache_dir: Path | None = None
    tiny_decoder = None
    _zeros_for_empty = True
    traits: Family = SD
    loras: dict[str, Path] = {}  # never changed in place: each engine sets its own
    _adapter: tuple[str, float] | None = None
    fit = quantize_offload.Fit()  # what load() did to fit the card

    def __init__(
        self,
        model: str | Path | None,
        device: str = "auto",
        name: str = "",
        *,
        vae: str | Path | None = None,
        fast_decoder: str | Path | None = None,
        compile: bool = False,
        cache_dir: str | Path | None = None,  # noqa: A002
        loras: dict[str, str | Path] | None = None,
        quantize: str = "none",
        offload: str = "auto",
        traits: Family | None = None,
        size: tuple[int, int] | None = None,
    ):
        """`model` is the folder the weights load from, read now for the family and native
        size; None for a pipeline built in memory (`from_pipeline`), which says its `traits`
        and native `size` itself."""
        if model is None:
            self.path, self.name = None, name
            self.traits, self._native_size = traits, size
        else:
            self.path = Path(model).expanduser().resolve()
            self.name = name or self.path.name
            self.traits = family_of(self.path)
            self._native_size = native_size(self.path)
            self._zeros_for_empty = zeros_for_empty_negative(self.path)
        self.family = self.traits.key
        self.requested_device = device
        self.placement: Placement | None = None
        self.pipe = None
        self._image_to_image = None  # made from `pipe` on the first img2img job
        # The folders' configs are read now, so that a wrong folder stops the start.
        try:
            if vae is not None:
                self.vae_path = Path(vae).expanduser().resolve()
                speedups.autoencoder_config(self.vae_path, "AutoencoderKL", "VAE")
            if fast_decoder is not None:
                self.fast_decoder_path = Path(fast_decoder).expanduser().resolve()
                speedups.autoencoder_config(
                    self.fast_decoder_path, "AutoencoderTiny", "fast decoder"
                )
        except speedups.FolderError as exc:
            raise ModelError(str(exc)) from None
        self.compile = compile
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.loras = {name: Path(path).expanduser() for name, path in (loras or {}).items()}
        self._adapter: tuple[str, float] | None = None  # the one on now; None: LoRAs off
        self.quantize, self.offload = quantize_offload.options(quantize, offload)

    @classmethod
    def from_pipeline(
        cls, pipe, name: str, device: str = "auto", compile: bool = False, quantize: str = "none"
    ) -> Engine:  # noqa: A002
        """An Engine over a pipeline already built in memory instead of loaded from a folder
        (the bench's full-size random-weight models, `testing.full_size.random_pipeline`):
        moved to the device and precision `load()` would choose and sped up as `load()` does
        (`speed_up`, torch.compile with `compile`; the denoiser quantized with `quantize`, as
        `generation.quantize`), it then runs jobs like a loaded one. It has no folder: `path`
        is None, and `load()` is not to be called (`unload()` works)."""
        import torch

        family = BY_PIPELINE.get(type(pipe).__name__)
        if family is None:
            raise ModelError(
                f"the engine drives {', '.join(sorted(BY_PIPELINE))}, not a {type(pipe).__name__}"
            )
        quiet_libraries()
        traits = refine(
            family,
            dict(pipe.config),
            dict(getattr(getattr(pipe, "transformer", None), "config", {})),
        )
        if family.denoiser == "unet":
            sample = pipe.unet.config.sample_size
            height, width = (sample, sample) if isinstance(sample, int) else sample
            size = (width * pipe.vae_scale_factor, height * pipe.vae_scale_factor)
        else:  # a transformer's config gives no size: the family's own
            size = (family.native_side, family.native_side)
        engine = cls(
            None, device, name, compile=compile, quantize=quantize, traits=traits, size=size
        )
        engine.placement = choose(device, fp16_safe=engine.traits.denoiser == "unet")
        # What load() does after from_pretrained.
        pipe.to(engine.placement.device, engine.placement.dtype)
        if quantize != "none":
            quantize_offload.check(quantize, engine.placement)
            on = engine.placement.device  # layer by layer on the card, as `fit` does
            quantize_offload.quantize_denoiser(
                getattr(pipe, family.denoiser), quantize, on if on.startswith("cuda") else None
            )
            engine.fit = quantize_offload.Fit(
                quantize,
                "none",
                (f"quantize: {quantize} (torchao, {family.denoiser})", "offload: none"),
            )
        pipe.set_progress_bar_config(disable=True)
        torch.set_grad_enabled(False)
        engine.speed_up(pipe)
        engine.pipe = pipe
        return engine

    def load(self) -> None:
        """Load the weights once, from the local folders only, onto the chosen device (whole
        or offloaded, `quantize_offload.fit`, in place of `pipe.to`), and make them fast
        (`speed_up`)."""
        import torch
        from diffusers import AutoPipelineForText2Image

        quiet_libraries()
        self.placement = choose(self.requested_device, fp16_safe=self.traits.denoiser == "unet")
        # This thread may not be the worker's: the start loads the default model on its own.
        make_current(self.placement.device)
        quantize_offload.check(self.quantize, self.placement)  # before the weights load
        started = time.perf_counter()
        # A configured VAE is passed in, so that the model's own is not loaded at all.
        vae = (
            speedups.load_vae(self.vae_path, self.path, self.placement)
            if self.vae_path is not None
            else None
        )
        # AutoPipeline knows no text-to-image pipeline of a family that only edits.
        load = (
            AutoPipelineForText2Image.from_pretrained
            if self.traits.text_to_image
            else edit_only.load_pipeline
        )
        pipe = load(
            self.path,
            dtype=self.placement.dtype,
            local_files_only=True,
            **({"vae": vae} if vae is not None else {}),
        )
        self.fit = quantize_offload.fit(
            pipe,
            self.path,
            self.traits,
            self.placement,
            self.name,
            quantize=self.quantize,
            offload=self.offload,
            compiled=self.compile,
        )
        pipe.set_progress_bar_config(disable=True)
        lora.load(pipe, self.loras, self.name, self.traits)  # before fusing and compiling
        torch.set_grad_enabled(False)
        if self.fast_decoder_path is not None:
            self.tiny_decoder = speedups.load_tiny_decoder(self.fast_decoder_path, self.placement)
        log.info(
            "loaded %s (%s) on %s in %s in %.1f s",
            self.name,
            self.traits.label,
            self.placement.device,
            self.placement.dtype_name,
            time.perf_counter() - started,
        )
        self.speed_up(pipe, vae_configured=vae is not None)
        self.pipe = pipe

    def speed_up(self, pipe, vae_configured: bool = False) -> list[str]:
        """Apply the speed-ups (speedups.py) to a pipeline on `self.placement`, and log in one
        line what is on, and what is not and why. Returns that line's parts."""
        why = "LoRA adapters" if self.loras else self.fit.unfused  # QKV kept apart ("": not)
        notes = [
            *self.fit.notes,
            *speedups.optimize(pipe, self.placement, self.traits.denoiser, why),
        ]
        notes.append(
            speedups.vae_precision(pipe, self.name, self.family, self.placement, vae_configured)
        )
        if self.compile:
            if self.cache_dir is not None:
                speedups.use_compile_cache(self.cache_dir)
            notes.append(
                speedups.compile_models(
                    pipe, self.placement, self.traits.denoiser, offload=self.fit.offload
                )
            )
        else:
            notes.append("compile: off")
        notes.append("fast decoder: " + ("on" if self.tiny_decoder is not None else "none"))
        log.info("speed-ups for %s: %s", self.name, "; ".join(notes))
        return notes

    def memory_need(self) -> int:
        """Bytes of free device memory this model needs to load as configured and make
        pictures (quantize_offload.need: its weights as loaded, and the working room); read
        from its folder: nothing loads."""
        placement = self.placement or choose(
            self.requested_device, fp16_safe=self.traits.denoiser == "unet"
        )
        weights = quantize_offload.weights_on_card(self.path, self.traits, placement, self.quantize)
        return quantize_offload.need(weights, self.offload)

    def unload(self) -> None:
        """Drop the pipeline and give its memory back to the device.

        Also after a failed load, to free what it had placed before it failed.
        """
        self.pipe = self._image_to_image = self.tiny_decoder = None
        gc.collect()  # pipelines hold reference cycles; free their tensors now, not later
        # Hand the allocator's cached blocks back, so that the next model (and
        # `torch.cuda.mem_get_info`) sees the memory as free.
        self._empty_cache()

    @property
    def models(self) -> list[str]:
        return [self.name]

    def native_size(self, name: str = "") -> tuple[int, int]:
        """The (width, height) the model was trained at; `name` must be "" or this model's."""
        self._check(name)
        return self._native_size

    def family_of(self, name: str = "") -> Family:
        """What the model can do (families/known.py); `name` must be "" or this model's."""
        self._check(name)
        return self.traits

    def _check(self, name: str) -> None:
        if name not in ("", self.name):
            raise unknown_model(name, self.models)

    def warm_up(
        self,
        width: int,
        height: int,
        steps: int = 1,
        *,
        sizes: Iterable[tuple[int, int]] = (),
        guidance: float = 0.0,
        batch: int = 1,
    ) -> float:
        """Throw-away runs, so that the first user's picture pays neither for kernel setup
        nor (with `compile`) for compiling: one picture at width×height and at each of
        `sizes`, and with `batch` over 1 a batch of 2, which makes the compiled batch size
        dynamic (each batch up to `batch` then runs without compiling). `guidance` as jobs
        will have it: above 1 the UNet sees twice the pictures. A family that only edits
        edits a blank picture instead. Returns the seconds."""
        shapes = [(width, height, 1), *((w, h, 1) for w, h in sizes)]
        if batch > 1:
            shapes.append((width, height, 2))
        started = time.perf_counter()
        for w, h, count in dict.fromkeys(shapes):  # in order, each once
            self.generate(edit_only.warm_up_job(self.traits, w, h, steps, guidance, count))
        seconds = time.perf_counter() - started
        log.info(
            "warm-up at %s took %.2f s",
            ", ".join(
                f"{w}x{h}" + (f" (batch of {count})" if count > 1 else "")
                for w, h, count in dict.fromkeys(shapes)
            ),
            seconds,
        )
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

        txt2img, img2img and edit jobs; an upscale job is not the engine's (see
        postprocess/finishing_runner.py). The pictures of a job are one batch; when the batch
        does not fit in GPU memory they are made one after the other instead (same seeds,
        same pictures), and only a single picture that does not fit is the user's problem."""
        self._check_job(job)
        images = self._fitting([(job, index) for index in range(job.count)])
        if images is not None:
            return images
        if job.count == 1:
            raise self._too_big(job)
        log.warning(
            "a batch of %d at %dx%d did not fit in GPU memory; making them one by one",
            job.count,
            job.width,
            job.height,
        )
        images = []
        for index in range(job.count):
            one = self._fitting([(job, index)])
            if one is None:
                raise self._too_big(job)
            images += one
        return images

    def batch_key(self, job: Job) -> tuple | None:
        """What jobs must share to be made in one `generate_batch` call; None: made alone."""
        if job.model not in ("", self.name):
            return None  # `generate` says what is wrong with it
        return pipeline_call.batch_key(job, self.name, self._zeros_for_empty)

    def generate_batch(self, jobs: list[Job]) -> list[list]:
        """Several txt2img jobs of one `batch_key` in one pipeline call: the pictures of each
        job, as `generate` would make them alone (the same seeds, so the same pictures up to
        the last bit of batched kernels). When they do not fit in GPU memory together, the
        jobs are made one after the other, each as `generate` makes it."""
        keys = [self.batch_key(job) for job in jobs]
        if None in keys or len(set(keys)) > 1:
            raise ValueError(
                "only txt2img jobs of one model, size, steps, guidance and "
                f"decoder share a batch, not {keys}"
            )
        if len(jobs) <= 1:
            return [self.generate(job) for job in jobs]
        self._check_job(jobs[0])
        images = self._fitting([(job, index) for job in jobs for index in range(job.count)])
        if images is None:
            log.warning(
                "a batch of %d jobs (%d pictures) at %dx%d did not fit in GPU "
                "memory; making them one job at a time",
                len(jobs),
                sum(job.count for job in jobs),
                jobs[0].width,
                jobs[0].height,
            )
            return [self.generate(job) for job in jobs]
        made, start = [], 0
        for job in jobs:
            made.append(images[start : start + job.count])
            start += job.count
        return made

    def _check_job(self, job: Job) -> None:
        self._check(job.model)
        if job.kind not in RUNS:
            raise GenerationError(
                f"The diffusion engine makes {', '.join(RUNS[:-1])} and "
                f"{RUNS[-1]} jobs, not {job.kind}."
            )
        if self.pipe is None:
            raise RuntimeError("Engine.generate called before load()")
        if job.lora and job.lora not in self.loras:
            raise GenerationError(f"The LoRA {job.lora} is not loaded on {self.name}.")
        only_edits = edit_only.refusal(self.name, self.traits, job.kind)
        if only_edits is not None:
            raise only_edits
        if job.kind == "edit" and not self.traits.edits:
            raise GenerationError(
                f"The model {self.name} ({self.traits.label}) cannot edit pictures by instruction."
            )
        if job.fast and self.tiny_decoder is None:
            raise GenerationError("This bot has no fast decoder; ask without --fast.")

    def _fitting(self, pictures: list[tuple[Job, int]]) -> list | None:
        """`_run`, or None where the pictures did not fit in GPU memory, with the memory
        their try held handed back to the device."""
        import torch

        try:
            return self._run(pictures)
        except torch.cuda.OutOfMemoryError:
            pass
        # Out of the except block: inside it, the error's traceback still holds the failed
        # call's frames, and with them the batch's latents and activations, which
        # empty_cache could then not hand back.
        self._empty_cache()
        return None

    def _empty_cache(self) -> None:
        if self.placement is not None and self.placement.device.startswith("cuda"):
            import torch

            make_current(self.placement.device)  # empty_cache empties the current device
            torch.cuda.empty_cache()

    def _run(self, pictures: list[tuple[Job, int]]) -> list:
        # The thread may not be the one that loaded the model (the start warms up on its
        # own; the workers generate); its current device must be the model's.
        make_current(self.placement.device)
        if not self.traits.batches and len(pictures) > 1:  # one call a picture, same seeds
            return [image for picture in pictures for image in self._run([picture])]
        pipe = self.image_to_image if pictures[0][0].kind == "img2img" else self.pipe
        self._adapter = lora.switch(self.pipe, self._adapter, pictures[0][0], self.loras)
        return pipeline_call.run(pipe, pictures, self.tiny_decoder, self.traits)

    @staticmethod
    def _too_big(job: Job) -> GenerationError:
        return GenerationError(
            f"The GPU ran out of memory for {job.width}x{job.height}; try a smaller size."
        )
