"""Upscaling (`generation/postprocess/upscale.py`) with the random-weight test ESRGAN
through spandrel, enhancement (`generation/postprocess/enhance.py`) and the queue's runner
around them (`generation/postprocess/finishing_runner.py`), on the CPU."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from bot.cli import main as imgbot
from generation.bench import upscale as upscale_bench
from generation.job import GenerationError, Job
from generation.models.engine import Engine
from generation.models.pool import ModelPool
from generation.postprocess import upscale as upscale_module
from generation.postprocess.enhance import enhance
from generation.postprocess.finishing_runner import FinishingRunner
from generation.postprocess.upscale import Upscaler, UpscalerError, import_spandrel
from generation.scheduling.runner import LocalRunner
from generation.testing.upscaler import make_test_upscaler

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def upscaler_file(tmp_path_factory) -> Path:
    return make_test_upscaler(tmp_path_factory.mktemp("upscalers") / "test-esrgan-x4.safetensors")


@pytest.fixture(scope="module")
def upscaler(upscaler_file) -> Upscaler:
    upscaler = Upscaler(upscaler_file, "cpu")
    upscaler.load()
    return upscaler


def picture(width: int = 64, height: int = 48, seed: int = 1) -> Image.Image:
    """Gradients in red and green, noise in blue: smooth parts and detail."""
    rng = np.random.default_rng(seed)
    data = np.zeros((height, width, 3), np.uint8)
    data[..., 0] = np.linspace(0, 255, width)[None, :]
    data[..., 1] = np.linspace(0, 255, height)[:, None]
    data[..., 2] = rng.integers(0, 256, (height, width))
    return Image.fromarray(data)


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


class Passes:
    """Records the input size of each model pass; `fake` makes a pass a nearest-neighbour
    enlargement instead of running the model (for sizes too slow for the CPU)."""

    def __init__(self, upscaler: Upscaler, monkeypatch, fake: bool = False):
        self.sizes: list[tuple[int, int]] = []
        real = upscaler._run_tiled

        def run(image, *progress):  # which pass of how many, for the progress reports
            self.sizes.append(image.size)
            if fake:
                return image.resize(
                    (image.width * upscaler.scale, image.height * upscaler.scale),
                    Image.Resampling.NEAREST,
                )
            return real(image, *progress)

        monkeypatch.setattr(upscaler, "_run_tiled", run)


# ---- the test upscaler --------------------------------------------------------------------


def test_test_upscaler_is_an_esrgan_4x_that_spandrel_loads(upscaler_file, upscaler):
    spandrel = import_spandrel()
    descriptor = spandrel.ModelLoader().load_from_file(upscaler_file)
    assert descriptor.architecture.id == "ESRGAN"
    assert descriptor.scale == 4
    assert (descriptor.input_channels, descriptor.output_channels) == (3, 3)
    assert upscaler.loaded and upscaler.scale == 4
    assert upscaler.name == "test-esrgan-x4.safetensors"


def test_test_upscaler_is_the_same_file_every_time(upscaler_file, tmp_path):
    again = make_test_upscaler(tmp_path / "again.safetensors")
    assert again.read_bytes() == upscaler_file.read_bytes()


def test_make_test_model_esrgan_writes_the_upscaler(tmp_path, capsys, upscaler_file):
    assert imgbot(["make-test-model", str(tmp_path), "--arch", "esrgan"]) == 0
    written = tmp_path / "test-esrgan-x4.safetensors"
    assert str(written) in capsys.readouterr().out
    assert written.read_bytes() == upscaler_file.read_bytes()


def test_the_test_upscaler_enlarges_the_picture_itself(upscaler):
    """Its output, shrunk back, is the input (in R, G, B order): a real enlargement, with
    a little random texture on top."""
    source = picture()
    big = upscaler.upscale(source, 4)
    back = big.resize(source.size, Image.Resampling.BOX)
    assert np.abs(array(back) - array(source)).mean() < 8
    assert big.tobytes() != source.resize(big.size, Image.Resampling.NEAREST).tobytes()


# ---- upscaling ----------------------------------------------------------------------------


@pytest.mark.parametrize("factor, passes", [(2, 1), (4, 1), (8, 2)])
def test_upscale_gives_exactly_the_factor(upscaler, monkeypatch, factor, passes):
    source = picture(24, 16)
    recorded = Passes(upscaler, monkeypatch)
    result = upscaler.upscale(source, factor)
    assert result.size == (24 * factor, 16 * factor)
    assert result.mode == "RGB"
    assert len(recorded.sizes) == passes


def test_eight_times_of_256_runs_in_two_passes(upscaler, monkeypatch, caplog):
    recorded = Passes(upscaler, monkeypatch, fake=True)
    with caplog.at_level(logging.INFO, logger="generation.postprocess.upscale"):
        result = upscaler.upscale(picture(256, 256), 8)
    assert result.size == (2048, 2048)
    # 256² -> 1024², then 1024² -> 4096² scaled down to 2048² (under OVERSHOOT_PIXELS).
    assert recorded.sizes == [(256, 256), (1024, 1024)]
    assert "upscaled 256x256 by 8 in 2 passes" in caplog.text


def test_a_last_pass_that_would_overshoot_too_far_is_scaled_down_first(upscaler, monkeypatch):
    monkeypatch.setattr(upscale_module, "OVERSHOOT_PIXELS", 1024 * 1024)
    recorded = Passes(upscaler, monkeypatch, fake=True)
    assert upscaler.upscale(picture(256, 256), 8).size == (2048, 2048)
    assert recorded.sizes == [(256, 256), (512, 512)]


def test_tiled_output_equals_one_tile(upscaler_file, monkeypatch):
    source = picture(64, 48)
    whole = Upscaler(upscaler_file, "cpu", tile=512).upscale(source, 4)
    tiled = Upscaler(upscaler_file, "cpu", tile=16)
    calls = []
    real = tiled._tile
    monkeypatch.setattr(tiled, "_tile", lambda *a: calls.append(a[1:3]) or real(*a))
    result = tiled.upscale(source, 4)
    assert len(calls) == 4 * 3  # 64×48 in 16² tiles
    difference = np.abs(array(result) - array(whole))
    # The 16-pixel margin covers nearly all of the model's reach; what is beyond it may
    # move a value by a level or two.
    assert difference.max() <= 2 and difference.mean() < 0.01


def test_a_tile_out_of_gpu_memory_is_freed_then_made_in_halves(upscaler_file, monkeypatch):
    """A tile that does not fit is tried again at half the size, after the memory of the
    failed try is handed back: the cache is emptied once nothing holds the tile's tensors
    any more (inside the `except`, its traceback still would)."""
    import weakref

    import torch

    source = picture(64, 48)
    whole = Upscaler(upscaler_file, "cpu", tile=512).upscale(source, 4)
    tiled = Upscaler(upscaler_file, "cpu", tile=128)
    real, held, alive_when_emptied, sizes = tiled._tile, [], [], []

    def tile(source, x, y, size):
        sizes.append(size)
        if size > 64:
            activations = torch.zeros(3, size * 4, size * 4)  # what the failed try holds
            held.append(weakref.ref(activations))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(source, x, y, size)

    monkeypatch.setattr(tiled, "_tile", tile)
    monkeypatch.setattr(
        torch.cuda,
        "empty_cache",
        lambda: alive_when_emptied.append(sum(r() is not None for r in held)),
    )
    result = tiled.upscale(source, 4)
    assert sizes[0] == 128 and set(sizes[1:]) == {64}
    assert alive_when_emptied == [0]
    assert np.abs(array(result) - array(whole)).max() <= 2


def test_without_a_model_it_is_a_lanczos_resize():
    lanczos = Upscaler(None)
    assert lanczos.name == "Lanczos"
    lanczos.load()
    assert not lanczos.loaded
    source = picture(30, 20)
    result = lanczos.upscale(source, 4)
    assert result.size == (120, 80)
    assert result.tobytes() == source.resize((120, 80), Image.Resampling.LANCZOS).tobytes()


@pytest.mark.parametrize("factor", [1, 3, 16])
def test_other_factors_are_refused(upscaler, factor):
    with pytest.raises(GenerationError, match=f"upscale by 2, 4 or 8, not {factor}"):
        upscaler.upscale(picture(8, 8), factor)


@pytest.mark.parametrize(
    "name, content",
    [
        ("broken.safetensors", b"this is not a model"),
        ("broken.pth", b"PK\x03\x04 nor is this"),
        ("notes.txt", b"an upscaler, honestly"),
    ],
)
def test_a_file_that_is_not_a_model_is_refused(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UpscalerError, match=f"{name} is not a model spandrel can load"):
        Upscaler(path, "cpu").load()


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(UpscalerError, match="nowhere.safetensors is not a model spandrel"):
        Upscaler(tmp_path / "nowhere.safetensors", "cpu").load()


def test_a_model_that_does_not_enlarge_is_refused(tmp_path):
    same_size = make_test_upscaler(tmp_path / "esrgan-x1.safetensors", scale=1)
    with pytest.raises(
        UpscalerError, match="architecture ESRGAN with scale 1: not an RGB upscaler"
    ):
        Upscaler(same_size, "cpu").load()


def test_the_torchvision_stand_in_does_not_leak():
    """spandrel loads without torchvision, and afterwards nothing else sees a torchvision:
    transformers (which asks whether it is installed) still works."""
    code = (
        "import importlib.util, sys\n"
        "before = importlib.util.find_spec('torchvision')\n"
        "from generation.postprocess.upscale import import_spandrel\n"
        "spandrel = import_spandrel()\n"
        "from transformers import CLIPImageProcessor\n"
        "print(before is None, importlib.util.find_spec('torchvision') is None,"
        " 'torchvision' in sys.modules, hasattr(spandrel, 'ModelLoader'),"
        " CLIPImageProcessor.__name__.startswith('CLIPImageProcessor'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    before, *after = done.stdout.split()
    if before != "True":
        pytest.skip("torchvision is installed here: no stand-in is needed")
    assert after == ["True", "False", "True", "True"]


def test_bench_prints_the_time(capsys):
    assert upscale_bench.main(["--bench", "--side", "32", "--factor", "8"]) == 0
    out = capsys.readouterr().out
    assert "32x32 x8 with the test ESRGAN" in out and out.rstrip().endswith(" s")


# ---- enhancement --------------------------------------------------------------------------


def low_contrast() -> Image.Image:
    """A picture whose values all lie between 100 and 150, with some soft detail."""
    return picture(64, 48).point(lambda v: 100 + v * 50 // 255).filter(ImageFilter.GaussianBlur(1))


def test_enhance_widens_the_histogram_of_a_low_contrast_picture():
    source = low_contrast()
    result = enhance(source)
    assert result.size == source.size and result.mode == "RGB"
    before, after = array(source.convert("L")), array(result.convert("L"))
    assert np.percentile(after, 99) - np.percentile(after, 1) > 1.5 * (
        np.percentile(before, 99) - np.percentile(before, 1)
    )


def test_enhance_is_deterministic_and_keeps_rgb():
    source = low_contrast().convert("RGBA")
    first, second = enhance(source), enhance(source)
    assert first.mode == "RGB"
    assert first.tobytes() == second.tobytes()


def test_enhance_keeps_the_colour_balance():
    """All channels stretch alike: a warm picture stays warm."""
    source = Image.new("RGB", (32, 32), (180, 120, 90))
    source.paste((200, 140, 110), (0, 0, 16, 32))
    r, g, b = (array(enhance(source))[..., c].mean() for c in range(3))
    assert r > g > b


# ---- the finishing runner: the queue's runner ------------------------------------------


class DiffusionSpy(LocalRunner):
    """A diffusion runner that counts what it is asked to do."""

    name = "spy-model"
    models = ["spy-model"]

    def __init__(self, colour=(110, 120, 130)):
        self.colour, self.calls = colour, []
        self.placement = "cpu (a test)"

    def native_size(self, name: str = "") -> tuple[int, int]:
        return 64, 64

    def generate(self, job: Job) -> list:
        self.calls.append(job.kind)
        image = low_contrast() if self.colour is None else Image.new("RGB", (64, 48), self.colour)
        return [image] * job.count

    def load(self, *args) -> None:
        self.calls.append(("load", args))

    def warm_up(self, width, height, steps=1) -> float:
        self.calls.append("warm_up")
        return 0.5

    def unload(self) -> None:
        self.calls.append("unload")


def upscale_job(image: Image.Image | None, factor: int = 4, **kw) -> Job:
    width, height = (image.width * factor, image.height * factor) if image else (64, 64)
    return Job(
        prompt="",
        seed=0,
        steps=0,
        width=width,
        height=height,
        kind="upscale",
        factor=factor,
        image=image,
        source="mxc://example.org/abc",
        **kw,
    )


def test_an_upscale_job_goes_to_the_upscaler_only(upscaler):
    spy = DiffusionSpy()
    finishing = FinishingRunner(spy, upscaler)
    source = picture(20, 12)
    images = finishing.generate(upscale_job(source))
    assert spy.calls == []
    assert len(images) == 1 and images[0].size == (80, 48)
    assert images[0].tobytes() == upscaler.upscale(source, 4).tobytes()


def test_an_upscale_job_loads_no_diffusion_model(test_model, upscaler):
    pool = ModelPool({"tiny": test_model}, "tiny", "cpu")
    finishing = FinishingRunner(pool, upscaler)
    assert finishing.generate(upscale_job(picture(8, 8), 2))[0].size == (16, 16)
    assert pool.loaded == []
    engine = Engine(test_model, "cpu")
    assert FinishingRunner(engine).generate(upscale_job(picture(8, 8), 2))[0].size == (16, 16)
    assert engine.pipe is None


def test_an_upscale_job_without_a_picture_or_with_another_size_is_an_error(upscaler):
    finishing = FinishingRunner(DiffusionSpy(), upscaler)
    with pytest.raises(GenerationError, match="needs a source picture"):
        finishing.generate(upscale_job(None))
    wrong = Job(
        prompt="",
        seed=0,
        steps=0,
        width=100,
        height=100,
        kind="upscale",
        factor=4,
        image=picture(20, 12),
    )
    with pytest.raises(GenerationError, match="by 4 of 20x12 is 80x48, not 100x100"):
        finishing.generate(wrong)


def test_a_broken_upscaler_fails_the_job_not_the_worker(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"nope")
    finishing = FinishingRunner(DiffusionSpy(), Upscaler(path, "cpu"))
    with pytest.raises(GenerationError, match="upscaler could not be loaded"):
        finishing.generate(upscale_job(picture(8, 8)))
    with pytest.raises(UpscalerError, match="broken.safetensors"):
        finishing.load()


def test_enhance_is_applied_when_asked_and_is_deterministic(upscaler):
    finishing = FinishingRunner(DiffusionSpy(colour=None), upscaler)
    job = Job(prompt="a lighthouse", seed=1, steps=2, width=64, height=48, count=2)
    plain = finishing.generate(job)
    assert plain[0].tobytes() == low_contrast().tobytes()
    enhanced = finishing.generate(Job(**{**job.__dict__, "enhance": True}))
    again = finishing.generate(Job(**{**job.__dict__, "enhance": True}))
    assert len(enhanced) == 2
    assert enhanced[0].tobytes() == enhance(low_contrast()).tobytes() != plain[0].tobytes()
    assert [i.tobytes() for i in enhanced] == [i.tobytes() for i in again]
    upscaled = finishing.generate(upscale_job(low_contrast(), 2, enhance=True))
    assert upscaled[0].tobytes() == enhance(upscaler.upscale(low_contrast(), 2)).tobytes()


def test_txt2img_and_img2img_pass_through_to_the_engine(engine):
    finishing = FinishingRunner(engine)
    job = Job(prompt="a lighthouse at dawn", seed=12, steps=2, width=64, height=64)
    assert finishing.generate(job)[0].tobytes() == engine.generate(job)[0].tobytes()
    vary = Job(
        prompt="a lighthouse at dawn",
        seed=12,
        steps=2,
        width=64,
        height=64,
        kind="img2img",
        strength=0.5,
        image=picture(64, 64),
    )
    assert finishing.generate(vary)[0].tobytes() == engine.generate(vary)[0].tobytes()


def test_the_studio_is_a_runner_and_forwards_the_rest(upscaler):
    spy = DiffusionSpy()
    finishing = FinishingRunner(spy, upscaler)
    assert (finishing.name, finishing.models, finishing.native_size("")) == (
        "spy-model",
        ["spy-model"],
        (64, 64),
    )
    assert finishing.placement == "cpu (a test)"  # not written out: read from the runner
    with pytest.raises(AttributeError):
        finishing.no_such_thing  # noqa: B018
    finishing.load("spy-model")
    assert finishing.warm_up(64, 64) == 0.5
    finishing.unload()
    assert spy.calls == [("load", ("spy-model",)), "warm_up", "unload"]


def test_captions_name_the_upscaler(upscaler):
    plain = FinishingRunner(DiffusionSpy())
    assert (plain.upscaler_name, plain.ai_upscaler) == ("Lanczos", False)
    finishing = FinishingRunner(DiffusionSpy(), upscaler)
    assert (finishing.upscaler_name, finishing.ai_upscaler) == ("test-esrgan-x4.safetensors", True)
