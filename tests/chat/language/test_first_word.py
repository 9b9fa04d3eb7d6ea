"""The first word after the prefix decides: a sub-command's word is that sub-command, and
what it does not take gets one notice (naming what it takes, and how to start a prompt with
the word: in quotes), never a picture of the words. Every sub-command, in the pure parser."""

from __future__ import annotations

import pytest

from bot.chat.language.commands import (
    Again,
    Cancel,
    Edit,
    Generate,
    Help,
    Info,
    MeReset,
    MeSet,
    MeShow,
    Models,
    Pause,
    QueueStatus,
    Resume,
    RoomReset,
    RoomSet,
    RoomShow,
    Styles,
    Upscale,
    Usage,
    UsageError,
    Vary,
)
from bot.chat.language.editing import available
from bot.chat.language.help import options_help, short_help
from bot.chat.language.parser import SUBCOMMANDS, parse
from bot.config import LimitSettings

LIMITS = LimitSettings(max_prompt_chars=100, max_steps=40, max_pixels=1024 * 1024)


def p(text: str):
    return parse(text, "!img", LIMITS)


def notice(text: str) -> str:
    result = p(text)
    assert isinstance(result, UsageError), f"{text!r} gave {result!r}, not a notice"
    return result.message


# What each sub-command takes, as it did before the rule (and `edit`, new).
TAKES: dict[str, list[tuple[str, object]]] = {
    "help": [
        ("help", Help()),
        ("HELP", Help()),
        ("help?", Help()),
        ("help options", Help("options")),
        ("help Rooms", Help("rooms")),
        ("help admin", Help("admin")),
    ],
    "styles": [("styles", Styles())],
    "models": [("models", Models())],
    "queue": [("queue", QueueStatus()), ("queue.", QueueStatus())],
    "cancel": [("cancel", Cancel()), ("Cancel!", Cancel())],
    "room": [
        ("room", RoomShow()),
        ("room set style oil painting", RoomSet("style", "oil painting")),
        ("room reset", RoomReset()),
        ("room reset steps", RoomReset("steps")),
    ],
    "me": [
        ("me", MeShow()),
        ("me set style photo", MeSet("style", "photo")),
        ("me set ar 16:9", MeSet("size", "16:9")),
        ("me reset", MeReset()),
        ("me reset steps", MeReset("steps")),
    ],
    "usage": [
        ("usage", Usage()),
        ("usage 30d", Usage("30d")),
        ("usage all", Usage("all")),
        ("usage 99999w", Usage("99999w")),
        ("usage @bob 24h", Usage("24h", "@bob")),
    ],
    "pause": [("pause", Pause())],
    "resume": [("resume", Resume())],
    "again": [("again", Again()), ("again --enhance", Again(enhance=True))],
    "vary": [
        ("vary", Vary()),
        ("vary 0.3", Vary(0.3)),
        ("vary 0.8 --enhance", Vary(0.8, enhance=True)),
    ],
    "upscale": [
        ("upscale", Upscale(4)),
        ("upscale 2", Upscale(2)),
        ("upscale 8x --enhance", Upscale(8, enhance=True)),
    ],
    "edit": [
        ("edit make it night", Edit("make it night")),
        (
            "edit add a hat --seed 3 --steps 8 --n 2 --enhance",
            Edit("add a hat", seed=3, steps=8, count=2, enhance=True),
        ),
        (
            "edit cancel the rain --no clouds --guidance 4 --fast",
            Edit("cancel the rain", guidance=4.0, negative_prompt="clouds", fast=True),
        ),
    ],
    "info": [("info", Info()), ("Info?", Info())],
}

# What each does not take: one notice, and the words that name what it takes.
NOT_TAKEN: dict[str, list[tuple[str, str]]] = {
    "help": [
        ("help me draw a cat", "one of the topics `options`, `rooms`, `admin`"),
        ("help colours", "one of the topics `options`, `rooms`, `admin`"),
    ],
    "styles": [("styles of hats", "nothing after it")],
    "models": [("models on a catwalk", "nothing after it")],
    "queue": [("queue of people at a bus stop", "nothing after it")],
    "cancel": [
        ("cancel everything", "cancels all your queued jobs"),
        ("cancel culture, editorial cartoon", "nothing after it"),
    ],
    "room": [("room with a view", "`set KEY VALUE` or `reset [KEY]`")],
    "me": [("me and my dog at the beach", "`set KEY VALUE` or `reset [KEY]`")],
    "usage": [
        ("usage of solar power, diagram", "a period"),
        ("usage 30d @bob @carol", "an @user"),
        ("usage 99999999999999999999d", "up to 99999"),
    ],
    "pause": [("pause for thought", "nothing after it")],
    "resume": [("resume writing tips", "nothing after it")],
    "again": [("again and again", "nothing but --enhance"), ("again --seed 4", "only `--enhance`")],
    "vary": [
        ("vary the colours", "a strength from 0.05 to 1"),
        ("vary 0.3 but bluer", "a strength from 0.05 to 1"),
    ],
    "upscale": [
        ("upscale town at night", "a factor of 2, 4 or 8"),
        ("upscale 4 please", "a factor of 2, 4 or 8"),
    ],
    "edit": [
        ("edit", "what to change"),
        ("edit --seed 4", "what to change"),
        ("edit make it night --size 512x512", "`--seed`, `--steps`"),
        ("edit make it night --style anime", "not `--style`"),
    ],
    "info": [("info about whales, poster", "nothing after it, in reply to one of my pictures")],
}


def test_every_subcommand_is_covered():
    assert set(TAKES) == set(NOT_TAKEN) == set(SUBCOMMANDS)


@pytest.mark.parametrize(
    "text, command",
    [pytest.param(text, command, id=text) for cases in TAKES.values() for text, command in cases],
)
def test_what_a_subcommand_takes_still_parses(text, command):
    assert p(f"!img {text}") == command


@pytest.mark.parametrize(
    "word, text, named",
    [
        pytest.param(word, text, named, id=text)
        for word, cases in NOT_TAKEN.items()
        for text, named in cases
    ],
)
def test_what_it_does_not_take_is_one_notice_naming_what_it_takes(word, text, named):
    message = notice(f"!img {text}")
    assert f"`{word}`" in message and named in message


@pytest.mark.parametrize("word", [w for w in SUBCOMMANDS if w != "edit"])
def test_the_notice_says_how_to_start_a_prompt_with_the_word(word):
    message = notice(f"!img {word} of the sea")
    assert f'`!img "{word}" of the sea`' in message
    # ... and that way is a prompt that starts with the word, without the quotes.
    assert p(f'!img "{word}" of the sea') == Generate(prompt=f"{word} of the sea")
    assert p(f"!img “{word}”, of the sea") == Generate(prompt=f"{word}, of the sea")


@pytest.mark.parametrize(
    "text", ["!img again --seed 4", "!img usage @a @b", "!img edit make it night --size 512x512"]
)
def test_no_quoting_hint_where_it_makes_no_sense(text):
    assert "quotes" not in notice(text)


@pytest.mark.parametrize(
    "text, prompt",
    [
        ("!img helpful robot", "helpful robot"),  # a longer word is not the sub-command
        ('!img "help me draw a cat"', '"help me draw a cat"'),  # a quoted phrase stays as typed
        ("!img cancel's aftermath", "cancel's aftermath"),
        ("!img queues at dawn", "queues at dawn"),
    ],
)
def test_words_that_are_not_exactly_a_subcommand_are_prompts(text, prompt):
    assert p(text) == Generate(prompt=prompt)


# ---- the examples -----------------------------------------------------------------


def test_a_usage_period_too_long_names_the_range():
    message = notice("!img usage 99999999999999999999d")
    assert "up to 99999" in message and "30m" in message and "or all" in message
    assert "bot admins" in notice("!img usage 99999999999999999999d @bob")


@pytest.mark.parametrize("text", ["!img --", "!img -- a cat", "!img a cat --", "!img --5 cats"])
def test_an_option_marker_without_a_name_is_a_notice(text):
    assert "is not an option" in notice(text)


def test_a_dash_between_words_is_text():
    assert p("!img a cat -- asleep") == Generate(prompt="a cat -- asleep")


@pytest.mark.parametrize(
    "invisible",
    [
        "\u202e\u202e",  # two right-to-left overrides
        "\u200b",
        "\u200d\ufeff",
        "\u00ad",
        "\u0301\u0301",  # zero-width, soft hyphen, lone marks
        "\u3164",
        "\u2800",
        "\u0007",  # Hangul filler, blank braille cell, a control character
    ],
)
def test_a_prompt_with_no_visible_characters_is_empty(invisible):
    assert "The prompt is empty" in notice(f"!img {invisible}")
    assert "The prompt is empty" in notice(f"!img {invisible} --seed 4")


def test_marks_on_a_letter_and_zero_width_joins_in_words_are_visible():
    assert p("!img a\u0301") == Generate(prompt="a\u0301")
    assert p("!img \u200bcat") == Generate(prompt="\u200bcat")


def test_edit_without_an_instruction_says_to_reply_to_a_picture():
    assert "reply to a picture with `!img edit <what to change>`" in notice("!img edit")


# ---- edit in help -------------------------------------------------------------------------


def test_help_lists_edit_only_when_the_bot_can_edit():
    assert "!img edit" not in short_help("!img", LIMITS).plain()
    assert "!img edit" not in options_help("!img").plain()
    assert "`!img edit <what to change>` — " in short_help("!img", LIMITS, editing=True).plain()
    assert "`!img edit` — " in options_help("!img", editing=True).plain()
    assert '`!img "cancel" culture, oil painting`' in options_help("!img").plain()


def test_editing_is_offered_only_where_the_catalogue_says_so():
    class Offers:
        can_edit = True

    class Asks:
        def can_edit(self):
            return True

    assert not available(object()) and available(Offers()) and available(Asks())
