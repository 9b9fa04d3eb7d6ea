"""The tiny Qwen-Image-Edit Plus: written offline, recognised from its folder, loaded by the
engine as its own pipeline (AutoPipeline has no text-to-image one for it), and it edits one
picture or several, seeded, one call a picture; a job that is not an edit is refused with the
model named, and the start refuses it as the default model.

The pipeline scales each picture to about 1024² for its VAE whatever the job's size, which
costs the tiny model seconds an edit on a CPU: one test runs at that size (the warm-up), the
others with the pipeline's VAE size made small (the test's only change to diffusers)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from generation.families.known import QWENIMAGE_EDIT
from generation.families.model_folder import family_of, inspect_model
from generation.job import GenerationError, Job
from generation.models.engine import Engine
from generation.models.preflight import check_parts
from generation.testing.tiny import make_test_model

EDIT_PLUS = "diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("qwen-edit") / "qwen-edit", "qwenimage-edit")


@pytest.fixture(scope="module")
def engine(folder):
    engine = Engine(folder, device="cpu", name="qwen-edit")
    engine.load()
    yield engine
    engine.unload()


@pytest.fixture
def small_vae(monkeypatch):
    monkeypatch.setattr(f"{EDIT_PLUS}.VAE_IMAGE_SIZE", 64 * 64)


def edit(**fields) -> Job:
    return Job(
        **{
            "prompt": "make it night",
            "seed": 7,
            "steps": 2,
            "width": 96,
            "height": 64,
            "kind": "edit",
            "image": Image.new("RGB", (120, 80), (30, 30, 200)),
            **fields,
        }
    )


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_folder_is_small_recognised_and_loads_as_its_own_pipeline(folder, engine):
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert size < 5_000_000
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == type(engine.pipe).__name__ == "QwenImageEditPlusPipeline"
    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]  # as a download has it
    assert family_of(folder) is QWENIMAGE_EDIT is engine.traits
    assert inspect_model(folder) == "qwenimage-edit"
    assert engine.native_size() == (1024, 1024)
    tokens = engine.pipe.processor.tokenizer.convert_tokens_to_ids
    assert engine.pipe.text_encoder.config.image_token_id == tokens("<|image_pad|>")


def test_it_drops_exactly_its_system_prompt(engine):
    from generation.testing.tiny_qwenimage_edit import SYSTEM_PROMPT

    pipe = engine.pipe
    system = pipe.prompt_template_encode.split("{}")[0]
    assert system == SYSTEM_PROMPT  # the installed pipeline's, not an old copy
    assert len(pipe.processor.tokenizer(system).input_ids) == pipe.prompt_template_encode_start_idx


def test_an_edit_of_one_picture_and_of_two_gives_the_jobs_size(engine, small_vae):
    (one,) = engine.generate(edit())
    hat = Image.new("RGB", (64, 64), (200, 200, 30))
    (two,) = engine.generate(edit(references=("mxc://x/y",), reference_images=(hat,)))
    assert one.size == two.size == (96, 64)
    assert (pixels(one) != pixels(two)).any()  # the second picture is read too


def test_a_seed_gives_the_same_pixels_and_n_pictures_are_one_call_each(engine, small_vae):
    (first,) = engine.generate(edit())
    (again,) = engine.generate(edit())
    assert (pixels(first) == pixels(again)).all()
    # With guidance: true CFG, against the blank negative prompt " ". The pipeline refuses a
    # batch, so picture i is made alone, from seed + i.
    made = engine.generate(edit(guidance=4.0, count=2))
    (alone,) = engine.generate(edit(guidance=4.0, seed=8))
    assert [image.size for image in made] == [(96, 64)] * 2
    assert (pixels(made[0]) != pixels(made[1])).any()
    assert (pixels(made[1]) == pixels(alone)).all()


@pytest.mark.parametrize("kind", ["txt2img", "img2img"])
def test_a_job_that_is_not_an_edit_is_refused_with_the_model_named(engine, kind):
    job = edit(kind=kind, strength=0.6) if kind == "img2img" else edit(kind=kind, image=None)
    with pytest.raises(
        GenerationError,
        match=rf"The model qwen-edit \(Qwen-Image-Edit\) only "
        rf"edits pictures by instruction: it makes no "
        rf"{kind} jobs",
    ):
        engine.generate(job)


def test_the_warm_up_edits_a_blank_picture_at_the_pipelines_own_sizes(engine, monkeypatch):
    seen = []
    generate = engine.generate
    monkeypatch.setattr(engine, "generate", lambda job: seen.append(job) or generate(job))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's, from a NaN picture
        assert engine.warm_up(64, 64) > 0  # 1 step asked: 0/0 in its stretched schedule
    (job,) = seen
    assert job.kind == "edit" and job.image.size == (64, 64) and job.steps == 2


def test_the_start_and_check_refuse_it_as_the_default_model(folder, tmp_path):
    sd = make_test_model(tmp_path / "sd", "sd")
    (part,) = check_parts({"qwen-edit": ("generation.model", folder)})
    assert part.message == (
        f"generation.model: {folder} is a Qwen-Image-Edit model, which only edits pictures: "
        "name it in generation.models and set generation.edit_model to it"
    )
    listed = check_parts(
        {"sd": ("generation.model", sd), "qwen-edit": ("generation.models.qwen-edit", folder)},
        edit_model="qwen-edit",
    )
    assert all(part.ok for part in listed)
    assert listed[-1].detail == "qwen-edit (Qwen-Image-Edit)"
