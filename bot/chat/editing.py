"""`!img edit <instruction>`: whether the bot can edit pictures by instruction, what a person
is told where it cannot, and the edit job: the replied-to picture, at a size the editing
model draws, changed as the instruction says."""

from __future__ import annotations

from bot.chat.commands import Edit, Generate, UsageError
from bot.chat.options import size_for_aspect


def available(catalogue) -> bool:
    """Whether the bot edits by instruction: the catalogue (bot.chat.resolve.Catalogue)
    names an editing model (generation.edit_model, or a default model that edits)."""
    return bool(getattr(catalogue, "can_edit", False))


def refusal(replies_to_a_picture: bool, prefix: str, catalogue) -> UsageError | None:
    """Why an `edit` makes nothing (it does not reply to a picture, or the bot has no
    editing model), asked before any download; None: it may go on."""
    if not replies_to_a_picture:
        return UsageError(f"Reply to a picture with `{prefix} edit <what to change>` to "
                          f"edit it, e.g. `{prefix} edit make it night`.")
    if not available(catalogue):
        return UsageError("This bot has no editing model configured, so it cannot edit "
                          "pictures by instruction: an admin can set generation.edit_model "
                          "to a model name from generation.models whose family edits "
                          "(FLUX.2 [klein]).")
    return None


def as_generate(command: Edit, model: str) -> Generate:
    """The edit as a prompt for the editing model, so that its options are checked and
    completed (the room's and the bot's defaults) as a prompt's are."""
    return Generate(prompt=command.instruction, seed=command.seed, steps=command.steps,
                    guidance=command.guidance, negative_prompt=command.negative_prompt,
                    count=command.count, model=model, enhance=command.enhance,
                    fast=command.fast)


def edit_size(width: int, height: int, native: tuple[int, int], multiple: int,
              max_pixels: int) -> tuple[int, int]:
    """The picture's own size where the model draws it (on its grid, within the limit);
    else the nearest size of its shape around the model's native size."""
    if width % multiple == 0 and height % multiple == 0 and width * height <= max_pixels:
        return width, height
    ratio = width / height
    return size_for_aspect((round(ratio * 1000), 1000), native[0] * native[1], max_pixels)
