"""What chat offers follows each model's family: a --no or --guidance the model cannot use
is refused with the model named, the family's own steps and guidance apply where the config
sets none, sizes follow its grid, and `!img models` says what each model is."""

from __future__ import annotations

import pytest

from bot.chat.language.commands import UsageError
from bot.chat.language.parser import parse
from bot.chat.language.resolve import Catalogue, RoomDefaults, resolve
from bot.config import GenerationSettings, LimitSettings
from generation.families.known import FAMILIES, SD, SDXL

LIMITS = LimitSettings(max_steps=60, max_pixels=1536 * 1536)
SIDES = {
    "sd": (512, 512),
    "turbo": (1024, 1024),
    "zimage": (1024, 1024),
    "flux": (1024, 1024),
    "klein": (1024, 1024),
    "qwen": (1328, 1328),
}
CATALOGUE = Catalogue(
    "sd",
    SIDES,
    families={
        "sd": SD,
        "turbo": SDXL,
        "zimage": FAMILIES["zimage"],
        "flux": FAMILIES["flux"],
        "klein": FAMILIES["flux2-klein"],
        "qwen": FAMILIES["qwenimage"],
    },
)
UNSET = GenerationSettings(size="512x512")  # steps and guidance left to the families


def job(text: str, defaults: GenerationSettings = UNSET, room=RoomDefaults()):
    return resolve(
        parse(text, "!img", LIMITS), defaults, LIMITS, CATALOGUE, room, random_seed=lambda _: 1
    )


def test_a_negative_prompt_on_a_model_without_one_is_refused_naming_the_model():
    for model, label in (("flux", "FLUX.1 [schnell]"), ("klein", "FLUX.2 [klein]")):
        refused = job(f"!img a fox --model {model} --no blur")
        assert isinstance(refused, UsageError)
        assert f"The model {model} ({label}) takes no negative prompt" in str(refused)


def test_guidance_on_a_distilled_model_without_any_is_refused():
    refused = job("!img a fox --model flux --guidance 4")
    assert isinstance(refused, UsageError) and "flux (FLUX.1 [schnell])" in str(refused)
    assert "without guidance" in str(refused)


def test_families_that_take_a_negative_prompt_get_it_with_guidance():
    for model in ("zimage", "qwen", "sd"):
        made = job(f"!img a fox --model {model} --guidance 4 --no blur")
        assert made.negative_prompt == "blur" and made.guidance == 4


def test_each_family_brings_its_default_steps_and_guidance_where_the_config_sets_none():
    assert (job("!img a fox --model zimage").steps, job("!img a fox --model zimage").guidance) == (
        8,
        0.0,
    )
    assert (job("!img a fox --model qwen").steps, job("!img a fox --model qwen").guidance) == (
        50,
        4.0,
    )
    assert job("!img a fox --model flux").steps == 4
    assert job("!img a fox").steps == 4  # SD as before
    configured = GenerationSettings(size="512x512", steps=12, guidance=2.0)
    made = job("!img a fox --model zimage", configured)
    assert (made.steps, made.guidance) == (12, 2.0)  # the operator's word wins


def test_a_rooms_negative_prompt_rests_on_a_model_without_one():
    room = RoomDefaults(negative="blurry", guidance=5.0)
    made = job("!img a fox --model klein", room=room)
    assert made.negative_prompt == "" and made.prompt == "a fox"
    assert job("!img a fox --model zimage", room=room).negative_prompt == "blurry"


def test_aspect_ratios_follow_the_native_size_and_the_grid_of_16():
    made = job("!img a fox --model qwen --ar 16:9")
    assert made.width % 16 == 0 and made.height % 16 == 0 and made.width > made.height
    assert abs(made.width * made.height - 1328 * 1328) / (1328 * 1328) < 0.1
    refused = job("!img a fox --model flux --size 520x520")
    assert isinstance(refused, UsageError)
    assert "multiples of 16, not 520x520" in str(refused)
    assert job("!img a fox --model sd --size 520x520").width == 520  # SD's grid is 8


EDITING = Catalogue(
    "sd",
    {"sd": (512, 512), "qwen-edit": (1024, 1024)},
    families={"sd": SD, "qwen-edit": FAMILIES["qwenimage-edit"]},
    edit_model="qwen-edit",
)
ONLY_EDITS = (
    "The model qwen-edit (Qwen-Image-Edit) only edits pictures: reply to a picture "
    "with `edit <what to change>`."
)


def test_a_model_that_only_edits_takes_no_prompt_and_no_image_to_image():
    for text in ("!img a fox --model qwen-edit", "!img a fox --model qwen-edit --strength 0.5"):
        refused = resolve(parse(text, "!img", LIMITS), UNSET, LIMITS, EDITING)
        assert isinstance(refused, UsageError) and refused.message == ONLY_EDITS
    # ...but an edit's instruction runs on it, with the family's steps and true CFG.
    made = resolve(
        parse("!img make it night --model qwen-edit", "!img", LIMITS),
        UNSET,
        LIMITS,
        EDITING,
        edit=True,
    )
    assert (made.model, made.steps, made.guidance) == ("qwen-edit", 40, 4.0)
    assert EDITING.only_edits("sd") is None


def test_a_room_cannot_make_a_model_that_only_edits_its_default():
    from bot.chat.language.rooms import canonical

    with pytest.raises(ValueError, match="only edits pictures"):
        canonical("model", "qwen-edit", LIMITS, EDITING)
    assert canonical("model", "sd", LIMITS, EDITING) == "sd"
