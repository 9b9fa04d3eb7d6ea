"""A person's own defaults (`!img me`): what the parser makes of `me`, `me set` and
`me reset`, the checks against today's limits and catalogues, the order in which they
apply (the command, the room, the person, the config) with where each value comes from,
and the texts people read. All pure: the values come as the store keeps them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.chat.language import personal, rooms
from bot.chat.language.commands import Generate, MeReset, MeSet, MeShow, RoomSet, UsageError
from bot.chat.language.help import rooms_help, short_help
from bot.chat.language.parser import parse
from bot.chat.language.precedence import in_effect
from bot.chat.language.resolve import (
    CONFIG,
    NO_DEFAULTS,
    THIS_ROOM,
    YOURS,
    Catalogue,
    DefaultValues,
    resolve,
)
from bot.chat.language.styles import BUILTIN, Style
from bot.config import GenerationSettings, LimitSettings
from generation.families.known import FAMILIES, SD

LIMITS = LimitSettings(max_prompt_chars=100, max_steps=40, max_pixels=1024 * 1024)
DEFAULTS = GenerationSettings(steps=6, guidance=1.5, size="768x512")
CATALOGUE = Catalogue("base", {"base": (1024, 1024), "small": (512, 512)}, BUILTIN)


@dataclass(frozen=True)
class Kept:
    """A value as bot/store/personal_defaults.py keeps it."""

    value: str
    set_at: float = 1_700_000_000.0


def p(text: str):
    return parse(text, "!img", LIMITS)


def notice(text: str) -> str:
    result = p(text)
    assert isinstance(result, UsageError), f"{text!r} gave {result!r}, not a notice"
    return result.message


def mine(**typed: str) -> dict[str, Kept]:
    return {key: Kept(value) for key, value in typed.items()}


def person(**typed: str) -> DefaultValues:
    defaults, ignored = personal.usable(mine(**typed), LIMITS, CATALOGUE)
    assert not ignored
    return defaults


def job(text: str, room: DefaultValues = NO_DEFAULTS, me: DefaultValues = NO_DEFAULTS):
    return resolve(p(text), DEFAULTS, LIMITS, CATALOGUE, room, lambda _: 7, person=me)


# ---- what people type ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, command",
    [
        ("!img me", MeShow()),
        ("!img ME", MeShow()),
        ("!img me set style oil painting", MeSet("style", "oil painting")),
        ("!img me set size 768x512", MeSet("size", "768x512")),
        ("!img me set size 16:9", MeSet("size", "16:9")),
        ("!img me set ar 16:9", MeSet("size", "16:9")),  # one key: a ratio replaces a size
        ("!img me set AR 9x16", MeSet("size", "9:16")),
        ("!img me set steps 8", MeSet("steps", "8")),
        ("!img me set guidance 4.5", MeSet("guidance", "4.5")),
        ("!img me set negative text, watermark", MeSet("negative", "text, watermark")),
        ("!img me set model small", MeSet("model", "small")),
        ("!img me set enhance on", MeSet("enhance", "on")),
        ("!img me set buttons off", MeSet("buttons", "off")),
        ("!img me reset", MeReset()),
        ("!img me reset style", MeReset("style")),
        ("!img me reset ar", MeReset("size")),
        ("!img room set buttons off", RoomSet("buttons", "off")),
    ],
)
def test_me_set_and_reset_parse_to_their_commands(text, command):
    assert p(text) == command


@pytest.mark.parametrize(
    "text, says",
    [
        ("!img me set size 99999x1", ["size", "99999x1", "multiples of 8"]),
        ("!img me set size 4096x4096", ["too large", "1,048,576 pixels"]),
        ("!img me set ar 50:1", ["too narrow", "21:9"]),
        ("!img me set", ["`me set` needs a key and a value", "style, size (or ar), steps"]),
        ("!img me set style", ["`me set` needs a key and a value", "`me reset [KEY]`"]),
        ("!img me set colour red", ["no personal default 'colour'", "buttons"]),
        ("!img me set nsfw off", ["no personal default 'nsfw'"]),  # a room's policy only
        ("!img me set steps 41", ["steps", "1 to 40"]),
        ("!img me set guidance 31", ["guidance"]),
        ("!img me set buttons maybe", ["`buttons` is `on` or `off`"]),
        ("!img me set negative " + "x" * 101, ["too long", "100"]),
        ("!img me reset colour", ["`me reset` takes nothing or one of", "size (or ar)"]),
        ("!img me frobnicate", ["`me` takes nothing", "`set KEY VALUE`", "`reset [KEY]`"]),
        ("!img room set buttons maybe", ["`buttons` is `on` or `off`"]),
    ],
)
def test_bad_input_is_one_notice_saying_what_is_wrong(text, says):
    # A notice is not a MeSet or MeReset: nothing is kept or cleared.
    message = notice(text)
    for part in says:
        assert part in message, f"{part!r} not in {message!r}"


def test_me_frobnicate_says_how_to_draw_a_prompt_that_starts_with_me():
    assert '`!img "me" frobnicate`' in notice("!img me frobnicate")
    assert p('!img "me" and my dog') == Generate(prompt="me and my dog")


def test_help_names_me_and_its_keys():
    assert "`!img me` shows them" in short_help("!img", LIMITS).plain()
    text = rooms_help("!img", 50).plain()
    assert "`!img me set KEY VALUE`" in text
    assert "style, size (or ar), steps, guidance, negative, model, enhance, buttons" in text
    assert "buttons, nsfw" in text  # `room set buttons off`


# ---- checked when set and each time they are used -------------------------------------------


@pytest.mark.parametrize(
    "key, typed, kept",
    [
        ("style", "Oil Painting", "oil-painting"),
        ("size", "512X768", "512x768"),
        ("size", "16/9", "16:9"),
        ("model", "small", "small"),
        ("enhance", "ON", "on"),
        ("buttons", "Off", "off"),
    ],
)
def test_me_set_keeps_values_in_one_spelling(key, typed, kept):
    assert personal.canonical(key, typed, LIMITS, CATALOGUE) == kept


def test_a_room_turns_its_buttons_off_the_same_way():
    assert rooms.canonical("buttons", "OFF", LIMITS, CATALOGUE) == "off"
    room, ignored = rooms.usable({"buttons": Kept("off")}, LIMITS, CATALOGUE)
    assert room == DefaultValues(buttons=False) and not ignored


@pytest.mark.parametrize(
    "key, typed, says",
    [
        ("style", "nosuch", "There is no style 'nosuch'; choose one of: photo"),
        ("model", "huge", "There is no model 'huge'; choose one of: base, small"),
    ],
)
def test_me_set_refuses_styles_and_models_there_are_none_of(key, typed, says):
    with pytest.raises(ValueError, match=says) as refused:
        personal.canonical(key, typed, LIMITS, CATALOGUE)
    text = personal.refusal(refused.value).plain()
    assert text.startswith(says) and "Your defaults are as they were" in text


def test_a_person_cannot_make_a_model_that_only_edits_their_default():
    editing = Catalogue(
        "sd",
        {"sd": (512, 512), "qwen-edit": (1024, 1024)},
        families={"sd": SD, "qwen-edit": FAMILIES["qwenimage-edit"]},
        edit_model="qwen-edit",
    )
    with pytest.raises(ValueError, match="only edits pictures"):
        personal.canonical("model", "qwen-edit", LIMITS, editing)


def test_defaults_over_todays_limits_or_catalogue_are_not_used():
    # Set when the limits were higher, or before a model or style left the config.
    kept = mine(steps="30", size="1024x1024", model="gone", style="photo", buttons="off")
    lowered = LimitSettings(max_steps=20, max_pixels=512 * 512)
    defaults, ignored = personal.usable(kept, lowered, CATALOGUE)
    assert defaults == DefaultValues(style="photo", buttons=False)
    assert set(ignored) == {"steps", "size", "model"}
    assert "no model 'gone'" in ignored["model"]


def test_a_ratio_is_kept_as_a_ratio():
    assert person(size="16:9") == DefaultValues(aspect=(16, 9))
    assert person(size="768x512") == DefaultValues(width=768, height=512)


# ---- the order: the command, the room, the person, the config --------------------------------


def test_without_personal_defaults_a_job_is_what_it_was():
    room = DefaultValues(style="watercolor", steps=12, model="small")
    for text in ("!img a fox", "!img a fox --steps 3 --ar 16:9", "!img a fox --no rain"):
        assert job(text, room) == resolve(p(text), DEFAULTS, LIMITS, CATALOGUE, room, lambda _: 7)


def test_personal_defaults_fill_what_room_and_command_leave_open():
    me = person(style="photo", size="512x256", steps="12", model="small", enhance="on")
    made = job("!img a fox", me=me)
    assert (made.style, made.width, made.height, made.steps, made.model, made.enhance) == (
        "photo",
        512,
        256,
        12,
        "small",
        True,
    )


def test_the_room_beats_the_person_and_the_command_beats_both():
    me = person(style="photo", steps="12", size="512x256", guidance="4")
    room = DefaultValues(style="anime", steps=20)
    made = job("!img a fox", room, me)
    assert (made.style, made.steps, made.width, made.height, made.guidance) == (
        "anime",  # the room's
        20,  # the room's
        512,  # the person's: the room sets no size
        256,
        4.0,  # the person's
    )
    made = job("!img a fox --style none --steps 3 --size 64x64 --guidance 2", room, me)
    assert (made.style, made.steps, made.width, made.guidance) == ("", 3, 64, 2.0)


def test_a_persons_ratio_is_sized_for_the_model_in_use():
    me = person(size="16:9")
    assert (job("!img a fox", me=me).width, job("!img a fox", me=me).height) == (1344, 768)
    small = job("!img a fox", DefaultValues(model="small"), me)  # the room's model
    assert (small.width, small.height) == (704, 384)
    # A room's size comes first.
    sized = job("!img a fox", DefaultValues(width=256, height=256), me)
    assert (sized.width, sized.height) == (256, 256)


def test_a_persons_negative_prompt_works_above_guidance_1_and_rests_below():
    me = person(negative="blurry", guidance="5")
    assert job("!img a fox", me=me).negative_prompt == "blurry"
    # A room whose guidance is 1 leaves it resting: a picture, without it.
    assert job("!img a fox", DefaultValues(guidance=1.0), me).negative_prompt == ""


def test_refusals_name_the_persons_defaults_where_they_come_from_there():
    low = job("!img a fox --no rain", me=person(guidance="1"))
    assert isinstance(low, UsageError)
    assert "your default guidance is 1 (`me set guidance`)" in low.message
    clash = job("!img a fox --guidance 1", me=person(negative="blurry", guidance="5"))
    assert isinstance(clash, UsageError)
    assert "Your default negative prompt ('blurry', `me set negative`)" in clash.message
    # The room's words stay the room's.
    room = job("!img a fox --guidance 1", DefaultValues(negative="people", guidance=5.0))
    assert "This room's negative prompt ('people', `room set negative`)" in room.message


def test_a_lora_style_with_a_persons_other_model_says_which_default_is_in_the_way():
    branded = Catalogue(
        "base",
        {"base": (1024, 1024), "small": (512, 512)},
        {"brand": Style("brand", "{prompt}, ACME", lora="acme")},
    )
    refused = resolve(
        p("!img a logo --style brand"),
        DEFAULTS,
        LIMITS,
        branded,
        person=DefaultValues(model="small"),
    )
    assert isinstance(refused, UsageError)
    assert "your default model is small: add `--model base`" in refused.message
    made = resolve(
        p("!img a logo --style brand --model base"),
        DEFAULTS,
        LIMITS,
        branded,
        person=DefaultValues(model="small"),
    )
    assert (made.model, made.lora) == ("base", "acme")


# ---- where each value comes from --------------------------------------------------------------


def effects(room: DefaultValues = NO_DEFAULTS, me: DefaultValues = NO_DEFAULTS, **kw):
    return in_effect(room, me, DEFAULTS, LIMITS, CATALOGUE, **kw)


def test_every_key_says_its_value_and_where_it_comes_from():
    here = effects(DefaultValues(steps=20, buttons=False), person(style="photo", steps="8"))
    shown = {key: (e.value, e.source) for key, e in here.items()}
    assert shown == {
        "style": ("photo", YOURS),
        "size": ("768x512", CONFIG),
        "steps": ("20", THIS_ROOM),
        "guidance": ("1.5", CONFIG),
        "negative": ("none", CONFIG),
        "model": ("base", CONFIG),
        "enhance": ("off", CONFIG),
        "buttons": ("off", THIS_ROOM),
    }
    assert (THIS_ROOM, YOURS, CONFIG) == ("this room", "your defaults", "the bot's config")


def test_without_any_defaults_everything_is_the_configs():
    here = effects(buttons=False)
    assert {e.source for e in here.values()} == {CONFIG}
    assert here["buttons"].value == "off"
    assert effects()["buttons"].value == "on"


def test_a_ratio_shows_the_size_it_makes_here():
    assert effects(DefaultValues(model="small"), person(size="16:9"))["size"].value == (
        "16:9 (704x384 with small)"
    )


def test_a_value_that_does_nothing_here_says_so():
    negative = effects(DefaultValues(guidance=1.0), person(negative="blurry"))["negative"]
    assert (negative.value, negative.unused, negative.unused_by) == ("none", "blurry", YOURS)
    assert "guidance above 1, and the guidance here is 1" in negative.why


# ---- the texts --------------------------------------------------------------------------------


def test_me_lists_each_key_with_its_value_and_what_applies_here():
    kept = mine(style="photo", steps="8", negative="blurry", model="gone")
    me, ignored = personal.usable(kept, LIMITS, CATALOGUE)
    text = personal.describe(
        kept, ignored, effects(DefaultValues(steps=20, guidance=1.0), me)
    ).plain()
    lines = text.splitlines()
    assert lines[0].startswith("Your own defaults, in every room and DM with me")
    assert "a room's own defaults come first, then yours, then the bot's config" in lines[0]
    assert "• style: photo — in effect here" in lines
    assert "• steps: 8 — this room's own 20 comes first here" in lines
    assert "• size: not set — here 768x512, from the bot's config" in lines
    assert any(
        line.startswith("• negative: blurry — not used here: it works only with guidance above 1")
        for line in lines
    )
    assert any(
        line.startswith("• model: 'gone' is not used: there is no model 'gone'")
        and line.endswith("here base, from the bot's config")
        for line in lines
    )
    assert len(lines) == 1 + 8  # one line a key


def test_me_without_defaults_says_how_to_set_one_and_what_applies_here():
    text = personal.describe({}, {}, effects(DefaultValues(steps=20))).plain()
    assert text.startswith("You have no defaults of your own; `me set KEY VALUE`")
    assert "• steps: 20, from this room" in text.splitlines()
    assert "• style: none, from the bot's config" in text.splitlines()


def test_me_set_confirms_and_says_when_the_room_comes_first():
    me = person(size="16:9")
    said = personal.confirm_set("size", "16:9", effects(NO_DEFAULTS, me)["size"]).plain()
    assert said.startswith("Your default size is now 16:9 (1344x768 with base), in every room")
    assert said.endswith("`me` shows all your defaults.")
    room_first = personal.confirm_set(
        "steps", "8", effects(DefaultValues(steps=20), person(steps="8"))["steps"]
    ).plain()
    assert "Your default steps is now 8" in room_first
    assert "In this room its own steps comes first (20)" in room_first
    resting = personal.confirm_set(
        "negative",
        "blurry",
        effects(DefaultValues(guidance=1.0), person(negative="blurry"))["negative"],
    ).plain()
    assert "It is not used here: it works only with guidance above 1" in resting


def test_me_reset_says_what_was_cleared_or_that_nothing_was():
    assert personal.confirm_reset("style", 1).plain().startswith("Your default style is cleared")
    assert "3 settings removed" in personal.confirm_reset(None, 3).plain()
    assert personal.confirm_reset("style", 0).plain() == (
        "You had no default style of your own; nothing changed."
    )
    assert personal.confirm_reset(None, 0).plain() == (
        "You had no defaults of your own; nothing changed."
    )


def test_help_says_what_comes_from_the_room_and_what_from_the_person():
    room = DefaultValues(steps=20)
    me = person(steps="8", style="photo", size="16:9")
    text = rooms.in_effect(room, DEFAULTS, CATALOGUE, me, LIMITS).plain()
    assert text.startswith("Defaults in this room: 1344×768, 20 steps")
    assert "style photo" in text
    assert "This room sets its own steps (`room` lists them)." in text
    assert "Your own defaults set the size, style (`me` lists them)." in text
    assert "This room's steps come before yours." in text
    # Without personal defaults, help says what it said.
    assert rooms.in_effect(room, DEFAULTS, CATALOGUE, NO_DEFAULTS, LIMITS) == rooms.in_effect(
        room, DEFAULTS, CATALOGUE
    )
    assert "Your own" not in rooms.in_effect(room, DEFAULTS, CATALOGUE).plain()


@pytest.mark.parametrize("check", [personal.canonical, rooms.canonical])
@pytest.mark.parametrize("negative", ["blurry --seed 5", "blurry —n 4", "low light --style=photo"])
def test_a_negative_default_with_an_option_word_in_it_is_refused(check, negative):
    """Typed back after `--no` (a picture's card), the option word would be an option of
    its own: the same picture could not be made again."""
    with pytest.raises(ValueError, match="option word"):
        check("negative", negative, LIMITS, CATALOGUE)
    assert check("negative", "blurry, low-res, text", LIMITS, CATALOGUE) == "blurry, low-res, text"
