"""The seam between the chat side and the GPU side: a job goes in, a result comes out.

Both are plain frozen values: nothing here knows about Matrix or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    """Everything the GPU needs to make one or more pictures, fully resolved."""

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

    def parameters(self, model: str) -> dict[str, Any]:
        """The generation parameters as they are embedded in the PNG and logged."""
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


class GenerationError(Exception):
    """A job failed in a way the user should be told about in these words."""
