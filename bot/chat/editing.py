"""`!img edit <instruction>`: whether the bot can edit pictures by instruction, and what a
person is told while it cannot. The one place that decides it; the editing job itself is
built once an editing model is wired (generation.edit_model)."""

from __future__ import annotations

from bot.chat.commands import UsageError


def available(catalogue) -> bool:
    """Whether the engine offers editing by instruction. Asked of the catalogue the chat
    side lists models from (bot.chat.resolve.Catalogue): a `can_edit` attribute, or a
    method, that is true; none there (as today) means no."""
    can_edit = getattr(catalogue, "can_edit", False)
    return bool(can_edit() if callable(can_edit) else can_edit)


def refusal(replies_to_a_picture: bool, prefix: str, catalogue) -> UsageError:
    """Why an `edit` makes nothing: it does not reply to a picture, or the bot has no
    editing model. (Where the bot can edit, the editing job is still to be built.)"""
    if not replies_to_a_picture:
        return UsageError(f"Reply to a picture with `{prefix} edit <what to change>` to "
                          f"edit it, e.g. `{prefix} edit make it night`.")
    if not available(catalogue):
        return UsageError("This bot has no editing model configured, so it cannot edit "
                          "pictures by instruction: an admin can set generation.edit_model "
                          "to a model name from generation.models.")
    return UsageError("Editing by instruction is not built into this version of the bot "
                      "yet.")
