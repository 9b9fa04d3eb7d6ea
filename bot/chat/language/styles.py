"""Style presets: a prompt template and a negative prompt under a short name.

`--style NAME` and a room's default style pick one. The built-in presets below can be
changed, and more added, under `styles:` in the config file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.chat.language.rich import RichText, bullets, code, lines, rich
from bot.config.chat import PLACEHOLDER, StyleSettings

# What a person may write instead of a preset: "--style none" drops the room's style.
NO_STYLE = "none"


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str  # a template with {prompt} where the person's prompt goes
    negative: str = ""
    lora: str = ""  # a LoRA of generation.loras, applied at `weight`
    weight: float = 1.0

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        """The prompt and negative prompt with this style applied.

        `str.replace`, not `str.format`: a prompt with braces in it must not break anything.
        """
        styled = self.prompt.replace(PLACEHOLDER, prompt)
        negatives = ", ".join(part for part in (negative, self.negative) if part)
        return styled, negatives

    def typed(self, styled: str, negatives: str) -> tuple[str, str] | None:
        """What `apply` was given to make `styled` and `negatives` (the prompt as typed, and
        the negative prompt typed with it); None when this style did not make them (it
        has changed since, or another one did)."""
        before, mark, after = self.prompt.partition(PLACEHOLDER)
        if not mark:  # a template without the placeholder keeps no trace of the prompt
            return None
        if not (styled.startswith(before) and styled.endswith(after)):
            return None
        prompt = styled[len(before) : len(styled) - len(after)]
        negative = negatives
        if self.negative:
            if negatives == self.negative:
                negative = ""
            elif negatives.endswith(", " + self.negative):
                negative = negatives[: -len(", " + self.negative)]
            else:
                return None
        if len(styled) < len(before) + len(after) or self.apply(prompt, negative) != (
            styled,
            negatives,
        ):
            return None
        return prompt, negative


def normalise(name: str) -> str:
    """'Oil Painting' and 'oil_painting' both mean the preset 'oil-painting'."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


_DEFAULT_NEGATIVE = "blurry, low quality, deformed, watermark, text"

BUILTIN: dict[str, Style] = {
    style.name: style
    for style in (
        Style(
            "photo",
            "{prompt}, professional photograph, natural light, sharp focus, highly detailed",
            "painting, drawing, illustration, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "cinematic",
            "cinematic film still of {prompt}, shallow depth of field, dramatic "
            "lighting, anamorphic, film grain",
            "cartoon, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "oil-painting",
            "oil painting of {prompt}, visible brush strokes, rich colours, canvas texture",
            "photo, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "watercolor",
            "watercolor painting of {prompt}, soft washes, paper texture, flowing pigment",
            "photo, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "black-and-white",
            "black and white photograph of {prompt}, high contrast, monochrome, fine grain",
            "colour, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "anime",
            "anime illustration of {prompt}, cel shading, vibrant colours, detailed line work",
            "photo, realistic, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "pixel-art",
            "pixel art of {prompt}, 16-bit, limited palette, crisp pixels",
            "blurry, smooth gradients, photo",
        ),
        Style(
            "3d-render",
            "3D render of {prompt}, octane render, global illumination, "
            "soft shadows, studio lighting",
            "photo, painting, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "line-art",
            "line art drawing of {prompt}, clean black ink lines, white background, minimal",
            "colour, shading, photo, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "comic",
            "comic book panel of {prompt}, bold ink outlines, halftone shading, "
            "dynamic composition",
            "photo, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "isometric",
            "isometric illustration of {prompt}, 45 degree view, clean geometry, diorama",
            "perspective distortion, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "analog-film",
            "analog film photograph of {prompt}, 35mm, Kodak Portra, film grain, faded colours",
            "digital, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "pencil-sketch",
            "pencil sketch of {prompt}, graphite, cross-hatching, paper texture",
            "colour, photo, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "fantasy-art",
            "fantasy artwork of {prompt}, epic, intricate detail, painterly, dramatic sky",
            "photo, " + _DEFAULT_NEGATIVE,
        ),
        Style(
            "neon-punk",
            "neon punk style {prompt}, cyberpunk, glowing neon lights, vivid magenta and cyan",
            "dull colours, " + _DEFAULT_NEGATIVE,
        ),
    )
}


def catalogue(configured: dict[str, Style] | None = None) -> dict[str, Style]:
    """The built-in presets, with those of the config file added or put in their place."""
    return {**BUILTIN, **(configured or {})}


def listing(styles: dict[str, Style]) -> RichText:
    rows = []
    for style in styles.values():
        # The config's words: literal text, as the names are.
        template = style.prompt.replace(PLACEHOLDER, "…")
        lora = f" (LoRA {style.lora} at {style.weight:g})" if style.lora else ""
        rows.append(code(style.name) + f" — {template}{lora}")
    return lines(
        rich("**{n} styles** (use `--style NAME`, or a room default):", n=len(styles)),
        bullets(rows),
    )


def configured(styles: dict[str, StyleSettings]) -> dict[str, Style]:
    """The catalogue with the config's `styles:` entries over the built-in presets."""
    return catalogue(
        {
            name: Style(name, s.prompt, s.negative, s.lora or "", s.weight)
            for name, s in styles.items()
        }
    )
