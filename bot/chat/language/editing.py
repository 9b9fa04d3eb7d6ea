"""`!img edit <instruction>`: whether the bot can edit pictures by instruction, what a person
is told where it cannot, and the edit as a prompt for the editing model (bot.chat.jobs.iterate
makes the job: the replied-to picture at a size the model draws)."""

from __future__ import annotations

from bot.chat.language.commands import Edit, Generate, UsageError
from bot.chat.language.rich import rich


def available(catalogue) -> bool:
    """Whether the bot edits by instruction: the catalogue (bot.chat.language.resolve.Catalogue)
    names an editing model (generation.edit_model, or a default model that edits)."""
    return bool(getattr(catalogue, "can_edit", False))


def refusal(replies_to_a_picture: bool, prefix: str, catalogue) -> UsageError | None:
    """Why an `edit` makes nothing (it does not reply to a picture, or the bot has no
    editing model), asked before any download; None: it may go on."""
    if not replies_to_a_picture:
        return UsageError(
            rich(
                "Reply to a picture with `{prefix} edit <what to change>` to edit it, "
                "e.g. `{prefix} edit make it night`.",
                prefix=prefix,
            )
        )
    if not available(catalogue):
        return UsageError(
            rich(
                "This bot has **no editing model** configured, so it cannot edit pictures by "
                "instruction: an admin can set `generation.edit_model` to a model name from "
                "`generation.models` whose family edits (FLUX.2 [klein], Qwen-Image-Edit)."
            )
        )
    return None


def as_generate(command: Edit, model: str) -> Generate:
    """The edit as a prompt for the editing model, so that its options are checked and
    completed (the room's and the bot's defaults) as a prompt's are."""
    return Generate(
        prompt=command.instruction,
        seed=command.seed,
        steps=command.steps,
        guidance=command.guidance,
        negative_prompt=command.negative_prompt,
        count=command.count,
        model=model,
        enhance=command.enhance,
        fast=command.fast,
    )
