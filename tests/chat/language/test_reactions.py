"""Which reaction asks for what: the keys with and without the variation selector, the
commands they stand for, and the buttons chat.buttons names."""

from __future__ import annotations

import typing

import pytest

from bot.chat.language import reactions
from bot.chat.language.commands import Again, Upscale, Vary
from bot.chat.language.reactions import Action
from bot.config.chat import Button, ChatSettings


@pytest.mark.parametrize(
    "key, action",
    [
        ("🔁", Action.AGAIN),
        ("🔄", Action.AGAIN),
        ("🎲", Action.VARY),
        ("🔍", Action.UPSCALE),
        ("🔎", Action.UPSCALE),
        ("✨", Action.ENHANCE),
        ("ℹ️", Action.INFO),  # as a picker sends it
        ("ℹ", Action.INFO),  # as a keyboard may
        ("🗑️", Action.DELETE),
        ("🗑", Action.DELETE),
        ("❌", Action.DELETE),
        ("✨\ufe0f", Action.ENHANCE),
    ],
)
def test_each_key_with_or_without_the_variation_selector(key, action):
    assert reactions.action_of(key) is action


@pytest.mark.parametrize("key", ["😀", "👍", "", "🔁🔁", None, 5, "again"])
def test_other_reactions_are_not_commands(key):
    assert reactions.action_of(key) is None


def test_the_commands_they_stand_for_are_a_bare_typed_commands():
    assert reactions.command_for(Action.AGAIN) == Again()
    assert reactions.command_for(Action.VARY) == Vary()
    assert reactions.command_for(Action.UPSCALE) == Upscale()  # the default factor
    assert reactions.command_for(Action.ENHANCE) == Upscale(factor=1, enhance=True)
    assert reactions.command_for(Action.INFO) is None
    assert reactions.command_for(Action.DELETE) is None


def test_the_config_names_exactly_the_actions_and_each_button_is_read_back_as_its_action():
    assert set(typing.get_args(Button)) == {a.value for a in Action}
    for name in typing.get_args(Button):
        (emoji,) = reactions.buttons([name])
        assert reactions.action_of(emoji) is Action(name)
    assert reactions.buttons(ChatSettings().buttons) == ["🔁", "🎲", "🔍"]


def test_a_button_named_twice_is_refused():
    with pytest.raises(ValueError, match="once"):
        ChatSettings(buttons=["again", "again"])
    with pytest.raises(ValueError):
        ChatSettings(buttons=["frobnicate"])
