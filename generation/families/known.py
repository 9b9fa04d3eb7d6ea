"""The model families imgbot drives, and what each one can do: what chat offers follows
this table, so that a person is told "this model has no negative prompt" instead of the
pipeline failing deep inside, or quietly ignoring what was asked.

Pure data (no torch): `imgbot check`, the start and the chat side read it before any model
is loaded. A family is recognised from the `_class_name` of a folder's model_index.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ImgbotError


class ModelError(ImgbotError):
    """The model folder cannot be used; the message says why."""


@dataclass(frozen=True)
class Family:
    """What one family of models takes and needs.

    `guidance` is the pipeline argument imgbot's one guidance number goes to: classifier-free
    guidance (`guidance_scale` for SD, SDXL and Z-Image, `true_cfg_scale` for Qwen-Image),
    FLUX.1 [dev]'s distilled guidance embedding (`guidance_scale`, no negative prompt, no
    second pass), or None where the model has none (FLUX.1 [schnell], FLUX.2 [klein] 4B
    distilled). `negative_prompt`: the family takes one (used with guidance above 1)."""

    key: str  # what `imgbot check`, logs and `!img models` name it by
    label: str
    native_side: int  # the side it was trained at, where its configs do not say
    steps: int  # default steps and guidance, where the config sets none
    guidance_default: float
    guidance: str | None = "guidance_scale"
    negative_prompt: bool = True
    cfg: bool = True  # guidance above 1 runs the denoiser twice (classifier-free guidance)
    multiple: int = 8  # width and height are multiples of this
    denoiser: str = "transformer"  # the pipeline's attribute holding the denoiser
    strength: bool = True  # img2img takes a strength; False: the source is a reference
    edits: bool = False  # edits a picture by instruction
    pictures: int = 1  # an edit takes up to this many: the one it changes, then references
    text_to_image: bool = True  # False: it only edits (no txt2img, no img2img)
    batches: bool = True  # several pictures in one call; False: one call a picture
    # The negative prompt of a job without one, beside jobs with one (or alone where the
    # pipeline guides only with a negative prompt: Qwen-Image's true CFG, with " ").
    blank_negative: str = ""
    fixed: tuple[tuple[str, object], ...] = ()  # arguments every call of the family gets
    # The fewest steps that make a picture: Qwen-Image's schedule, stretched to end at 0.02,
    # divides 0 by 0 at one step (NaN pixels), so its warm-up runs two.
    min_steps: int = 1
    suggested: str = ""  # for README and messages: a model with a licence a company can use

    def guided(self, guidance: float) -> bool:
        """Whether a negative prompt does anything at this guidance."""
        return self.negative_prompt and self.cfg and guidance > 1

    def check_size(self, width: int, height: int) -> str | None:
        """Why width×height does not suit this family, or None."""
        if width % self.multiple or height % self.multiple:
            return (
                f"{self.label} pictures have sides that are multiples of {self.multiple}, "
                f"not {width}x{height}"
            )
        return None


SD = Family(
    "sd",
    "SD 1.x/2.x",
    512,
    steps=4,
    guidance_default=0.0,
    denoiser="unet",
    suggested="stabilityai/sd-turbo (4 steps)",
)
SDXL = Family(
    "sdxl",
    "SDXL",
    1024,
    steps=4,
    guidance_default=0.0,
    denoiser="unet",
    suggested="stabilityai/sdxl-turbo (4 steps); SDXL base at 30 steps, guidance 6",
)
FLUX_SCHNELL = Family(
    "flux",
    "FLUX.1 [schnell]",
    1024,
    steps=4,
    guidance_default=0.0,
    guidance=None,
    negative_prompt=False,
    cfg=False,
    multiple=16,
    suggested="black-forest-labs/FLUX.1-schnell (Apache-2.0, 4 steps)",
)
FLUX_DEV = Family(
    "flux",
    "FLUX.1 [dev]",
    1024,
    steps=28,
    guidance_default=3.5,
    negative_prompt=False,
    cfg=False,
    multiple=16,
    suggested="black-forest-labs/FLUX.1-dev (non-commercial licence)",
)
FLUX2_KLEIN = Family(
    "flux2-klein",
    "FLUX.2 [klein]",
    1024,
    steps=4,
    guidance_default=0.0,
    guidance=None,
    negative_prompt=False,
    cfg=False,
    multiple=16,
    strength=False,
    edits=True,
    pictures=4,
    # its default, 4, would make the distilled model warn on every call
    fixed=(("guidance_scale", 1.0),),
    suggested="black-forest-labs/FLUX.2-klein-4B (Apache-2.0, 4 steps)",
)
FLUX2_KLEIN_BASE = Family(
    "flux2-klein",
    "FLUX.2 [klein] base",
    1024,
    steps=50,
    guidance_default=4.0,
    negative_prompt=False,
    multiple=16,
    strength=False,
    edits=True,
    pictures=4,
    suggested="black-forest-labs/FLUX.2-klein-base-4B (Apache-2.0)",
)
ZIMAGE = Family(
    "zimage",
    "Z-Image",
    1024,
    steps=8,
    guidance_default=0.0,
    multiple=16,
    suggested="Tongyi-MAI/Z-Image-Turbo (Apache-2.0, 8 steps)",
)
QWENIMAGE = Family(
    "qwenimage",
    "Qwen-Image",
    1328,
    steps=50,
    guidance_default=4.0,
    guidance="true_cfg_scale",
    multiple=16,
    blank_negative=" ",
    min_steps=2,
    suggested="Qwen/Qwen-Image (Apache-2.0, 50 steps; 20B: an 80 GB card, or offloading / fp8)",
)
# The Plus pipeline (the 2509 and 2511 models): up to three pictures, one prompt a call (it
# refuses a batch). Their cards run 40 steps (the pipeline's default is 50), true CFG at 4
# with " " as the negative prompt.
QWENIMAGE_EDIT = Family(
    "qwenimage-edit",
    "Qwen-Image-Edit",
    1024,
    steps=40,
    guidance_default=4.0,
    guidance="true_cfg_scale",
    multiple=16,
    blank_negative=" ",
    strength=False,
    edits=True,
    pictures=3,
    text_to_image=False,
    batches=False,
    min_steps=2,
    suggested="Qwen/Qwen-Image-Edit-2511 (Apache-2.0; 20B: an 80 GB card, or offloading / fp8)",
)

# model_index.json's `_class_name` → family. The FLUX variants are told apart by their
# configs (`refine`).
BY_PIPELINE = {
    "StableDiffusionPipeline": SD,
    "StableDiffusionXLPipeline": SDXL,
    "FluxPipeline": FLUX_SCHNELL,
    "Flux2KleinPipeline": FLUX2_KLEIN,
    "ZImagePipeline": ZIMAGE,
    "QwenImagePipeline": QWENIMAGE,
    "QwenImageEditPlusPipeline": QWENIMAGE_EDIT,
}

FAMILIES = {family.key: family for family in BY_PIPELINE.values()}


def refine(family: Family, index: dict, transformer: dict) -> Family:
    """The variant a folder holds, from its model_index.json and transformer config: FLUX.1
    [dev] has a guidance embedding ([schnell] none); a FLUX.2 [klein] whose index does not
    say `is_distilled` (the pipeline's default is False) is a base model: 50 steps with
    guidance."""
    if family is FLUX_SCHNELL and transformer.get("guidance_embeds"):
        return FLUX_DEV
    if family is FLUX2_KLEIN and not index.get("is_distilled", False):
        return FLUX2_KLEIN_BASE
    return family
