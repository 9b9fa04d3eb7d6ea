"""The chat command parser (`bot/commands.py`): pure functions, tested table by table."""

from __future__ import annotations

import pytest

from bot.chat.language.help import admin_help, options_help, rooms_help, short_help
from bot.chat.language.parser import SUBCOMMANDS, parse, strip_reply_fallback
from bot.chat.language.commands import (
    Again,
    Cancel,
    Generate,
    Help,
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
from bot.config import GenerationSettings, LimitSettings
from bot.chat.language.options import MAX_SEED, OPTIONS, size_for_aspect
from bot.chat.language.resolve import Catalogue, RoomDefaults, resolve
from bot.chat.language.styles import BUILTIN, Style
from generation.job import Job

LIMITS = LimitSettings(max_prompt_chars=100, max_steps=40, max_pixels=1024 * 1024)


def p(text: str, prefix: str = "!img", limits: LimitSettings = LIMITS):
    return parse(text, prefix, limits)


def error_of(text: str, limits: LimitSettings = LIMITS) -> str:
    result = p(text, limits=limits)
    assert isinstance(result, UsageError), f"{text!r} gave {result!r}, not a UsageError"
    return result.message


# ---- what is not for the bot --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello everyone",
        "!imgfoo a cat",
        "!imgs a cat",
        "!image a cat",
        "please !img a cat",
        "I typed !img help yesterday",
        "img a cat",
        "!IMG a cat",  # the prefix is matched exactly
        "> <@a:b> !img a cat",  # only quoted: the reply's own text is empty
    ],
)
def test_messages_not_for_the_bot_give_none(text):
    assert p(text) is None


# ---- help ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["!img", "!img ", "  !img  ", "!img help", "!img HELP", "!img help  ", "!img\nhelp"]
)
def test_prefix_alone_or_help_gives_help(text):
    assert p(text) == Help()


@pytest.mark.parametrize(
    "text, prompt",
    [
        (
            '!img "help" me draw a cat',
            "help me draw a cat",
        ),  # tests/chat/language/test_first_word.py
        ("!img helpful robot", "helpful robot"),
        ("!img “Help” wanted poster", "Help wanted poster"),
    ],
)
def test_help_in_quotes_or_inside_a_word_is_a_prompt(text, prompt):
    assert p(text) == Generate(prompt=prompt)


# ---- prompts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, prompt",
    [
        ("!img a cat", "a cat"),
        ("!img Albert Einstein, oil painting", "Albert Einstein, oil painting"),
        ("!img   a   cat  ", "a cat"),
        ("!img Эйнштейн, 油画", "Эйнштейн, 油画"),
        ("!img a cat - not a dog", "a cat - not a dog"),  # a lone dash is text, not an option
        ("!img a cat — sitting", "a cat — sitting"),  # a lone em dash too
        ("!img -seed 5", "-seed 5"),  # one dash is not an option
    ],
)
def test_plain_prompts(text, prompt):
    assert p(text) == Generate(prompt=prompt)


def test_multi_line_prompt_is_joined_with_spaces():
    assert p("!img a lighthouse\nat dawn\n\nin fog") == Generate(
        prompt="a lighthouse at dawn in fog"
    )


def test_prefix_followed_by_newline_is_recognised():
    assert p("!img\na cat --seed 3") == Generate(prompt="a cat", seed=3)


def test_multi_line_prompt_with_options_on_later_lines():
    assert p("!img a cat\n--seed 4\n--no dogs,\nbirds") == Generate(
        prompt="a cat", seed=4, negative_prompt="dogs, birds"
    )


@pytest.mark.parametrize("text", ["!img --seed 5", "!img —steps 3", "!img --no cats"])
def test_empty_prompt_before_options_is_an_error(text):
    message = error_of(text)
    assert "prompt is empty" in message
    assert "!img" in message  # shows an example


def test_prompt_at_the_limit_is_accepted():
    prompt = "a" * LIMITS.max_prompt_chars
    assert p(f"!img {prompt}") == Generate(prompt=prompt)


def test_over_long_prompt_names_length_and_limit():
    limits = LimitSettings(max_prompt_chars=20)
    message = error_of("!img " + "x" * 21, limits=limits)
    assert "21" in message and "20" in message


def test_over_long_prompt_limit_follows_settings():
    text = "!img " + "y" * 1500
    assert isinstance(p(text, limits=LimitSettings(max_prompt_chars=1000)), UsageError)
    assert p(text, limits=LimitSettings(max_prompt_chars=2000)) == Generate(prompt="y" * 1500)


# ---- custom prefix and reply fallback -----------------------------------------------------


def test_custom_prefix():
    assert p("!draw a cat --seed 1", prefix="!draw") == Generate(prompt="a cat", seed=1)
    assert p("!draw", prefix="!draw") == Help()
    assert p("!img a cat", prefix="!draw") is None
    assert p("!drawing a cat", prefix="!draw") is None


@pytest.mark.parametrize(
    "body, stripped",
    [
        ("> <@a:b> quoted\n\n!img dog", "!img dog"),
        ("> <@a:b> line one\n> line two\n\n!img dog --seed 2", "!img dog --seed 2"),
        ("> <@a:b> quoted\n!img dog", "!img dog"),
        ("!img dog", "!img dog"),
        ("!img dog\n> not a quote at the start", "!img dog\n> not a quote at the start"),
        ("", ""),
    ],
)
def test_strip_reply_fallback(body, stripped):
    assert strip_reply_fallback(body) == stripped


def test_reply_with_command_is_parsed_after_the_quote():
    assert p("> <@a:b> quoted\n\n!img dog") == Generate(prompt="dog")
    assert p("> <@alice:example.org> !img an old prompt\n\nthanks!") is None


# ---- options: valid values ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options, fields",
    [
        ("--seed 0", dict(seed=0)),
        (f"--seed {MAX_SEED}", dict(seed=2**32 - 1)),
        ("--seed 42", dict(seed=42)),
        ("--steps 1", dict(steps=1)),
        ("--steps 40", dict(steps=40)),  # LIMITS.max_steps
        ("--size 64x64", dict(width=64, height=64)),
        ("--size 768x512", dict(width=768, height=512)),
        ("--size 1024x1024", dict(width=1024, height=1024)),  # exactly max_pixels
        ("--size 512X768", dict(width=512, height=768)),
        ("--size 512×768", dict(width=512, height=768)),
        ("--guidance 0", dict(guidance=0.0)),
        ("--guidance 7.5", dict(guidance=7.5)),
        ("--guidance 30", dict(guidance=30.0)),
        ("--no blurry", dict(negative_prompt="blurry")),
        ("--no blurry, low quality, text", dict(negative_prompt="blurry, low quality, text")),
        ("--seed=9", dict(seed=9)),
        ("--size=640x480", dict(width=640, height=480)),
        ("--guidance=2.5", dict(guidance=2.5)),
        ("--no=text", dict(negative_prompt="text")),
        ("—seed 5", dict(seed=5)),  # em dash, as phones write "--"
        ("–seed 5", dict(seed=5)),  # en dash
        ("—no watermark –steps 3", dict(negative_prompt="watermark", steps=3)),
        ("--SEED 5", dict(seed=5)),
        (
            "--seed 1 --steps 2 --size 128x64 --guidance 1.5 --no ugly hands",
            dict(seed=1, steps=2, width=128, height=64, guidance=1.5, negative_prompt="ugly hands"),
        ),
        ("--no ugly hands --seed 1", dict(negative_prompt="ugly hands", seed=1)),
        ("--guidance 3 --no a b c --steps 7", dict(guidance=3.0, negative_prompt="a b c", steps=7)),
    ],
)
def test_valid_options(options, fields):
    assert p(f"!img a red fox {options}") == Generate(prompt="a red fox", **fields)


# ---- options: invalid values --------------------------------------------------------------


@pytest.mark.parametrize(
    "options, expected",
    [
        ("--seed -1", ["--seed", "0", str(MAX_SEED)]),
        (f"--seed {2**32}", ["--seed", str(2**32)]),
        ("--seed abc", ["--seed", "'abc'", "whole number"]),
        ("--seed 1.5", ["--seed", "whole number"]),
        ("--steps 0", ["--steps", "1", "40"]),
        ("--steps 41", ["--steps", "40", "41"]),
        ("--steps many", ["--steps", "'many'"]),
        ("--size 100x100", ["--size", "multiples of 8"]),
        ("--size 60x64", ["--size", "at least 64"]),
        ("--size 56x56", ["--size", "at least 64"]),
        ("--size 1032x1024", ["--size", "too large", "1,048,576"]),
        ("--size 4096x4096", ["--size", "too large"]),
        ("--size big", ["--size", "WIDTHxHEIGHT"]),
        ("--size 512", ["--size", "WIDTHxHEIGHT"]),
        ("--guidance -1", ["--guidance", "0", "30"]),
        ("--guidance 30.5", ["--guidance", "30"]),
        ("--guidance nan", ["--guidance", "nan"]),
        ("--guidance inf", ["--guidance", "inf"]),
        ("--guidance -inf", ["--guidance"]),
        ("--guidance lots", ["--guidance", "'lots'"]),
    ],
)
def test_invalid_option_values_name_the_option_and_range(options, expected):
    message = error_of(f"!img a red fox {options}")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_size_limit_follows_max_pixels():
    small = LimitSettings(max_pixels=128 * 128)
    assert isinstance(p("!img fox --size 136x128", limits=small), UsageError)
    assert p("!img fox --size 128x128", limits=small) == Generate(
        prompt="fox", width=128, height=128
    )


def test_steps_limit_follows_max_steps():
    assert isinstance(p("!img fox --steps 9", limits=LimitSettings(max_steps=8)), UsageError)
    assert p("!img fox --steps 8", limits=LimitSettings(max_steps=8)) == Generate(
        prompt="fox", steps=8
    )


@pytest.mark.parametrize(
    "options",
    [
        "--seed 1 --seed 2",
        "--seed=1 --seed 2",
        "—seed 1 --seed 2",
        "--no a --no b",
        "--size 64x64 --size 128x128",
    ],
)
def test_duplicated_option_is_an_error(options):
    message = error_of(f"!img fox {options}")
    assert "twice" in message
    assert "--" + options.split()[0].lstrip("-—").split("=")[0] in message


@pytest.mark.parametrize(
    "options, name",
    [
        ("--seed", "--seed"),
        ("--seed --steps 3", "--seed"),
        ("--seed=", "--seed"),
        ("--no", "--no"),
        ("--no --seed 3", "--no"),
        ("--steps 3 --size", "--size"),
        ("--guidance=", "--guidance"),
    ],
)
def test_option_without_value_is_an_error(options, name):
    message = error_of(f"!img fox {options}")
    assert name in message and "needs a value" in message


@pytest.mark.parametrize("option", ["--quality", "--stylize", "--foo", "—bar", "--num"])
def test_unknown_option_lists_the_options(option):
    message = error_of(f"!img fox {option} 3")
    assert "Unknown option --" + option.lstrip("-—") in message
    for name in OPTIONS:
        assert f"--{name}" in message


@pytest.mark.parametrize(
    "text, stray",
    [
        ("!img cat --seed 5 extra", "extra"),
        ("!img cat --steps 2 on a mat", "on"),
        ("!img cat --no=blurry text", "text"),
    ],
)
def test_words_after_an_option_value_do_not_crash_the_parser(text, stray):
    result = p(text)
    # A clear usage error naming the stray word: the prompt comes before the options.
    assert isinstance(result, UsageError)
    assert stray in result.message and "prompt first" in result.message


def test_parse_is_deterministic_for_all_option_spellings():
    ascii_form = p("!img owl --seed 3 --steps 2 --no rain")
    for dash in ("—", "–"):
        assert p(f"!img owl {dash}seed 3 {dash}steps 2 {dash}no rain") == ascii_form


# ---- help text ----------------------------------------------------------------------------


def test_help_options_names_every_option_and_the_short_help_the_limits():
    limits = LimitSettings(
        max_prompt_chars=1234, max_steps=17, max_pixels=999_999, per_user_queued=5
    )
    options = options_help("!draw").plain()
    for option in OPTIONS.values():
        assert f"`--{option.name}{' ' + option.takes if option.takes else ''}` — " in options
        assert option.help in options
    assert "`!draw <prompt> [options]`" in options
    text = short_help("!draw", limits).plain()
    assert "1,234" in text
    assert "17 steps" in text
    assert "999,999" in text
    assert "5 queued" in text
    assert "`!draw <prompt>`" in text
    assert "`!draw help options`" in text
    assert "!img" not in text + options


# ---- resolve ------------------------------------------------------------------------------

DEFAULTS = GenerationSettings(steps=6, guidance=1.5, size="768x512")
CATALOGUE = Catalogue("base", {"base": (1024, 1024), "small": (512, 512)}, BUILTIN)


def r(command, room: RoomDefaults = RoomDefaults(), limits: LimitSettings = LIMITS, **kw):
    return resolve(command, DEFAULTS, limits, CATALOGUE, room, **kw)


def test_resolve_fills_everything_from_the_defaults():
    seeds = []

    def random_seed(bound: int) -> int:
        seeds.append(bound)
        return 1234

    job = r(Generate(prompt="a fox"), random_seed=random_seed)
    assert job == Job(
        prompt="a fox",
        seed=1234,
        steps=6,
        width=768,
        height=512,
        guidance=1.5,
        negative_prompt="",
        count=1,
        model="base",
        style="",
    )
    assert seeds == [MAX_SEED + 1]  # any 32-bit seed can come out


def test_resolve_keeps_what_the_command_gives():
    def no_random(bound: int) -> int:
        raise AssertionError("random_seed must not be called when a seed is given")

    command = Generate(
        prompt="a fox", seed=0, steps=1, width=64, height=128, guidance=2.0, negative_prompt="rain"
    )
    job = r(command, random_seed=no_random)
    assert job == Job(
        prompt="a fox",
        seed=0,
        steps=1,
        width=64,
        height=128,
        guidance=2.0,
        negative_prompt="rain",
        model="base",
    )


def test_resolve_of_a_parsed_command():
    command = p("!img a fox --size 128x64 --no rain, fog")
    job = r(command, random_seed=lambda bound: 77)
    assert (job.seed, job.steps, job.width, job.height, job.guidance, job.negative_prompt) == (
        77,
        6,
        128,
        64,
        1.5,
        "rain, fog",
    )


def test_resolve_default_random_seed_is_in_range_and_varies():
    seeds = {r(Generate(prompt="x")).seed for _ in range(20)}
    assert all(0 <= s <= MAX_SEED for s in seeds)
    assert len(seeds) > 1


def test_guidance_nan_never_reaches_a_job():
    result = p("!img fox --guidance NaN")
    assert isinstance(result, UsageError)
    assert "nan" in result.message.lower()
    assert p("!img fox --guidance 0.1").guidance == 0.1


@pytest.mark.parametrize("space", ["\t", "\u00a0", "\n"])
def test_any_whitespace_may_follow_the_prefix(space):
    assert p(f"!img{space}a lighthouse --seed 2") == Generate(prompt="a lighthouse", seed=2)


# ---- the options of the command issue -----------------------------------------------------


@pytest.mark.parametrize(
    "options, fields",
    [
        ("--ar 16:9", dict(aspect=(16, 9))),
        ("--ar=3:2", dict(aspect=(3, 2))),
        ("--aspect 9:16", dict(aspect=(9, 16))),
        ("--ar 21:9", dict(aspect=(21, 9))),
        ("--n 3", dict(count=3)),
        ("--n 4", dict(count=4)),
        ("--style photo", dict(style="photo")),
        ("--style Oil Painting", dict(style="oil-painting")),
        ("--style oil_painting --seed 3", dict(style="oil-painting", seed=3)),
        ("--model small", dict(model="small")),
        # The Midjourney way of writing them.
        ("--ar 16:9 --no text, watermark", dict(aspect=(16, 9), negative_prompt="text, watermark")),
    ],
)
def test_new_valid_options(options, fields):
    assert p(f"!img a red fox {options}") == Generate(prompt="a red fox", **fields)


@pytest.mark.parametrize(
    "options, expected",
    [
        ("--ar 16", ["--ar", "W:H", "16:9"]),
        ("--ar 0:1", ["--ar"]),
        ("--ar 22:9", ["--ar 22:9", "21:9"]),
        ("--ar 1:3", ["too narrow"]),
        ("--n 0", ["--n", "1", "4"]),
        ("--n 5", ["--n", "from 1 to 4"]),
        ("--n two", ["--n", "whole number"]),
        ("--size 512x512 --ar 16:9", ["`--size` or `--ar`"]),
        ("--no " + "x" * 101, ["--no", "101", "100"]),
    ],
)
def test_new_option_errors(options, expected):
    message = error_of(f"!img fox {options}")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_n_limit_follows_max_images():
    assert p("!img fox --n 8", limits=LimitSettings(max_images=8)).count == 8
    assert "from 1 to 2" in error_of("!img fox --n 3", limits=LimitSettings(max_images=2))


@pytest.mark.parametrize(
    "aspect, native, size",
    [
        ((1, 1), 1024, (1024, 1024)),
        ((4, 3), 1024, (1152, 896)),
        ((3, 2), 1024, (1280, 832)),
        ((16, 9), 1024, (1344, 768)),
        ((21, 9), 1024, (1536, 640)),
        ((9, 16), 1024, (768, 1344)),
        ((2, 3), 1024, (832, 1280)),
        ((16, 9), 512, (704, 384)),
        ((1, 1), 512, (512, 512)),
    ],
)
def test_aspect_ratio_sizes_are_near_the_native_pixel_count(aspect, native, size):
    assert size_for_aspect(aspect, native * native, 10**8) == size
    width, height = size
    assert width % 64 == 0 and height % 64 == 0
    assert abs(width * height / native**2 - 1) < 0.1
    assert abs(width / height - aspect[0] / aspect[1]) / (aspect[0] / aspect[1]) < 0.1


def test_aspect_ratio_size_stays_within_max_pixels():
    width, height = size_for_aspect((3, 2), 1024 * 1024, 1024 * 1024)
    assert width * height <= 1024 * 1024 and width > height


# ---- sub-commands ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, command",
    [
        ("!img styles", Styles()),
        ("!img models", Models()),
        ("!img queue", QueueStatus()),
        ("!img cancel", Cancel()),
        ("!img pause", Pause()),
        ("!img resume", Resume()),
        ("!img room", RoomShow()),
        ("!img room set style oil painting", RoomSet("style", "oil painting")),
        ("!img room set size 768x768", RoomSet("size", "768x768")),
        ("!img room set steps 8", RoomSet("steps", "8")),
        ("!img room set negative text, watermark", RoomSet("negative", "text, watermark")),
        ("!img room set model small", RoomSet("model", "small")),
        ("!img room set guidance 5", RoomSet("guidance", "5")),
        ("!img ROOM SET Style photo", RoomSet("style", "photo")),
        ("!img room reset", RoomReset()),
        ("!img room reset style", RoomReset("style")),
        ("!img usage", Usage("7d", None)),
        ("!img usage 30d", Usage("30d", None)),
        ("!img usage all @bob:example.org", Usage("all", "@bob:example.org")),
        ("!img usage @bob:example.org 24h", Usage("24h", "@bob:example.org")),
    ],
)
def test_subcommands(text, command):
    assert p(text) == command


@pytest.mark.parametrize(
    "text, expected",
    [
        ("!img room set", ["needs a key and a value"]),
        ("!img room set style", ["needs a key and a value"]),
        ("!img room set colour red", ["no room default 'colour'", "style", "size"]),
        ("!img room set size 4096x4096", ["too large"]),
        ("!img room set steps 41", ["steps", "1 to 40"]),
        ("!img room set guidance 31", ["guidance"]),
        ("!img room reset colour", ["room reset"]),
    ],
)
def test_room_command_errors(text, expected):
    message = error_of(text)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_help_and_its_topics_name_every_subcommand_and_who_may_use_it():
    text = "\n".join(
        topic.plain()
        for topic in (
            short_help("!img", LIMITS, editing=True, admin=True),
            options_help("!img", editing=True),
            rooms_help("!img", 50),
            admin_help("!img"),
        )
    )
    for sub in SUBCOMMANDS.values():
        assert f"`!img {sub.name}" in text, sub.name
    assert "bot admins" in admin_help("!img").plain()
    assert "power level 50 or more in the room (moderators)" in rooms_help("!img", 50).plain()
    assert "`--ar W:H`" in text and "16:9" in text


# ---- resolve: command, then room, then bot -------------------------------------------------


def test_resolve_ar_uses_the_chosen_models_native_size():
    assert (r(p("!img fox --ar 16:9")).width, r(p("!img fox --ar 16:9")).height) == (1344, 768)
    small = r(p("!img fox --ar 16:9 --model small"))
    assert (small.width, small.height, small.model) == (704, 384, "small")


def test_resolve_ar_never_exceeds_max_pixels():
    job = r(p("!img fox --ar 16:9"), limits=LimitSettings(max_pixels=512 * 512))
    assert job.width * job.height <= 512 * 512 and job.width > job.height


def test_resolve_style_applies_template_and_negative():
    job = r(p("!img a fox --style oil-painting --no rain"))
    style = BUILTIN["oil-painting"]
    assert job.prompt == style.prompt.replace("{prompt}", "a fox")
    assert job.negative_prompt == "rain, " + style.negative
    assert job.style == "oil-painting"


def test_style_template_is_not_format_so_braces_in_prompts_are_safe():
    job = r(p("!img a {weird} {prompt} fox --style photo"))
    assert job.prompt.startswith("a {weird} {prompt} fox, professional photograph")


def test_resolve_unknown_style_and_model_are_refused_with_the_choices():
    refused = r(p("!img fox --style vaporwave"))
    assert isinstance(refused, UsageError)
    assert "vaporwave" in refused.message and "oil-painting" in refused.message
    refused = r(p("!img fox --model huge"))
    assert isinstance(refused, UsageError) and "base, small" in refused.message


def test_at_least_twelve_builtin_styles_each_with_the_placeholder():
    assert len(BUILTIN) >= 12
    for name in (
        "photo",
        "cinematic",
        "oil-painting",
        "watercolor",
        "black-and-white",
        "anime",
        "pixel-art",
        "3d-render",
        "line-art",
        "comic",
        "isometric",
        "analog-film",
    ):
        assert BUILTIN[name].prompt.count("{prompt}") == 1


ROOM = RoomDefaults(
    style="watercolor",
    width=512,
    height=256,
    steps=12,
    guidance=3.0,
    negative="people",
    model="small",
)


def test_room_defaults_fill_what_the_command_leaves_open():
    job = r(Generate(prompt="a fox"), room=ROOM, random_seed=lambda bound: 5)
    assert (job.width, job.height, job.steps, job.guidance, job.model, job.style) == (
        512,
        256,
        12,
        3.0,
        "small",
        "watercolor",
    )
    assert job.negative_prompt.startswith("people, ")


def test_the_command_beats_the_room():
    job = r(
        p("!img a fox --size 128x128 --steps 2 --guidance 2 --no rain --model base --style none"),
        room=ROOM,
    )
    assert (job.width, job.height, job.steps, job.guidance, job.model, job.style) == (
        128,
        128,
        2,
        2.0,
        "base",
        "",
    )
    assert (job.prompt, job.negative_prompt) == ("a fox", "rain")
    # --ar beats the room's size too, sized for the room's model
    job = r(p("!img a fox --ar 16:9"), room=ROOM)
    assert (job.width, job.height) == (704, 384)


def test_n_gives_count_and_keeps_the_seed():
    job = r(p("!img fox --n 3 --seed 10"))
    assert (job.count, job.seed) == (3, 10)


def test_configured_style_is_used():
    catalogue = Catalogue(
        "base",
        {"base": (512, 512)},
        {**BUILTIN, "brand": Style("brand", "{prompt}, in ACME blue", "red")},
    )
    job = resolve(p("!img a logo --style brand"), DEFAULTS, LIMITS, catalogue)
    assert (job.prompt, job.negative_prompt, job.style) == ("a logo, in ACME blue", "red", "brand")


# ---- what review found ------------------------------------------------------------------------


def test_absurd_spans_do_not_break_the_parser():
    # Too long to be a span: a notice naming the range, never an exception or a picture.
    message = error_of("!img usage 1" + "0" * 80 + "d")
    assert "up to 99999" in message and "30m" in message and "all" in message
    assert p("!img usage 99999w") == Usage("99999w", None)


def test_usage_user_without_server_is_kept_for_the_bots_server_not_drawn():
    # The reply completes it with the bot's own server (replies.usage).
    assert p("!img usage @bob") == Usage("7d", "@bob")
    assert p("!img usage 30d @bob") == Usage("30d", "@bob")


def test_seeds_of_a_batch_stay_within_what_seed_accepts():
    refused = r(p(f"!img fox --seed {MAX_SEED} --n 2"))
    assert isinstance(refused, UsageError) and str(MAX_SEED - 1) in refused.message
    assert r(p(f"!img fox --seed {MAX_SEED - 1} --n 2")).seed == MAX_SEED - 1
    bounds = []
    r(p("!img fox --n 4"), random_seed=lambda bound: bounds.append(bound) or 0)
    assert bounds == [MAX_SEED + 2 - 4]  # the last picture's seed is at most MAX_SEED


def test_aspect_ratio_that_cannot_fit_the_limit_is_refused():
    refused = r(p("!img fox --ar 21:9"), limits=LimitSettings(max_pixels=6000))
    assert isinstance(refused, UsageError) and "--ar 21:9" in refused.message
    for max_pixels in range(64 * 64, 20_000, 397):
        for aspect in ((21, 9), (16, 9), (1, 1), (9, 21)):
            try:
                width, height = size_for_aspect(aspect, 1024 * 1024, max_pixels)
            except ValueError:
                continue
            assert width * height <= max_pixels


def test_no_none_drops_the_rooms_negative_prompt():
    job = r(p("!img fox --no none"), room=RoomDefaults(negative="people"))
    assert job.negative_prompt == ""
    assert r(Generate(prompt="fox"), room=RoomDefaults(negative="none")).negative_prompt == ""


def test_help_tells_the_quotas():
    from bot.config import QuotaSettings

    text = short_help("!img", LIMITS, QuotaSettings(pictures_per_hour=5, pictures_per_day=20))
    assert "Quota: 5 per hour and 20 per day pictures per person." in text.plain()
    assert "Quota" not in short_help("!img", LIMITS, QuotaSettings()).plain()


# ---- commands on a picture --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("!img again", Again()),
        ("!img again --enhance", Again(enhance=True)),
        ("!img vary", Vary()),
        ("!img vary 0.3", Vary(0.3)),
        ("!img upscale", Upscale(4)),
        ("!img upscale 8", Upscale(8)),
        ("!img upscale 2x --enhance", Upscale(2, enhance=True)),
    ],
)
def test_commands_on_a_picture(text, expected):
    assert p(text) == expected


@pytest.mark.parametrize(
    "text,words",
    [
        ("!img vary 3", "`vary` must be from 0.05 to 1"),
        ("!img upscale 3", "`upscale` by 2, 4 or 8, not 3"),
        ("!img a cat --strength 1.5", "`--strength` must be from 0.05 to 1"),
        ("!img a cat --enhance=yes", "`--enhance` takes no value"),
        ("!img room set enhance maybe", "`enhance` is `on` or `off`"),
    ],
)
def test_their_bad_values_are_named(text, words):
    result = p(text)
    assert isinstance(result, UsageError) and words in result.message


def test_enhance_and_strength_are_options_of_a_prompt():
    assert p("!img a cat --strength 0.4 --enhance") == Generate("a cat", strength=0.4, enhance=True)
