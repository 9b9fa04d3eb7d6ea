"""The engine's speed-ups with real (tiny, random-weight) diffusers models on the CPU.

Covers `generation/runtime/speedups.py` and the fast parts of `generation/models/engine.py`:
the precision a card gets (with a fake CUDA), SDPA and fused QKV projections, the VAE folder and its
precision warning, the tiny decoder (`Job.fast`), torch.compile with its cache and
warm-up, and batching several jobs into one pipeline call (`generate_batch`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from types import SimpleNamespace

import pytest
from PIL import Image

from generation.families.model_folder import ModelError
from generation.job import GenerationError, Job
from generation.models.engine import Engine
from generation.models.pipeline_call import batch_key
from generation.models.pool import ModelPool
from generation.runtime import speedups
from generation.runtime.device import Placement, choose
from generation.testing.tiny import BUILDERS, make_test_model, make_test_tiny_decoder
from tests.generation.models.test_engine import OutOfMemoryAbove

ARCHS = ("sd", "sdxl")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed-models")
    return {arch: make_test_model(root / f"tiny-{arch}", arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    return make_test_tiny_decoder(tmp_path_factory.mktemp("taesd") / "tiny-taesd")


@pytest.fixture(scope="module")
def engines(models, tiny_decoder):
    """Both architectures; each has the tiny decoder, which only fast jobs use."""
    loaded = {}
    for arch, folder in models.items():
        loaded[arch] = Engine(folder, "cpu", fast_decoder=tiny_decoder)
        loaded[arch].load()
    return loaded


def pixels(image: Image.Image) -> bytes:
    return image.convert("RGB").tobytes()


def nearly_same(a: Image.Image, b: Image.Image) -> bool:
    """Equal up to float rounding: batched and single runs take different CPU kernels, which
    may move a handful of 8-bit values by a level or two."""
    pa, pb = pixels(a), pixels(b)
    diffs = [abs(x - y) for x, y in zip(pa, pb) if x != y]
    return len(pa) == len(pb) and max(diffs, default=0) <= 2 and len(diffs) <= len(pa) // 1000


def job(prompt: str = "a lighthouse at dawn", seed: int = 1, **kw) -> Job:
    return Job(**{"prompt": prompt, "seed": seed, "steps": 2, "width": 64, "height": 64, **kw})


def alone(engine: Engine, one: Job) -> list[Image.Image]:
    return engine.generate(one)


def same_pictures(made: list[Image.Image], expected: list[Image.Image]) -> bool:
    return len(made) == len(expected) and all(map(nearly_same, made, expected))


# ---- precision ----------------------------------------------------------------------------


class FakeCuda:
    """torch.cuda on a machine with a card of the given kind; records what was asked."""

    def __init__(self, monkeypatch, native_bf16: bool, emulated_bf16: bool = True):
        import torch

        self.asked = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device", self.device)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", self.is_bf16_supported)
        self.native, self.emulated, self.current = native_bf16, emulated_bf16, None

    @contextlib.contextmanager
    def device(self, device):
        self.current = str(device)
        yield

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        self.asked.append((self.current, including_emulation))
        return self.native or (including_emulation and self.emulated)


def test_a_card_with_native_bf16_gets_bf16(monkeypatch):
    cuda = FakeCuda(monkeypatch, native_bf16=True)
    assert choose("auto") == Placement("cuda", "bfloat16")
    assert choose("cuda:1") == Placement("cuda:1", "bfloat16")
    assert cuda.asked == [("cuda", False), ("cuda:1", False)]  # the asked card


def test_a_card_that_only_emulates_bf16_gets_fp16(monkeypatch):
    # A T4 or V100: torch's plain is_bf16_supported() says yes, but runs bf16 slowly.
    FakeCuda(monkeypatch, native_bf16=False, emulated_bf16=True)
    assert choose("cuda") == Placement("cuda", "float16")


# ---- SDPA, fused projections, the one log line --------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_is_sdpa_with_fused_projections(engines, arch):
    pipe = engines[arch].pipe
    for part in (pipe.unet, pipe.vae):
        assert {type(p).__name__ for p in part.attn_processors.values()} == {
            "FusedAttnProcessor2_0"
        }
    # img2img shares the modules, so their fused projections too.
    i2i = engines[arch].image_to_image
    assert {type(p).__name__ for p in i2i.unet.attn_processors.values()} == {
        "FusedAttnProcessor2_0"
    }


def test_fused_projections_are_not_held_twice(engines):
    from diffusers.models.attention_processor import Attention

    layers = [m for m in engines["sdxl"].pipe.unet.modules() if isinstance(m, Attention)]
    assert layers and all(m.fused_projections for m in layers)
    for layer in layers:
        fused = layer.to_qkv if hasattr(layer, "to_qkv") else layer.to_kv
        storage = fused.weight.untyped_storage().data_ptr()
        for name in ("to_q", "to_k", "to_v") if hasattr(layer, "to_qkv") else ("to_k", "to_v"):
            assert getattr(layer, name).weight.untyped_storage().data_ptr() == storage, name


def test_unfusing_gives_the_same_pictures(models):
    engine = Engine(models["sd"], "cpu")
    engine.load()
    fused = engine.generate(job(seed=4, guidance=3.0))[0]
    engine.pipe.unfuse_qkv_projections()
    assert {type(p).__name__ for p in engine.pipe.unet.attn_processors.values()} == {
        "AttnProcessor2_0"
    }
    assert nearly_same(engine.generate(job(seed=4, guidance=3.0))[0], fused)


def test_what_is_on_and_off_is_logged_in_one_line(models, caplog):
    caplog.set_level(logging.INFO, logger="generation.models.engine")
    engine = Engine(models["sd"], "cpu")
    engine.load()
    lines = [r.getMessage() for r in caplog.records if "speed-ups" in r.getMessage()]
    assert lines == [
        f"speed-ups for {engine.name}: quantize: none; offload: off (for CUDA; "
        "this is cpu); attention: SDPA; channels_last: off (for CUDA; this is "
        "cpu); fused QKV: on (10 attention layers); VAE: float32; compile: off; "
        "fast decoder: none"
    ]


# ---- the VAE --------------------------------------------------------------------------------


def vae_folder(path, seed: int, scaling_factor: float = 0.18215, force_upcast: bool = False):
    """A random AutoencoderKL like the tiny models', saved as a VAE folder."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[8, 8, 8, 8],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=scaling_factor,
        force_upcast=force_upcast,
    )
    vae.save_pretrained(path)
    return path


def test_a_configured_vae_replaces_the_models_own(models, engines, tmp_path):
    import torch
    from diffusers import AutoencoderKL

    folder = vae_folder(tmp_path / "vae-fix", seed=11)
    engine = Engine(models["sdxl"], "cpu", vae=folder)
    engine.load()
    assert engine.pipe.vae.config.force_upcast is False
    expected = AutoencoderKL.from_pretrained(folder).decoder.conv_out.weight
    assert torch.equal(engine.pipe.vae.decoder.conv_out.weight, expected)
    picture = engine.generate(job(seed=3))[0]
    assert not nearly_same(picture, engines["sdxl"].generate(job(seed=3))[0])


def test_a_vae_of_another_family_is_left_out_with_a_warning(models, tmp_path, caplog):
    folder = vae_folder(tmp_path / "sdxl-vae", seed=1, scaling_factor=0.13025)
    engine = Engine(models["sd"], "cpu", vae=folder)
    engine.load()
    assert engine.pipe.vae.config.scaling_factor == 0.18215
    assert any(
        r.levelno == logging.WARNING
        and "generation.vae" in r.getMessage()
        and "keeps its own VAE" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    "vae, fast, message",
    [
        ("tiny", None, "holds AutoencoderTiny weights, not AutoencoderKL"),
        (None, "nowhere", "fast decoder folder .* has no config.json"),
    ],
)
def test_a_wrong_vae_or_decoder_folder_stops_the_start(
    models, tiny_decoder, tmp_path, vae, fast, message
):
    folders = {"tiny": tiny_decoder, "nowhere": tmp_path / "nowhere", None: None}
    with pytest.raises(ModelError, match=message):
        Engine(models["sd"], "cpu", vae=folders[vae], fast_decoder=folders[fast])


class FakeVae:
    def __init__(self, force_upcast: bool):
        self.config = SimpleNamespace(force_upcast=force_upcast)

    def register_to_config(self, **changes):
        self.config = SimpleNamespace(**{**vars(self.config), **changes})


@pytest.mark.parametrize(
    "family, dtype, force_upcast, note, warns",
    [
        ("sdxl", "float16", True, "VAE: float32 (force_upcast)", True),
        ("sdxl", "float16", False, "VAE: float16", False),  # an fp16-safe VAE
        ("sdxl", "bfloat16", True, "VAE: bfloat16 (its float16 upcast is not needed", False),
        ("sd", "float16", True, "VAE: float16", False),  # SD 1.x pipelines never upcast
        ("sdxl", "float32", True, "VAE: float32", False),  # the CPU: nothing falls back
    ],
)
def test_the_vae_never_falls_back_to_fp32_silently(
    caplog, family, dtype, force_upcast, note, warns
):
    pipe = SimpleNamespace(vae=FakeVae(force_upcast))
    made = speedups.vae_precision(pipe, "xl", family, Placement("cuda", dtype), False)
    assert made.startswith(note)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warns
    if warns:
        assert "decodes in float32" in warnings[0] and "set generation.vae" in warnings[0]
    if dtype == "bfloat16":
        assert pipe.vae.config.force_upcast is False  # img2img's encode stays in bf16 too


# ---- the tiny decoder -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["txt2img", "img2img"])
def test_a_fast_job_is_decoded_by_the_tiny_decoder(engines, arch, kind):
    engine = engines[arch]
    extra = dict(kind="img2img", strength=0.5, image=Image.new("RGB", (40, 40), "red"))
    one = job(seed=6, width=96, height=64, **(extra if kind == "img2img" else {}))
    fast = engine.generate(Job(**{**one.__dict__, "fast": True}))
    full = engine.generate(one)
    assert [(i.size, i.mode) for i in fast] == [((96, 64), "RGB")]
    assert pixels(fast[0]) != pixels(full[0])
    assert type(engine.pipe.vae).__name__ == "AutoencoderKL"  # back in its seat
    assert type(engine.image_to_image.vae).__name__ == "AutoencoderKL"


def test_a_fast_job_without_a_tiny_decoder_is_refused(models):
    engine = Engine(models["sd"], "cpu")
    engine.load()
    with pytest.raises(GenerationError, match="no fast decoder; ask without --fast"):
        engine.generate(job(fast=True))


def test_a_fast_job_says_so_in_its_parameters():
    assert job(fast=True).parameters("m")["decoder"] == "tiny"
    assert "decoder" not in job().parameters("m")
    assert job(fast=True).record()["fast"] is True


# ---- batching --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_a_batch_gives_each_job_the_pictures_it_gets_alone(engines, arch):
    engine = engines[arch]
    jobs = [
        job("a lighthouse at dawn", seed=10),
        job("a red fox", seed=20, count=2),
        job("an orchard in fog", seed=30),
    ]
    made = engine.generate_batch(jobs)
    assert [len(images) for images in made] == [1, 2, 1]
    for one, images in zip(jobs, made):
        assert same_pictures(images, alone(engine, one)), one.prompt
    assert not nearly_same(made[0][0], made[2][0])


def test_a_batch_is_one_pipeline_call(engines, monkeypatch):
    engine = engines["sd"]
    calls = []
    real = engine.pipe

    def spy(**kw):
        calls.append(len(kw["prompt"]))
        return real(**kw)

    monkeypatch.setattr(engine, "pipe", spy)
    engine.generate_batch([job(seed=1), job(seed=2, count=2), job(seed=9)])
    assert calls == [4]


def test_negative_prompts_may_differ_within_a_batch(engines):
    engine = engines["sd"]  # SD 1.x: no negative prompt is the same as ""
    jobs = [
        job(seed=5, guidance=4.0, negative_prompt="fog"),
        job(seed=5, guidance=4.0),
        job(seed=5, guidance=4.0, negative_prompt="rain, people"),
    ]
    assert len({engine.batch_key(one) for one in jobs}) == 1
    made = engine.generate_batch(jobs)
    for one, images in zip(jobs, made):
        assert same_pictures(images, alone(engine, one)), one.negative_prompt
    assert not nearly_same(made[0][0], made[1][0])


def test_sdxl_keeps_jobs_without_a_negative_prompt_apart_under_guidance(engines):
    engine = engines["sdxl"]  # no negative prompt: zeros, not the encoding of ""
    with_one, without = job(guidance=4.0, negative_prompt="fog"), job(guidance=4.0, seed=2)
    assert engine.batch_key(with_one) != engine.batch_key(without)
    assert engine.batch_key(with_one) == engine.batch_key(job(guidance=4.0, negative_prompt="x"))
    # Without guidance negative prompts are not used at all: they may share.
    assert engine.batch_key(job(negative_prompt="fog")) == engine.batch_key(job(seed=2))
    made = engine.generate_batch([with_one, job(guidance=4.0, seed=3, negative_prompt="rain")])
    assert same_pictures(made[0], alone(engine, with_one))


@pytest.mark.parametrize(
    "other",
    [
        dict(width=96),
        dict(height=96),
        dict(steps=3),
        dict(guidance=2.0),
        dict(fast=True),
        dict(model="elsewhere"),
        dict(kind="img2img", strength=0.5, image=Image.new("RGB", (64, 64))),
    ],
)
def test_jobs_of_another_shape_are_refused(engines, other):
    engine = engines["sd"]
    odd = job(seed=2, **other)
    assert engine.batch_key(odd) != engine.batch_key(job())
    with pytest.raises(ValueError, match="share a batch"):
        engine.generate_batch([job(), odd])


def test_batch_keys():
    assert batch_key(job(kind="img2img", strength=0.5)) is None
    assert batch_key(job(kind="upscale", factor=2)) is None
    # Prompts, seeds, counts and (for SD 1.x) negative prompts may differ.
    assert batch_key(job("a", seed=1), "m", False) == batch_key(
        job("b", seed=7, count=3, negative_prompt="n", guidance=0.0), "m", False
    )
    assert batch_key(job(), "m") != batch_key(job(), "other")


def test_the_model_name_and_blank_are_one_model(engines):
    engine = engines["sd"]
    assert engine.batch_key(job(model=engine.name)) == engine.batch_key(job())
    made = engine.generate_batch([job(model=engine.name, seed=1), job(seed=2)])
    assert [len(images) for images in made] == [1, 1]
    assert engine.generate_batch([]) == []


def test_a_batch_of_one_is_a_plain_generate(engines):
    engine = engines["sd"]
    assert same_pictures(
        engine.generate_batch([job(seed=8, count=2)])[0], engine.generate(job(seed=8, count=2))
    )


def test_a_batch_too_big_for_memory_is_made_one_job_at_a_time(engines, monkeypatch, caplog):
    engine = engines["sd"]
    jobs = [job(seed=60, count=2), job(seed=70)]
    tight = OutOfMemoryAbove(engine.pipe, limit=1)
    monkeypatch.setattr(engine, "pipe", tight)
    made = engine.generate_batch(jobs)
    # The batch; the first job (2 pictures), then its pictures one by one; the second job.
    assert tight.batches == [3, 2, 1, 1, 1]
    assert "making them one job at a time" in caplog.text
    monkeypatch.undo()
    for one, images in zip(jobs, made):
        assert same_pictures(images, alone(engine, one))


def test_the_pool_batches_on_the_named_model(models, engines):
    pool = ModelPool({"alpha": models["sd"], "xl": models["sdxl"]}, "alpha", "cpu")
    assert pool.batch_key(job()) == pool.batch_key(job(model="alpha"))
    assert pool.batch_key(job(model="xl")) != pool.batch_key(job())
    assert pool.batch_key(job(model="nowhere")) is None
    jobs = [job(model="xl", seed=1), job(model="xl", seed=2, count=2)]
    made = pool.generate_batch(jobs)
    assert pool.loaded == ["xl"]
    for one, images in zip(jobs, made):
        assert same_pictures(images, alone(engines["sdxl"], Job(**{**one.__dict__, "model": ""})))
    with pytest.raises(ValueError, match="share a batch"):
        pool.generate_batch([job(model="xl"), job(model="alpha")])
    assert pool.generate_batch([]) == []


def test_the_pool_hands_the_options_to_every_model(models, tiny_decoder, tmp_path):
    pool = ModelPool(
        {"alpha": models["sd"], "xl": models["sdxl"]},
        "alpha",
        "cpu",
        fast_decoder=tiny_decoder,
        compile=True,
        cache_dir=tmp_path,
    )
    for name in pool.models:
        engine = pool._engine(name)
        assert (engine.fast_decoder_path, engine.compile, engine.cache_dir) == (
            tiny_decoder.resolve(),
            True,
            tmp_path,
        )


def test_an_engine_built_in_memory_batches_too(tmp_path):
    engine = Engine.from_pipeline(BUILDERS["sd"](tmp_path), "in-memory", "cpu")
    made = engine.generate_batch([job(seed=1), job(seed=2)])
    assert [len(images) for images in made] == [1, 1]
    with pytest.raises(GenerationError, match="no fast decoder"):
        engine.generate(job(fast=True))


# ---- warm-up and torch.compile -----------------------------------------------------------------


def test_warm_up_runs_each_size_and_a_batch(engines, monkeypatch):
    engine = engines["sd"]
    seen = []
    monkeypatch.setattr(engine, "generate", lambda one: seen.append(one) or [])
    assert engine.warm_up(64, 64, 2, sizes=[(96, 64), (64, 64)], guidance=3.0, batch=4) >= 0
    assert [(j.width, j.height, j.count, j.steps, j.guidance) for j in seen] == [
        (64, 64, 1, 2, 3.0),
        (96, 64, 1, 2, 3.0),
        (64, 64, 2, 2, 3.0),
    ]


@pytest.fixture
def compile_cache(tmp_path, monkeypatch):
    """A cache folder, and the process's compile settings back as they were afterwards."""
    import torch._inductor.config

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.setattr(
        torch._inductor.config, "fx_graph_cache", torch._inductor.config.fx_graph_cache
    )
    return tmp_path / "compile-cache"


def test_compile_traces_unet_and_decoder_and_warms_up(
    models, engines, compile_cache, monkeypatch, caplog
):
    import torch._dynamo
    from torch._dynamo.utils import counters

    caplog.set_level(logging.INFO, logger="generation.models.engine")
    # Tracing only: inductor's C++ build is the slow test below.
    monkeypatch.setattr(speedups, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    engine = Engine(models["sd"], "cpu", compile=True, cache_dir=compile_cache)
    engine.load()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(compile_cache.resolve())
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    # The UNet's repeated blocks (regional compile), not the whole UNet.
    blocks = [m for m in engine.pipe.unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks)
    assert engine.pipe.vae.decoder._compiled_call_impl is not None
    assert (
        "compile: on (default, UNet blocks (BasicTransformerBlock) and VAE decoder)" in caplog.text
    )
    assert engine.warm_up(64, 64, sizes=[(96, 64)], batch=2) > 0
    graphs = counters["stats"]["unique_graphs"]
    # The sizes warmed up, in batches of any size: nothing compiles any more.
    for one in (job(seed=12), job(seed=13, width=96, count=3), job(seed=14, count=4)):
        assert same_pictures(engine.generate(one), engines["sd"].generate(one))
    assert counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()


@pytest.mark.skipif(
    not os.environ.get("IMGBOT_SLOW_TESTS"),
    reason="inductor builds C++ kernels with gcc: about 90 s on 2 cores; set IMGBOT_SLOW_TESTS=1",
)
def test_compile_with_inductor_makes_the_same_pictures_and_a_restart_reuses_them(
    models, engines, compile_cache
):
    import torch._dynamo
    from torch._dynamo.utils import counters

    seconds = []
    for _start in range(2):  # a start, and a restart with the same cache folder
        torch._dynamo.reset()  # what a new process has: no compiled code in memory
        counters.clear()
        engine = Engine(models["sd"], "cpu", compile=True, cache_dir=compile_cache)
        engine.load()
        seconds.append(engine.warm_up(64, 64))
        assert same_pictures(engine.generate(job(seed=14)), engines["sd"].generate(job(seed=14)))
    assert counters["inductor"]["fxgraph_cache_hit"] >= 2  # the UNet and the decoder
    assert counters["inductor"]["fxgraph_cache_miss"] == 0
    assert seconds[1] < seconds[0] / 2, seconds
    torch._dynamo.reset()
