"""Reactions as commands: which emoji on one of the bot's pictures (or on a job's status
notice) asks for what. Pure: the role that takes reactions in is bot/chat/reactions.py.

A reaction is read by its key alone, with and without the variation selector (U+FE0F): a
client's emoji picker sends "ℹ️", a keyboard may send "ℹ". Other keys are not commands:
people react for fun, and those are ignored without a word.
"""

from __future__ import annotations

from enum import Enum

from bot.chat.language.commands import Again, Upscale, Vary

VARIATION_SELECTOR = "\ufe0f"  # asks for the emoji (colour) form of the character before it


class Action(str, Enum):
    AGAIN = "again"
    VARY = "vary"
    UPSCALE = "upscale"
    ENHANCE = "enhance"  # the picture itself, with automatic contrast and sharpness
    INFO = "info"  # the picture's card
    DELETE = "delete"  # on a picture: it is removed; on a status notice: the job cancelled


ACTIONS: dict[str, Action] = {
    "🔁": Action.AGAIN,
    "🔄": Action.AGAIN,
    "🎲": Action.VARY,
    "🔍": Action.UPSCALE,
    "🔎": Action.UPSCALE,
    "✨": Action.ENHANCE,
    "ℹ": Action.INFO,
    "🗑": Action.DELETE,
    "❌": Action.DELETE,
}

# The emoji the bot places as each button (chat.buttons names them by their action), as
# Element's picker sends them: with the variation selector where the character needs one.
BUTTONS: dict[Action, str] = {
    Action.AGAIN: "🔁",
    Action.VARY: "🎲",
    Action.UPSCALE: "🔍",
    Action.ENHANCE: "✨",
    Action.INFO: "ℹ️",
    Action.DELETE: "🗑️",
}


def buttons(names: list[str]) -> list[str]:
    """The emoji of the buttons chat.buttons names, in its order."""
    return [BUTTONS[Action(name)] for name in names]


def key_of(text: str) -> str:
    """A reaction's key as ACTIONS has it: without variation selectors or spaces."""
    return text.replace(VARIATION_SELECTOR, "").strip()


def action_of(key: object) -> Action | None:
    """What a reaction's key asks for; None for any other key (not a command)."""
    return ACTIONS.get(key_of(key)) if isinstance(key, str) else None


def command_for(action: Action) -> Again | Vary | Upscale | None:
    """The typed command a reaction stands for, with the defaults a bare command has; None
    for the actions that make no picture (the card, deleting)."""
    if action is Action.AGAIN:
        return Again()
    if action is Action.VARY:
        return Vary()
    if action is Action.UPSCALE:
        return Upscale()
    if action is Action.ENHANCE:
        # The same size, with the finishing step alone: an upscale by 1 runs no upscaler.
        return Upscale(factor=1, enhance=True)
    return None


def caption_prefix(key: str, sender: str) -> str:
    """What a picture made for a reaction says first: who asked, and how ("🔁 for @alice")."""
    return f"{key} for {sender}"
