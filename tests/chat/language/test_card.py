"""A picture's card: what it says of a picture, and its copyable command, which — typed back
in any room, whatever that room's or that person's defaults — asks for the very same job."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from bot.chat.language.card import Asked, Made, card, hashed
from bot.chat.language.commands import Edit, Generate, Info, UsageError
from bot.chat.language.help import options_help
from bot.chat.language.parser import parse
from bot.chat.language.resolve import Catalogue, DefaultValues, resolve
from bot.chat.language.styles import BUILTIN, Style
from bot.config import GenerationSettings, LimitSettings
from generation.families.known import FAMILIES, SD, SDXL
from generation.job import Job

LIMITS = LimitSettings(max_steps=60, max_pixels=1536 * 1536)
BRAND = Style("brand", "{prompt}, in ACME blue", "off-brand", lora="acme", weight=0.8)
CATALOGUE = Catalogue(
    "sd",
    {"sd": (512, 512), "turbo": (1024, 1024), "flux": (1024, 1024)},
    styles={**BUILTIN, "brand": BRAND},
    families={"sd": SD, "turbo": SDXL, "flux": FAMILIES["flux"]},
)
DEFAULTS = GenerationSettings(size="512x512", steps=4, guidance=0.0)
# Defaults that change everything they can: the command must hold against them.
ROOM = DefaultValues(
    style="anime", width=768, height=512, steps=9, guidance=7.0, negative="fog", enhance=None
)
PERSON = DefaultValues(style="comic", aspect=(16, 9), steps=3, model="turbo", negative="rain")
ASKED = Asked("@alice:example.org", 1_780_000_000.0, 0.25, 1.5, "cuda:0")


def resolved(text: str, room=DefaultValues(), person=DefaultValues()):
    command = parse(text, "!img", LIMITS)
    assert isinstance(command, Generate), command
    return command, resolve(
        command, DEFAULTS, LIMITS, CATALOGUE, room, lambda _: 1234, person=person
    )


def made_by(text: str, picture: int | None = 0, **kw) -> Made:
    command, job = resolved(text, **kw)
    assert not isinstance(job, UsageError), job
    return Made(job, command.prompt, picture, ASKED)


def typed_back(made: Made, room=ROOM, person=PERSON):
    """The card's command, parsed and resolved where other defaults hold."""
    shown = card(made, CATALOGUE, "!img")
    assert shown.command is not None, shown.plain()
    assert shown.command in shown.plain().splitlines()  # a line of its own, to copy
    command, job = resolved(shown.command, room, person)
    assert not isinstance(job, UsageError), (shown.command, job)
    return command, job


@pytest.mark.parametrize(
    "text",
    [
        "!img a red fox --seed 5 --style oil painting --no rain --guidance 5",
        "!img a red fox --seed 5 --guidance 5",  # no style, no --no: `none` for both
        "!img a logo --style brand --guidance 3 --no blur",  # a style with a LoRA
        "!img a logo --style brand",
        "!img a lighthouse --ar 16:9 --steps 7 --enhance",
        "!img a lighthouse --model turbo --size 1024x768 --guidance 1.5",
        "!img a lighthouse --model flux",  # no guidance and no negative prompt to spell
        '!img "cancel" culture, oil painting --seed 3',  # a sub-command's word, in quotes
        '!img "info"? desk --seed 3',
    ],
)
def test_the_command_makes_the_same_job_whatever_the_defaults_where_it_is_typed(text):
    made = made_by(text)
    command, again = typed_back(made)
    assert command.prompt == made.prompt  # the prompt as typed, before its style
    assert again == made.job
    # The same where nothing is set, too.
    assert typed_back(made, DefaultValues(), DefaultValues())[1] == made.job


def test_one_picture_of_several_has_its_own_seed_and_the_sheet_covers_them_all():
    one = made_by("!img a red fox --n 3 --seed 5", picture=1)
    _, job = typed_back(one)
    assert (job.seed, job.count) == (6, 1)
    assert dataclasses.replace(job, seed=5, count=3) == one.job
    assert "How this picture was made (picture 2 of 3):" in card(one, CATALOGUE, "!img").plain()
    sheet = dataclasses.replace(one, picture=None)
    shown = card(sheet, CATALOGUE, "!img")
    assert "--seed 5" in shown.command and "--n 3" in shown.command
    assert (
        "How this contact sheet of 3 pictures was made:" in shown.plain()
        and "Seed: 5–7" in shown.plain()
    )
    assert typed_back(sheet)[1] == one.job


def test_the_card_says_how_it_was_made_and_who_asked():
    shown = card(
        made_by("!img a logo --style brand --guidance 3 --no blur --seed 9"), CATALOGUE, "!img"
    )
    lines = shown.plain().splitlines()
    for line in (
        "Prompt: a logo",
        "Drawn as: a logo, in ACME blue",
        "Negative prompt: blur, off-brand",
        "Seed: 9",
        "Steps: 4",
        "Size: 512×512",
        "Guidance: 3",
        "Model: sd (SD 1.x/2.x)",
        "Style: brand",
        "LoRA: acme at 0.8",
        "Asked by: @alice:example.org, 2026-05-28 20:26:40 UTC",
        "Took: 1.5 s to make, 0.2 s waiting in the queue",
        "Worker: cuda:0",
    ):
        assert line in lines, (line, lines)
    # The style's negative prompt comes back through --style, not --no.
    assert shown.command.endswith("--style brand --no blur")


def test_a_prompt_with_markup_is_literal_in_the_html():
    shown = card(made_by("!img <b>bold</b> & co --seed 1"), CATALOGUE, "!img")
    assert "<b>bold</b> & co" in shown.plain()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in shown.html()
    assert "<b>bold</b>" not in shown.html()
    assert "<pre><code>!img &lt;b&gt;bold" in shown.html()


def hidden(made: Made) -> Made:
    """The picture as the log keeps it with usage.store_prompts off."""
    job = made.job
    return dataclasses.replace(
        made,
        job=dataclasses.replace(
            job, prompt=hashed(job.prompt), negative_prompt=hashed(job.negative_prompt)
        ),
        prompt=hashed(made.prompt),
    )


def test_without_kept_prompts_the_pictures_own_parameters_give_them_else_not_kept():
    made = made_by("!img a red fox --seed 5 --style photo --no rain --guidance 5")
    assert hashed("x") == "sha256:" + hashlib.sha256(b"x").hexdigest()
    params = made.job.parameters("sd")
    from_picture = dataclasses.replace(hidden(made), params=params)
    shown = card(from_picture, CATALOGUE, "!img")
    assert "Prompt: a red fox (read from the picture: the log keeps no prompts)" in shown.plain()
    assert typed_back(from_picture)[1] == made.job
    # Without them (compliance.embed_prompt off), or with another picture's.
    for other in ({"seed": 5}, {**params, "prompt": "a blue fox"}):
        shown = card(dataclasses.replace(hidden(made), params=other), CATALOGUE, "!img")
        assert "Prompt: not kept" in shown.plain()
        assert shown.command is None and "its prompt is not kept" in shown.plain()


def test_a_style_changed_since_is_spelled_out_and_one_with_a_lora_gives_no_command():
    made = made_by("!img a red fox --seed 5 --style photo --no rain --guidance 5")
    changed = dataclasses.replace(
        CATALOGUE, styles={**CATALOGUE.styles, "photo": Style("photo", "{prompt}, a photo")}
    )
    shown = card(made, changed, "!img")
    assert "--style none" in shown.command and "professional photograph" in shown.command
    command = parse(shown.command, "!img", LIMITS)
    again = resolve(command, DEFAULTS, LIMITS, changed, ROOM, person=PERSON)
    assert dataclasses.replace(again, style="photo") == made.job
    branded = made_by("!img a logo --style brand")
    gone = dataclasses.replace(CATALOGUE, styles=dict(BUILTIN))
    shown = card(branded, gone, "!img")
    assert shown.command is None and "with its LoRA, has changed since" in shown.plain()
    gone_model = dataclasses.replace(CATALOGUE, models={"turbo": (1024, 1024)})
    assert "no longer configured" in card(made, gone_model, "!img").plain()


def test_made_from_a_picture_the_command_needs_that_picture():
    _, job = resolved("!img a red fox --seed 5 --size 512x384 --strength 0.4")
    img2img = dataclasses.replace(
        job, kind="img2img", strength=0.4, source="mxc://example.org/abc#key=secret"
    )
    shown = card(Made(img2img, "a red fox", 0, ASKED), CATALOGUE, "!img")
    assert "Reply to the picture it was made from with:" in shown.plain()
    assert "--strength 0.4" in shown.command
    assert "Made from: mxc://example.org/abc" in shown.plain()
    assert "secret" not in shown.plain()  # an encrypted file's key is never shown
    command = parse(shown.command, "!img", LIMITS)
    assert command.strength == 0.4 and command.prompt == "a red fox"
    upscale = dataclasses.replace(job, kind="upscale", factor=4, width=2048, height=1536)
    shown = card(Made(upscale, "a red fox", 0, None), CATALOGUE, "!img")
    assert shown.command == "!img upscale 4"
    assert "How this upscale was made (4× to 2048×1536):" in shown.plain()
    assert "Asked by: not kept" in shown.plain()


def test_info_is_a_sub_command_in_reply_and_listed_in_help():
    assert parse("!img info", "!img", LIMITS) == Info()
    refused = parse("!img info please", "!img", LIMITS)
    assert isinstance(refused, UsageError) and "in reply to one of my pictures" in str(refused)
    assert "`!img info` — in reply to one of my pictures" in options_help("!img").plain()


def test_an_edit_and_an_upscale_of_someones_picture():
    edit = Job(
        "make it night", 7, 6, 512, 384, guidance=4.0, model="sd", kind="edit", source="mxc://e/1"
    )
    shown = card(Made(edit, "make it night", 0, ASKED), CATALOGUE, "!img")
    assert shown.command == "!img edit make it night --seed 7 --steps 6 --guidance 4 --no none"
    assert parse(shown.command, "!img", LIMITS) == Edit(
        "make it night", seed=7, steps=6, guidance=4.0, negative_prompt="none"
    )
    assert "Reply to the picture it was made from with:" in shown.plain()
    theirs = Job("", 0, 1, 2048, 2048, kind="upscale", factor=4, source="mxc://e/2")
    shown = card(Made(theirs, "upscale 4x", 0, ASKED), CATALOGUE, "!img")
    assert "Prompt" not in shown.plain() and shown.command == "!img upscale 4"


def test_an_enhanced_picture_points_to_the_reaction_that_made_it():
    finished = Job("a fox", 3, 1, 512, 512, kind="upscale", factor=1, enhance=True)
    shown = card(Made(finished, "a fox", 0, ASKED), CATALOGUE, "!img")
    assert "How this enhanced picture was made" in shown.plain()
    assert (
        shown.command is None and "React with ✨ to the picture it was made from" in shown.plain()
    )
