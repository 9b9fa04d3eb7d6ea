"""The GPU side with real (tiny, random-weight) diffusers models on the CPU.

Covers `generation/engine.py`, `test_model.py`, `png.py`, `device.py`, and the rule that the
two packages stay apart (the chat side never imports torch, the GPU side never imports nio).
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

from generation.device import Placement, choose
from generation.engine import Engine, ModelError, inspect_model
from generation.job import GenerationError, Job
from generation.png import encode_png, parameters_text, read_parameters
from generation.test_model import make_test_model

REPO = Path(__file__).resolve().parent.parent
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


def make(engine: Engine, seed: int = 1, width: int = 64, height: int = 64, count: int = 1,
         **kw) -> list[Image.Image]:
    return engine.generate(Job(prompt="a lighthouse at dawn", seed=seed, steps=2, width=width,
                               height=height, count=count, **kw))


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


def test_unsupported_pipeline_class(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ModelError) as info:
        inspect_model(tmp_path)
    message = str(info.value)
    assert "FluxPipeline" in message
    assert "StableDiffusionPipeline" in message and "StableDiffusionXLPipeline" in message


def test_make_test_model_rejects_an_unknown_architecture(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture 'flux'"):
        make_test_model(tmp_path / "m", "flux")
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

PARAMS = Job(prompt="Эйнштейн, 油画 — «portrait»", seed=4242, steps=6, width=96, height=64,
             guidance=2.5, negative_prompt="размыто, 模糊").parameters("tiny-sd")


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
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_bot_package_never_imports_torch():
    out = run_python(
        "import sys\n"
        "import bot.handler, bot.app, bot.commands, bot.sync, bot.messages, bot.usage, "
        "bot.config, bot.cli\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "print('bot.handler' in sys.modules, heavy)\n")
    assert out == "True []"


def test_the_generation_package_never_imports_nio():
    out = run_python(
        "import sys\n"
        "import generation.job, generation.queue, generation.engine, generation.png\n"
        "print('generation.engine' in sys.modules, 'nio' in sys.modules)\n")
    assert out == "True False"


def test_importing_generation_switches_the_hub_offline():
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")}
    out = run_python(
        "import os\n"
        "before = os.environ.get('HF_HUB_OFFLINE')\n"
        "import generation\n"
        "print(before, os.environ.get('HF_HUB_OFFLINE'), os.environ.get('TRANSFORMERS_OFFLINE'),"
        " os.environ.get('HF_HUB_DISABLE_TELEMETRY'))\n", env=env)
    assert out == "None 1 1 1"
