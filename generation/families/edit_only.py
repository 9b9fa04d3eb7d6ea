"""Families that only edit pictures (Qwen-Image-Edit): loaded as their own pipeline, since
diffusers' AutoPipeline has no text-to-image one for them, warmed up with an edit, and
refusing the kinds of job they cannot run, with the model named.

Imports diffusers and transformers only inside the functions: the engine's worker calls
them once a model is being loaded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..job import GenerationError, Job
from .known import Family


def load_pipeline(folder: Path, **options):
    """The folder's own pipeline (model_index.json's `_class_name`), with a Qwen2-VL processor
    made of the folder's image processor and tokenizer alone (see `images_only`)."""
    from diffusers import DiffusionPipeline

    processor = folder / "processor"
    extra = {"processor": images_only(processor)} if processor.is_dir() else {}
    return DiffusionPipeline.from_pretrained(folder, **extra, **options)


def images_only(folder: Path):
    """The Qwen2-VL processor of `folder` (its image processor and tokenizer), as `processor`
    makes it."""
    # Qwen2VLImageProcessor, not AutoImageProcessor: without torchvision (imgbot needs none)
    # transformers 5.17's AutoImageProcessor refuses to load at all, where this class falls
    # back to its PIL backend (as AutoImageProcessor does in 5.25).
    from transformers import AutoTokenizer, Qwen2VLImageProcessor

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return processor(
        Qwen2VLImageProcessor.from_pretrained(folder, local_files_only=True), tokenizer
    )


def processor(image_processor, tokenizer):
    """A Qwen2VLProcessor without a video processor.

    transformers makes one only with a video processor, which needs torchvision (imgbot
    needs none otherwise), and the edit pipelines give it pictures and text alone."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImagesOnlyProcessor(Qwen2VLProcessor):
        # ProcessorMixin takes the parts this signature names: no video_processor.
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImagesOnlyProcessor(
        image_processor, tokenizer, chat_template=getattr(tokenizer, "chat_template", None)
    )


def warm_up_job(
    family: Family, width: int, height: int, steps: int, guidance: float, count: int
) -> Job:
    """A warm-up's throw-away job: a txt2img one, or where `family` only edits, an edit of a
    blank picture of that size; of at least the family's `min_steps`."""
    job = Job(
        prompt="warm-up",
        seed=0,
        steps=max(steps, family.min_steps),
        width=width,
        height=height,
        guidance=guidance,
        count=count,
    )
    if family.text_to_image:
        return job
    from PIL import Image

    return replace(job, kind="edit", image=Image.new("RGB", (width, height), (128, 128, 128)))


def refusal(name: str, family: Family, kind: str) -> GenerationError | None:
    """Why a job of `kind` cannot run on the model `name`, or None."""
    if family.text_to_image or kind == "edit":
        return None
    return GenerationError(
        f"The model {name} ({family.label}) only edits pictures by "
        f"instruction: it makes no {kind} jobs."
    )
