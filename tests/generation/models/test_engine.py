"""The GPU side with real (tiny, random-weight) diffusers models on the CPU.

Covers `generation/models/engine.py` (text-to-image and image-to-image), `test_model.py`,
`png.py`, `device.py`, and the rule that the two packages stay apart (the chat side never imports torch, the GPU side never imports nio).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from generation.families.model_folder import ModelError, family_of, inspect_model
from generation.job import GenerationError, Job
from generation.models.engine import Engine
from generation.models.pipeline_call import img2img_steps
from generation.models.pool import ModelPool
from generation.postprocess.png import encode_png, parameters_text, read_parameters
from generation.runtime.device import Placement, choose
from generation.testing.tiny import make_test_model

REPO = Path(__file__).resolve().parents[3]
ARCHS = ("sd", "sdxl")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine-models")
    return {arch: make_test_model(root / f"tiny-{arch}", arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def engines(models) -> dict[str, Engine]:
    loaded = {}
    for arch, folder in models.items():
        engine = Engine(folder, "cpu")
        engine.load()
        loaded[arch] = engine
    return loaded


def pixels(image: Image.Image) -> bytes:
    return image.convert("RGB").tobytes()


def nearly_same(a: Image.Image, b: Image.Image) -> bool:
    """Equal up to float rounding: batched and single runs take different CPU kernels, which
    may move a handful of 8-bit values by one level (seen here: 1 value in 12,288)."""
    pa, pb = pixels(a), pixels(b)
    diffs = [abs(x - y) for x, y in zip(pa, pb) if x != y]
    return len(pa) == len(pb) and max(diffs, default=0) <= 2 and len(diffs) <= len(pa) // 1000


def make(
    engine: Engine,
    seed: int = 1,
    width: int = 64,
    height: int = 64,
    count: int = 1,
    steps: int = 2,
    **kw,
) -> list[Image.Image]:
    return engine.generate(
        Job(
            prompt="a lighthouse at dawn",
            seed=seed,
            steps=steps,
            width=width,
            height=height,
            count=count,
            **kw,
        )
    )


# ---- the engine with both architectures ---------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_test_model_folder_is_a_diffusers_model_of_its_family(models, arch):
    folder = models[arch]
    assert (folder / "model_index.json").is_file()
    assert inspect_model(folder) == arch
    expected = "StableDiffusionPipeline" if arch == "sd" else "StableDiffusionXLPipeline"
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_loads_on_cpu_in_float32(engines, models, arch):
    engine = engines[arch]
    assert engine.family == arch
    assert engine.name == models[arch].name
    assert engine.placement == Placement("cpu", "float32")
    assert engine.pipe.unet.dtype.is_floating_point
    assert str(engine.pipe.unet.dtype) == "torch.float32"
    assert engine.pipe.device.type == "cpu"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("width, height", [(64, 64), (96, 64)])
def test_pictures_have_the_asked_size(engines, arch, width, height):
    images = make(engines[arch], width=width, height=height)
    assert len(images) == 1
    assert isinstance(images[0], Image.Image)
    assert images[0].size == (width, height)
    assert images[0].mode == "RGB"


@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_same_pixels_and_other_seed_other_pixels(engines, arch):
    engine = engines[arch]
    first, again, other = make(engine, seed=5)[0], make(engine, seed=5)[0], make(engine, seed=6)[0]
    assert pixels(first) == pixels(again)
    assert pixels(first) != pixels(other)


@pytest.mark.parametrize("arch", ARCHS)
def test_picture_i_of_a_batch_is_seed_plus_i_alone(engines, arch):
    engine = engines[arch]
    batch = make(engine, seed=40, count=2)
    assert len(batch) == 2
    assert not nearly_same(batch[0], batch[1])
    for i, image in enumerate(batch):
        assert nearly_same(image, make(engine, seed=40 + i)[0]), f"picture {i}"


class OutOfMemoryAbove:
    """The real pipeline, except that it runs out of GPU memory above `limit` pictures."""

    def __init__(self, pipe, limit: int):
        self.pipe, self.limit, self.batches = pipe, limit, []

    def __call__(self, **kw):
        import torch

        self.batches.append(len(kw["prompt"]))
        if len(kw["prompt"]) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.pipe(**kw)


def test_a_batch_too_big_for_memory_is_made_one_by_one(engines, monkeypatch):
    engine = engines["sd"]
    tight = OutOfMemoryAbove(engine.pipe, limit=1)
    monkeypatch.setattr(engine, "pipe", tight)
    pictures = make(engine, seed=70, count=3)
    assert tight.batches == [3, 1, 1, 1]
    monkeypatch.undo()
    for i, image in enumerate(pictures):
        assert nearly_same(image, make(engine, seed=70 + i)[0]), f"picture {i}"


def test_a_single_picture_too_big_for_memory_is_a_clear_error(engines, monkeypatch):
    engine = engines["sd"]
    monkeypatch.setattr(engine, "pipe", OutOfMemoryAbove(engine.pipe, limit=0))
    with pytest.raises(GenerationError, match="ran out of memory for 64x64; try a smaller"):
        make(engine, count=2)


def test_negative_prompt_is_used_with_guidance(engines):
    engine = engines["sd"]
    plain = make(engine, seed=3, guidance=5.0)[0]
    negative = make(engine, seed=3, guidance=5.0, negative_prompt="fog, rain")[0]
    assert pixels(plain) != pixels(negative)


def test_warm_up_returns_its_duration(engines):
    assert engines["sd"].warm_up(64, 64) > 0


def test_generate_before_load_is_an_error(models):
    engine = Engine(models["sd"], "cpu")
    with pytest.raises(RuntimeError, match="before load"):
        make(engine)


# ---- image to image -----------------------------------------------------------------------


def source_picture(width: int = 80, height: int = 48) -> Image.Image:
    """A picture of another size than the jobs', with shapes to keep: it is scaled first."""
    image = Image.new("RGB", (width, height), (200, 40, 30))
    image.paste((20, 40, 220), (0, 0, width // 2, height // 2))
    return image


def vary(engine: Engine, strength: float = 0.5, seed: int = 1, steps: int = 2, **kw):
    return make(
        engine,
        seed=seed,
        kind="img2img",
        strength=strength,
        steps=steps,
        image=kw.pop("image", source_picture()),
        **kw,
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_image_to_image_shares_the_loaded_weights(engines, arch):
    engine = engines[arch]
    pipe = engine.image_to_image
    assert type(pipe).__name__.endswith("Img2ImgPipeline")
    assert pipe is engine.image_to_image  # made once, then kept
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(pipe, part) is getattr(engine.pipe, part), part
    if arch == "sdxl":
        assert pipe.text_encoder_2 is engine.pipe.text_encoder_2


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("width, height", [(64, 64), (96, 64)])
def test_image_to_image_has_the_jobs_size(engines, arch, width, height):
    images = vary(engines[arch], width=width, height=height)
    assert [(i.size, i.mode) for i in images] == [((width, height), "RGB")]


@pytest.mark.parametrize("arch", ARCHS)
def test_image_to_image_same_seed_same_picture_other_strength_other_picture(engines, arch):
    engine = engines[arch]
    # 4 steps: diffusers runs int(4 × strength) of them, 2 at 0.5 and 3 at 0.9 (with 2
    # steps both would run the same single step and give the same picture).
    first, again = vary(engine, seed=8, steps=4)[0], vary(engine, seed=8, steps=4)[0]
    assert pixels(first) == pixels(again)
    assert pixels(vary(engine, seed=8, steps=4, strength=0.9)[0]) != pixels(first)
    assert pixels(vary(engine, seed=9, steps=4)[0]) != pixels(first)


def test_image_to_image_starts_from_the_picture(engines):
    """A low strength keeps most of the source; a text-to-image picture of the same seed
    has nothing of it."""
    engine = engines["sd"]
    source = source_picture(64, 64)
    kept = vary(engine, strength=0.2, steps=5, image=source)[0]
    fresh = make(engine, steps=5)[0]

    def distance(image):
        a, b = pixels(image), pixels(source)
        return sum(abs(x - y) for x, y in zip(a, b)) / len(a)

    assert distance(kept) < distance(fresh)


def test_a_tiny_strength_still_runs_a_step(engines):
    # 2 steps at 0.05 would be int(0.1) = 0 denoising steps; the engine asks for 20.
    assert img2img_steps(Job(prompt="", seed=0, steps=2, width=8, height=8, strength=0.05)) == 20
    images = vary(engines["sd"], strength=0.05, steps=2)
    assert [i.size for i in images] == [(64, 64)]


@pytest.mark.parametrize(
    "strength, asked, steps",
    [
        (0.3, 1, 4),
        (0.5, 1, 2),
        (1.0, 1, 1),
        (0.07, 1, 15),
        (0.34, 2, 3),
        (0.8, 4, 4),
        (0.5, 10, 10),
    ],
)
def test_img2img_steps_give_at_least_one_denoising_step(strength, asked, steps):
    job = Job(prompt="", seed=0, steps=asked, width=8, height=8, strength=strength)
    assert img2img_steps(job) == steps
    assert int(steps * strength) >= 1


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5])
def test_a_strength_out_of_range_is_refused(engines, strength):
    with pytest.raises(GenerationError, match="above 0 and at most 1"):
        vary(engines["sd"], strength=strength)


def test_image_to_image_without_a_source_is_refused(engines):
    with pytest.raises(GenerationError, match="needs a source picture"):
        make(engines["sd"], kind="img2img", strength=0.5)
    with pytest.raises(GenerationError, match="multiples of 8, not 60x64"):
        vary(engines["sd"], width=60)


@pytest.mark.parametrize("arch", ARCHS)
def test_image_to_image_count_2_gives_seed_and_seed_plus_1(engines, arch):
    engine = engines[arch]
    batch = vary(engine, seed=30, count=2)
    assert len(batch) == 2
    assert not nearly_same(batch[0], batch[1])
    for i, image in enumerate(batch):
        assert nearly_same(image, vary(engine, seed=30 + i)[0]), f"picture {i}"


def test_an_image_to_image_batch_too_big_for_memory_is_made_one_by_one(engines, monkeypatch):
    engine = engines["sd"]
    tight = OutOfMemoryAbove(engine.image_to_image, limit=1)
    monkeypatch.setattr(engine, "_image_to_image", tight)
    pictures = vary(engine, seed=50, count=2)
    assert tight.batches == [2, 1, 1]
    monkeypatch.undo()
    for i, image in enumerate(pictures):
        assert nearly_same(image, vary(engine, seed=50 + i)[0]), f"picture {i}"


def test_an_upscale_job_is_not_the_engines(engines):
    with pytest.raises(GenerationError, match="makes txt2img, img2img and edit jobs, not upscale"):
        engines["sd"].generate(
            Job(
                prompt="",
                seed=0,
                steps=0,
                width=128,
                height=128,
                kind="upscale",
                factor=2,
                image=source_picture(64, 64),
            )
        )


def test_unload_drops_the_image_to_image_pipeline(models):
    engine = Engine(models["sd"], "cpu")
    engine.load()
    assert engine.image_to_image is not None
    engine.unload()
    assert engine._image_to_image is None and engine.pipe is None
    with pytest.raises(RuntimeError, match="before load"):
        engine.image_to_image  # noqa: B018


def test_the_model_pool_passes_image_to_image_through(models, engines):
    pool = ModelPool({"sd": models["sd"]}, "sd", "cpu")
    job = Job(
        prompt="a lighthouse at dawn",
        seed=3,
        steps=2,
        width=64,
        height=64,
        kind="img2img",
        strength=0.5,
        image=source_picture(),
        model="sd",
    )
    assert pixels(pool.generate(job)[0]) == pixels(
        engines["sd"].generate(Job(**{**job.__dict__, "model": ""}))[0]
    )


# ---- model folders that cannot be used ----------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="is not a folder"):
        inspect_model(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="local folders only"):
        Engine(tmp_path / "nowhere")


def test_hub_name_is_not_a_folder():
    with pytest.raises(ModelError, match="is not a folder"):
        Engine("stabilityai/sdxl-turbo", "cpu")


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelError, match="no model_index.json: not a diffusers model folder"):
        inspect_model(tmp_path)


@pytest.mark.parametrize("content", ["{not json", "{}", '{"other": 1}'])
def test_broken_model_index(tmp_path, content):
    (tmp_path / "model_index.json").write_text(content)
    with pytest.raises(ModelError, match="not a valid model index"):
        inspect_model(tmp_path)


@pytest.mark.parametrize("content", ["[]", '"StableDiffusionPipeline"'])
def test_model_index_that_is_not_an_object(tmp_path, content):
    (tmp_path / "model_index.json").write_text(content)
    with pytest.raises(ModelError, match="not a valid model index"):
        inspect_model(tmp_path)


def test_a_pipeline_that_is_not_text_to_image(tmp_path):
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "StableVideoDiffusionPipeline"})
    )
    with pytest.raises(ModelError) as info:
        inspect_model(tmp_path)
    message = str(info.value)
    assert "StableVideoDiffusionPipeline, which is not a text-to-image pipeline" in message
    for supported in (
        "SD 1.x/2.x (StableDiffusionPipeline)",
        "FLUX.1 [schnell] (FluxPipeline)",
        "Z-Image (ZImagePipeline)",
        "Qwen-Image (QwenImagePipeline)",
    ):
        assert supported in message


def test_a_family_imgbot_cannot_drive_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxControlPipeline"}))
    with pytest.raises(
        ModelError,
        match="FluxControlPipeline \\(diffusers family 'flux-control'\\): imgbot cannot drive it",
    ):
        inspect_model(tmp_path)


def test_another_autopipeline_family_is_driven_with_its_own_traits(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "SanaPipeline"}))
    family = family_of(tmp_path)
    assert (family.key, family.negative_prompt, family.guidance) == ("sana", True, "guidance_scale")
    assert family.steps == 20 and family.guidance_default == 4.5


def test_make_test_model_rejects_an_unknown_architecture(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        make_test_model(tmp_path / "m", "nope")
    assert not (tmp_path / "m").exists()


# ---- device choice ------------------------------------------------------------------------


def test_auto_picks_the_cpu_in_float32_on_this_machine():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert choose("auto") == Placement("cpu", "float32")
    assert choose("cpu") == Placement("cpu", "float32")
    assert choose("cpu").dtype is torch.float32


@pytest.mark.parametrize("name", ["tpu", "gpu", "CUDA", ""])
def test_unknown_device_is_a_value_error(name):
    with pytest.raises(ValueError, match="choose one of auto, cuda, mps, cpu"):
        choose(name)


def test_cuda_without_a_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        choose("cuda:0")


# ---- PNG with embedded parameters ---------------------------------------------------------

PARAMS = Job(
    prompt="Эйнштейн, 油画 — «portrait»",
    seed=4242,
    steps=6,
    width=96,
    height=64,
    guidance=2.5,
    negative_prompt="размыто, 模糊",
).parameters("tiny-sd")


def test_png_round_trips_the_parameters_with_any_language():
    image = Image.new("RGB", (96, 64), (10, 20, 30))
    data = encode_png(image, PARAMS)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert read_parameters(data) == PARAMS
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.size == (96, 64)
        assert decoded.convert("RGB").getpixel((5, 5)) == (10, 20, 30)


def test_png_has_a_human_readable_parameters_chunk():
    data = encode_png(Image.new("RGB", (8, 8)), PARAMS)
    with Image.open(io.BytesIO(data)) as decoded:
        text = decoded.text["parameters"]
    assert text.splitlines()[0] == "Эйнштейн, 油画 — «portrait»"
    assert "Negative prompt: размыто, 模糊" in text
    assert "Seed: 4242" in text
    assert "Steps: 6" in text
    assert "Size: 96x64" in text
    assert "Model: tiny-sd" in text
    assert text == parameters_text(PARAMS)


def test_parameters_text_leaves_out_an_empty_negative_prompt():
    text = parameters_text({**PARAMS, "negative_prompt": ""})
    assert "Negative prompt" not in text


def test_parameters_text_names_strength_upscale_and_enhance_only_where_they_apply():
    plain = parameters_text(PARAMS)
    for name in ("Denoising strength", "Upscale", "Enhance"):
        assert name not in plain
    varied = Job(
        prompt="p",
        seed=1,
        steps=4,
        width=64,
        height=64,
        kind="img2img",
        strength=0.35,
        enhance=True,
        source="mxc://example.org/a",
    ).parameters("m")
    text = parameters_text(varied)
    assert "Denoising strength: 0.35" in text and "Enhance: on" in text
    assert "Upscale" not in text
    upscaled = Job(
        prompt="p",
        seed=1,
        steps=4,
        width=256,
        height=256,
        kind="upscale",
        factor=4,
        source="mxc://example.org/a",
    ).parameters("m")
    text = parameters_text(upscaled)
    assert "Upscale: 4x" in text
    assert "Denoising strength" not in text and "Enhance" not in text
    data = encode_png(Image.new("RGB", (8, 8)), upscaled)
    assert read_parameters(data) == upscaled


def test_read_parameters_of_a_foreign_png_is_empty():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    assert read_parameters(buffer.getvalue()) == {}


def test_engine_picture_encodes_with_its_job_parameters(engines):
    job = Job(prompt="Эйнштейн", seed=9, steps=2, width=64, height=64)
    image = engines["sd"].generate(job)[0]
    params = read_parameters(encode_png(image, job.parameters(engines["sd"].name)))
    assert params["seed"] == 9 and params["prompt"] == "Эйнштейн"
    assert params["model"] == engines["sd"].name and params["size"] == "64x64"


# ---- the two worlds stay apart ------------------------------------------------------------


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_bot_package_never_imports_torch():
    out = run_python(
        "import sys\n"
        "import bot.chat.bot, bot.app, bot.chat.language.commands, bot.matrix.sync, bot.matrix.messages, "
        "bot.store.usage, bot.config, bot.cli\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "print('bot.chat.bot' in sys.modules, heavy)\n"
    )
    assert out == "True []"


def test_the_generation_package_never_imports_nio():
    out = run_python(
        "import sys\n"
        "import generation.job, generation.scheduling.queue, generation.models.engine, "
        "generation.postprocess.png\n"
        "print('generation.models.engine' in sys.modules, 'nio' in sys.modules)\n"
    )
    assert out == "True False"


def test_importing_generation_switches_the_hub_offline():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
    }
    out = run_python(
        "import os\n"
        "before = os.environ.get('HF_HUB_OFFLINE')\n"
        "import generation\n"
        "print(before, os.environ.get('HF_HUB_OFFLINE'), os.environ.get('TRANSFORMERS_OFFLINE'),"
        " os.environ.get('HF_HUB_DISABLE_TELEMETRY'))\n",
        env=env,
    )
    assert out == "None 1 1 1"
