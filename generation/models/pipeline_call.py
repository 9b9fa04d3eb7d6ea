"""One call of a diffusion pipeline: which jobs may share it (`batch_key`), what an
image-to-image call is given, and the call itself, seeded picture by picture.

Run only by an engine's worker thread (engine.py), which owns the pipeline.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager

from ..families.known import SD, Family
from ..job import GenerationError, Job
from ..scheduling import progress


def run(pipe, pictures: list[tuple[Job, int]], tiny_decoder=None, family: Family = SD) -> list:
    """One pipeline call making `pictures`, (job, index) pairs of jobs of one shape (the
    first job's size, steps, guidance, kind and decoder are everyone's), with the arguments
    `family` takes (families/known.py)."""
    import torch

    job = pictures[0][0]
    # One generator per picture, on the CPU, so a seed gives the same starting noise on
    # every machine, and picture i of a job starts from what seed+i alone would
    # (batched kernels may still differ from single ones in the last bit).
    generators = [torch.Generator("cpu").manual_seed(j.seed + i) for j, i in pictures]
    common = dict(
        prompt=[j.prompt for j, _ in pictures],
        generator=generators,
        output_type="pil",
        **arguments(family, job.guidance, [j.negative_prompt for j, _ in pictures]),
        **_progress(pipe, pictures),
    )
    with torch.inference_mode(), _decoder(pipe, tiny_decoder if job.fast else None):
        if job.kind == "img2img" and family.strength:
            # The transformer families' img2img pipelines draw at 1024² unless told the
            # size (the source is already at the job's size); SD's take no size at all.
            size = (
                dict(width=job.width, height=job.height)
                if "width" in inspect.signature(pipe.__call__).parameters
                else {}
            )
            output = pipe(
                image=_source(job, family),
                strength=job.strength,
                num_inference_steps=img2img_steps(job),
                **size,
                **common,
            )
        elif job.kind in ("img2img", "edit"):  # the source is a reference picture (FLUX.2)
            output = pipe(
                image=[_source(job, family), *_references(job)],
                num_inference_steps=job.steps,
                width=job.width,
                height=job.height,
                **common,
            )
        else:
            output = pipe(
                num_inference_steps=job.steps, width=job.width, height=job.height, **common
            )
    return list(output.images)


def _progress(pipe, pictures: list[tuple[Job, int]]) -> dict:
    """The step callback of a call, where someone listens and the pipeline takes one. A
    set made one picture a call reports which picture it is at."""
    job, index = pictures[0]
    one_of_a_set = len(pictures) == 1 and job.count > 1
    callback = progress.step_callback(
        job.steps, index + 1 if one_of_a_set else 0, job.count if one_of_a_set else 0
    )
    if (
        callback is None
        or "callback_on_step_end" not in inspect.signature(pipe.__call__).parameters
    ):
        return {}
    return {"callback_on_step_end": callback}


def arguments(family: Family, guidance: float, negatives: list[str]) -> dict:
    """The guidance and negative prompts of one call, as `family`'s pipeline takes them.

    The negative prompt only matters with classifier-free guidance (guidance > 1). Beside
    jobs that have one, a job without one has the family's blank negative ("", which is
    what SD's pipeline uses for None; SDXL uses zeros instead: `batch_key` keeps those
    jobs apart)."""
    given = dict(family.fixed)
    if family.guidance is not None:
        given[family.guidance] = guidance
    if family.guided(guidance) and (any(negatives) or family.blank_negative):
        given["negative_prompt"] = [n or family.blank_negative for n in negatives]
    return given


@contextmanager
def _decoder(pipe, tiny_decoder):
    """For a fast job, the tiny decoder in the pipeline's VAE seat during the call (it
    also encodes an img2img source). Only the worker thread calls the pipeline, so no
    other job sees the swap."""
    if tiny_decoder is None:
        yield
        return
    full, pipe.vae = pipe.vae, tiny_decoder
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
    return (
        model or job.model,
        job.width,
        job.height,
        job.steps,
        job.guidance,
        job.fast,
        negative,
        job.lora,
        job.lora_weight,
    )  # one set of adapters a call


def img2img_steps(job: Job) -> int:
    """The steps to ask an img2img pipeline for, so that it runs at least one.

    diffusers runs only the last int(steps × strength) of `steps` (the first ones would
    paint the part of the picture that is kept): 2 steps at strength 0.3 would run none and
    fail. So the steps are raised to ceil(1 / strength) where that is needed; the picture's
    record keeps the steps asked for."""
    if not 0 < job.strength <= 1:
        raise GenerationError(
            f"The strength of an image-to-image job is above 0 and at most 1, not {job.strength}."
        )
    steps = max(job.steps, math.ceil(1 / job.strength))
    while int(steps * job.strength) < 1:  # 1 / strength may round down in floating point
        steps += 1
    return steps


def _references(job: Job) -> list:
    """An edit's further pictures in RGB, at their own sizes (the pipeline scales them)."""
    if len(job.reference_images) != len(job.references):
        raise GenerationError("An edit's reference pictures were not all fetched.")
    return [image.convert("RGB") for image in job.reference_images]


def _source(job: Job, family: Family = SD):
    """The job's source picture in RGB at the job's size (Lanczos, where it differs)."""
    from PIL import Image

    if job.image is None:
        raise GenerationError(
            f"An {'edit' if job.kind == 'edit' else 'image-to-image'} job needs a source picture."
        )
    if job.width % family.multiple or job.height % family.multiple:
        # The pipeline would quietly round the size down (text-to-image refuses it).
        raise GenerationError(
            f"Image-to-image sizes are multiples of {family.multiple}, "
            f"not {job.width}x{job.height}."
        )
    image = job.image.convert("RGB")
    if image.size != (job.width, job.height):
        image = image.resize((job.width, job.height), Image.Resampling.LANCZOS)
    return image
