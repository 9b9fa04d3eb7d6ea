"""imgbot's engine drives every family's tiny model through the real loading path: the
picture it was asked for, img2img from a picture, and two compatible jobs in one batch
making the pictures each would make alone. Each model is built and loaded once."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from PIL import Image

from generation.families.known import FAMILIES, FLUX_DEV, SD
from generation.families.model_folder import family_of
from generation.job import GenerationError, Job
from generation.models.engine import Engine
from generation.models.pipeline_call import arguments
from generation.testing.tiny import make_test_model

NEW = ("flux", "flux2-klein", "zimage", "qwenimage")
LABELS = {
    "flux": "FLUX.1 [schnell]",
    "flux2-klein": "FLUX.2 [klein]",
    "zimage": "Z-Image",
    "qwenimage": "Qwen-Image",
}


@pytest.fixture(scope="module", params=NEW)
def loaded(request, tmp_path_factory):
    arch = request.param
    folder = make_test_model(tmp_path_factory.mktemp(arch) / arch, arch)
    engine = Engine(folder, device="cpu", name=arch)
    engine.load()
    yield arch, engine
    engine.unload()


def job(**fields) -> Job:
    return Job(
        **{"prompt": "a red kite", "seed": 7, "steps": 2, "width": 64, "height": 96, **fields}
    )


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_family_is_read_from_the_folder_and_named_when_loading(loaded, caplog):
    arch, engine = loaded
    assert engine.family == arch and engine.traits.label == LABELS[arch]
    assert family_of(engine.path) is engine.traits
    assert engine.native_size() == (engine.traits.native_side,) * 2
    with caplog.at_level(logging.INFO, logger="generation.models.engine"):
        engine.speed_up(engine.pipe)
    (line,) = [r.getMessage() for r in caplog.records if "speed-ups" in r.getMessage()]
    assert "attention: SDPA (diffusers' native backend)" in line and "compile: off" in line


def test_a_picture_of_the_asked_size_and_the_same_seed_gives_the_same_pixels(loaded):
    _, engine = loaded
    (first,) = engine.generate(job())
    (again,) = engine.generate(job())
    assert first.size == (64, 96)
    assert (pixels(first) == pixels(again)).all()
    (other,) = engine.generate(job(seed=8))
    assert (pixels(first) != pixels(other)).any()


def test_the_start_s_one_step_warm_up_runs_clean(loaded, monkeypatch):
    """Qwen-Image's schedule divides 0 by 0 at one step (a NaN picture, numpy's "invalid
    value" warnings in the operator's log): its warm-up runs the two it needs."""
    _, engine = loaded
    seen = []
    generate = engine.generate
    monkeypatch.setattr(engine, "generate", lambda job: seen.append(job) or generate(job))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        engine.warm_up(64, 64)  # steps=1, as the start asks
    assert [job.steps for job in seen] == [engine.traits.min_steps]


def test_img2img_from_a_picture_at_the_jobs_size(loaded):
    arch, engine = loaded
    source = Image.new("RGB", (200, 120), (200, 30, 30))
    (picture,) = engine.generate(
        job(kind="img2img", image=source, strength=0.6, width=96, height=64)
    )
    assert picture.size == (96, 64)
    if arch != "flux2-klein":  # FLUX.2 takes the source as a reference: no strength
        assert engine.traits.strength


def test_two_compatible_jobs_share_a_batch_and_make_what_each_makes_alone(loaded):
    _, engine = loaded
    a, b = job(prompt="a kite"), job(prompt="a boat", seed=11, count=2)
    assert engine.batch_key(a) == engine.batch_key(b) is not None
    together = engine.generate_batch([a, b])
    assert [len(pictures) for pictures in together] == [1, 2]
    alone = engine.generate(b)
    for made, single in zip(together[1], alone):
        assert np.abs(pixels(made) - pixels(single)).max() <= 2  # batched kernels' last bit


def test_sizes_off_the_familys_grid_are_refused_for_img2img(loaded):
    _, engine = loaded
    with pytest.raises(GenerationError, match="multiples of 16"):
        engine.generate(
            job(kind="img2img", image=Image.new("RGB", (64, 64)), strength=0.5, width=72, height=64)
        )


@pytest.mark.parametrize("key", sorted(FAMILIES))
def test_each_familys_call_gets_its_guidance_and_negative_prompt_as_it_takes_them(key):
    family = FAMILIES[key]
    given = arguments(family, 5.0, ["blurry", ""])
    if family.guidance is None:
        assert not set(given) - {"guidance_scale"} and given.get("guidance_scale", 1.0) <= 1
    else:
        assert given[family.guidance] == 5.0
    if family.negative_prompt:
        assert given["negative_prompt"] == ["blurry", family.blank_negative]
        assert "negative_prompt" not in arguments(family, 1.0, ["blurry", ""])
    else:
        assert "negative_prompt" not in given


def test_qwen_image_guides_with_a_blank_negative_where_nobody_gave_one():
    # Its true CFG runs only with a negative prompt; without one, guidance would do nothing.
    assert arguments(FAMILIES["qwenimage"], 4.0, [""]) == {
        "true_cfg_scale": 4.0,
        "negative_prompt": [" "],
    }
    assert arguments(SD, 4.0, [""]) == {"guidance_scale": 4.0}  # SD encodes "" itself


def test_flux_dev_is_told_apart_from_schnell_by_its_guidance_embedding(tmp_path):
    import json

    (tmp_path / "transformer").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"guidance_embeds": True}))
    assert family_of(tmp_path) is FLUX_DEV
    assert (FLUX_DEV.steps, FLUX_DEV.guidance_default, FLUX_DEV.negative_prompt) == (28, 3.5, False)


def test_flux2_klein_edits_a_picture_by_instruction_and_others_say_they_cannot(loaded):
    arch, engine = loaded
    source = Image.new("RGB", (96, 64), (30, 30, 200))
    edit = job(kind="edit", image=source, prompt="make it night", width=96, height=64)
    if arch == "flux2-klein":
        (edited,) = engine.generate(edit)
        (plain,) = engine.generate(job(prompt="make it night", width=96, height=64))
        assert edited.size == (96, 64)
        assert (pixels(edited) != pixels(plain)).any()  # the picture is a reference
        assert edit.parameters("klein")["kind"] == "edit"
    else:
        with pytest.raises(GenerationError, match="cannot edit pictures by instruction"):
            engine.generate(edit)
