"""The seam between the chat side and the GPU side: a job goes in, a result comes out.

Both are plain frozen values: nothing here knows about Matrix or torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ImgbotError

KINDS = ("txt2img", "img2img", "edit", "upscale")


@dataclass(frozen=True)
class Job:
    """Everything the GPU needs to make one or more pictures, fully resolved.

    txt2img makes `count` pictures of `width`×`height` from the prompt. img2img starts from
    `image` (scaled to `width`×`height`) and keeps `1 - strength` of it. edit changes
    `image` (at `width`×`height`) as the prompt, an instruction, says. upscale makes
    `image` `factor` times wider and higher (`width`×`height` is then the result's size;
    prompt, seed and steps are only carried along for the record)."""

    prompt: str
    seed: int
    steps: int
    width: int
    height: int
    guidance: float = 0.0
    negative_prompt: str = ""
    count: int = 1  # pictures of this prompt, seeds seed, seed+1, …, made as one batch
    model: str = ""  # the configured model's name; "" is the default model
    style: str = ""  # the style preset already applied to prompt and negative_prompt
    kind: str = "txt2img"  # one of KINDS
    strength: float = 0.0  # img2img: how much of the source is repainted, 0..1
    factor: int = 1  # upscale: 2, 4 or 8
    enhance: bool = False  # automatic contrast and sharpness on the result
    lora: str = ""  # a LoRA of generation.loras (loaded onto the default model), or none
    lora_weight: float = 0.0
    fast: bool = False  # decoded by the tiny decoder (generation.fast_decoder): quicker, rougher
    # Where `image` came from, for the record and restarts: an mxc:// URI, and for a file
    # of an encrypted room "#key=…&iv=…&sha256=…" after it (see `source_url`).
    source: str = ""
    # edit: more pictures the instruction may refer to ("the hat from the second picture"),
    # where the editing family takes several; their locators, as `source`.
    references: tuple[str, ...] = ()
    # The source is a picture this bot posted and made by AI alone (from a prompt, or from
    # such a picture): its results may claim to be made by AI (see `ai_only`). Set by the
    # chat side, which knows who posted the source; False claims less.
    source_own: bool = False
    # The source picture (a PIL image) for img2img and upscale. Not part of the record: a
    # restart fetches it again from `source`.
    image: Any = field(default=None, compare=False, repr=False)
    reference_images: tuple = field(default=(), compare=False, repr=False)  # of `references`

    def record(self) -> dict[str, Any]:
        """The job as plain data (JSON-ready), without the source picture."""
        data = asdict(self.__class__(**{**self.__dict__, "image": None, "reference_images": ()}))
        del data["image"], data["reference_images"]
        data["references"] = list(self.references)
        return data

    @property
    def source_url(self) -> str:
        """`source` without the decryption key: what may be shown, logged and embedded."""
        return self.source.partition("#")[0]

    @property
    def reference_urls(self) -> list[str]:
        """`references` without their decryption keys, as `source_url`."""
        return [ref.partition("#")[0] for ref in self.references]

    @property
    def ai_only(self) -> bool:
        """Whether every pixel of the result is the model's: made from a prompt, or from a
        picture the bot made so (`source_own`) with no other pictures referred to. What
        its signature and marker may claim follows (generation.compliance.claims)."""
        return self.kind == "txt2img" or (self.source_own and not self.references)

    def parameters(self, model: str) -> dict[str, Any]:
        """The generation parameters as they are logged; a picture embeds those the
        operator publishes (generation.compliance.Compliance.public_parameters)."""
        params: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "size": f"{self.width}x{self.height}",
            "guidance": self.guidance,
            "model": model,
            "style": self.style,
        }
        if self.lora:
            params["lora"], params["lora_weight"] = self.lora, self.lora_weight
        if self.kind != "txt2img":
            params["kind"] = self.kind
            params["source"] = self.source_url
        if self.references:
            params["references"] = self.reference_urls
        if self.kind == "img2img":
            params["strength"] = self.strength
        if self.kind == "upscale":
            params["upscale"] = self.factor
        if self.enhance:
            params["enhance"] = True
        if self.fast:
            params["decoder"] = "tiny"
        return params


@dataclass(frozen=True)
class Result:
    """What came of a job. `images` are PIL images; `error` is a message a user may read."""

    job: Job
    model: str
    images: tuple = ()
    queue_seconds: float = 0.0
    generation_seconds: float = 0.0
    error: str | None = None
    cancelled: bool = False  # taken out of the queue before it ran; nobody waits for it
    interrupted: bool = False  # the queue shut down before it ran: it is kept for the next start
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class GenerationError(ImgbotError):
    """A job failed in a way the user should be told about in these words."""
