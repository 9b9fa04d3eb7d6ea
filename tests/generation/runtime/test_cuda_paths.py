"""What the CUDA branches do, on the CPU (issue 30): the library calls a GPU run makes fail
the same way here, and torch.cuda's device and cache calls are recorded by fakes.

The VAE's memory layout (Qwen-Image's 3-D convolutions), the precision of a card without
bf16, the threads' current device, the pool's measure of a model before it unloads
another, torchao's process-wide compiler settings, fused projections under model offload,
and the memory an out-of-memory batch holds when the cache is emptied."""

from __future__ import annotations

import logging
import threading
import weakref
from types import SimpleNamespace

import pytest

from generation.job import GenerationError, Job
from generation.models.engine import Engine
from generation.models.pool import ModelPool
from generation.runtime import quantize_offload, speedups
from generation.runtime.device import Placement, choose, make_current
from generation.scheduling.workers import Worker
from generation.testing.tiny import make_test_model
from tests.generation.runtime.test_speedups import FakeCuda
from tests.helpers.runners import StubRunner

GiB = 2**30


class Stop(Exception):
    """Raised by a fake to end a load where the test has seen what it needs."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda-paths")
    return {arch: make_test_model(root / f"tiny-{arch}", arch) for arch in ("sd", "zimage")}


@pytest.fixture(scope="module")
def sd(folders):
    engine = Engine(folders["sd"], "cpu")
    engine.load()
    return engine


def job(**fields) -> Job:
    return Job(
        **{"prompt": "a lighthouse", "seed": 3, "steps": 1, "width": 64, "height": 64, **fields}
    )


@pytest.fixture
def set_device(monkeypatch):
    """torch.cuda.set_device, recorded: (device, the calling thread)."""
    import torch

    calls = []
    monkeypatch.setattr(
        torch.cuda, "set_device", lambda device: calls.append((str(device), threading.get_ident()))
    )
    return calls


def on_thread(call):
    """Run `call` on a thread of its own, as a worker does; its result and the thread (what
    it raised is raised here)."""
    out = {}

    def run():
        out["ident"] = threading.get_ident()
        try:
            out["result"] = call()
        except Exception as exc:  # handed to the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["result"], out["ident"]


# ---- 1. channels_last and Qwen-Image's VAE ---------------------------------------------------


def test_the_qwen_image_vae_takes_channels_last_where_it_can():
    # Module.to(memory_format=torch.channels_last) raised "required rank 4 tensor" on
    # AutoencoderKLQwenImage's 3-D convolution weights: Qwen-Image could not load on CUDA.
    import torch
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    latents = torch.randn(1, 4, 1, 8, 8)
    with torch.no_grad():
        before = vae.decode(latents).sample
    notes = speedups.optimize(
        SimpleNamespace(vae=vae), Placement("cuda", "bfloat16"), "transformer"
    )
    weights = list(vae.parameters())
    assert "channels_last: on (2-D convolutions; 45 3-D weights kept)" in notes
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights if w.dim() == 4)
    assert any(not w.is_contiguous() for w in weights if w.dim() == 4)  # some did change
    assert all(w.is_contiguous() for w in weights if w.dim() == 5)
    with torch.no_grad():
        assert torch.allclose(vae.decode(latents).sample, before, atol=1e-5)


# ---- 6. each thread's current CUDA device ------------------------------------------------------


@pytest.mark.parametrize(
    "device, current", [("cuda:1", ["cuda:1"]), ("cuda", []), ("cpu", []), ("mps", [])]
)
def test_only_a_numbered_cuda_device_is_made_current(set_device, device, current):
    make_current(device)
    assert [d for d, _thread in set_device] == current


def test_a_worker_makes_its_device_current_on_its_own_thread(set_device):
    taken = []
    source = SimpleNamespace(
        take=lambda worker: taken.append(threading.get_ident()),
        died=lambda worker, exc: taken.append(exc),
        closing=lambda: False,
    )
    runner = StubRunner(placement=Placement("cuda:1", "bfloat16"))
    worker = Worker(0, runner, source)
    worker.start("cuda:1 worker")
    worker.thread.join(5)
    # Set on the worker's thread, before it took its first batch.
    assert set_device == [("cuda:1", worker.thread.ident)] and taken == [worker.thread.ident]


def test_the_engine_makes_its_device_current_where_it_generates(sd, set_device, monkeypatch):
    import torch

    monkeypatch.setattr(sd, "placement", Placement("cuda:1", "float32"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    images, thread = on_thread(lambda: sd.generate(job()))
    assert len(images) == 1 and set_device and set(set_device) == {("cuda:1", thread)}


def test_the_engine_makes_its_device_current_before_it_loads(folders, set_device, monkeypatch):
    import diffusers

    loaded = []
    monkeypatch.setattr(
        "generation.models.engine.choose", lambda *args, **kw: Placement("cuda:2", "bfloat16")
    )
    monkeypatch.setattr(quantize_offload, "check", lambda *args: (_ for _ in ()).throw(Stop()))
    monkeypatch.setattr(
        diffusers.AutoPipelineForText2Image,
        "from_pretrained",
        lambda *args, **kw: loaded.append(args),
    )
    engine = Engine(folders["sd"], "cuda:2")
    with pytest.raises(Stop):
        on_thread(engine.load)
    assert [d for d, _thread in set_device] == ["cuda:2"] and loaded == []


# ---- 7. the precision of a card without bf16 -------------------------------------------------


def test_a_card_without_bf16_runs_transformers_in_fp32(monkeypatch):
    FakeCuda(monkeypatch, native_bf16=False)
    assert choose("cuda:1", fp16_safe=False) == Placement("cuda:1", "float32")
    assert choose("cuda:1", fp16_safe=True) == Placement("cuda:1", "float16")
    FakeCuda(monkeypatch, native_bf16=True)
    assert choose("cuda:1", fp16_safe=False) == Placement("cuda:1", "bfloat16")


@pytest.mark.parametrize("arch, dtype", [("sd", "float16"), ("zimage", "float32")])
def test_the_engine_asks_for_fp16_only_for_unet_families(folders, monkeypatch, arch, dtype):
    # FLUX, Z-Image and Qwen-Image overflow float16 (NaN pictures); SD and SDXL do not.
    FakeCuda(monkeypatch, native_bf16=False)
    monkeypatch.setattr(quantize_offload, "check", lambda *args: (_ for _ in ()).throw(Stop()))
    engine = Engine(folders[arch], "cuda")
    with pytest.raises(Stop):
        engine.load()
    assert engine.placement == Placement("cuda", dtype)


# ---- 8. what the pool measures before it unloads --------------------------------------------


def test_the_pool_unloads_until_the_weights_and_working_room_are_free(folders, monkeypatch, caplog):
    # The folders hold 0.2 MB each: 64 MiB free passed the old measure (the folder's size),
    # and the next model then loaded offloaded, or ran out of memory, beside the other.
    free = {"bytes": 64 * 2**20}
    folders2 = {"alpha": folders["sd"], "beta": folders["sd"]}
    pool = ModelPool(folders2, "alpha", "cpu", free_memory=lambda: free["bytes"])
    pool.load()
    with caplog.at_level(logging.INFO, logger="generation.models.pool"):
        pool.load("beta")
    assert pool.loaded == ["beta"]
    sizes = quantize_offload.on_card(folders["sd"], 4)  # float32 on the CPU
    need = sum(sizes.values()) + quantize_offload.working_room(sum(sizes.values()))
    assert f"beta needs about {need / GiB:.1f} GiB, 0.1 GiB is free" in caplog.text
    free["bytes"] = need  # enough for both
    pool.load("alpha")
    assert pool.loaded == ["beta", "alpha"]


@pytest.mark.parametrize(
    "offload, need",
    [
        ("auto", 30 * GiB + quantize_offload.working_room(30 * GiB)),
        ("none", 30 * GiB + quantize_offload.working_room(30 * GiB)),
        ("model", 20 * GiB + quantize_offload.working_room(20 * GiB)),
        ("group", quantize_offload.working_room(0)),
    ],
)
def test_the_need_is_what_choose_offload_compares_with(offload, need):
    sizes = {"transformer": 20 * GiB, "text_encoder": 9 * GiB, "vae": GiB}
    assert quantize_offload.need(sizes, offload) == need
    if offload in ("auto", "model"):  # exactly that much free: it loads so
        assert (
            quantize_offload.choose_offload("auto", "cuda", sizes, need)[0]
            == {"auto": "none", "model": "model"}[offload]
        )
        assert (
            quantize_offload.choose_offload("auto", "cuda", sizes, need - 1)[0]
            != {"auto": "none", "model": "model"}[offload]
        )


# ---- 9. torchao and the process's compiler settings ---------------------------------------


@pytest.fixture
def inductor_config():
    """torch._inductor.config (and dynamo's recompile limit, which compiling raises) as it
    was before the test, and back afterwards."""
    import torch._dynamo
    import torch._inductor.config

    saved, limit = torch._inductor.config.save_config(), torch._dynamo.config.recompile_limit
    yield torch._inductor.config
    torch._inductor.config.load_config(saved)
    torch._dynamo.config.recompile_limit = limit


@pytest.mark.parametrize("compiled", [False, True])
def test_torchao_changes_compiler_settings_only_for_a_compiled_model(
    folders, inductor_config, compiled
):
    # torchao's configs set coordinate descent tuning and friends for the whole process,
    # for every model compiled in it, unless told not to.
    inductor_config.coordinate_descent_tuning = False
    inductor_config.force_fuse_int_mm_with_mul = False
    engine = Engine(folders["sd"], "cpu", quantize="int8", compile=compiled)
    engine.load()
    assert engine.fit.quantize == "int8"
    assert inductor_config.coordinate_descent_tuning is compiled
    assert inductor_config.force_fuse_int_mm_with_mul is compiled
    engine.unload()


# ---- 10. fused projections under model offload; an out-of-memory batch ---------------------


def test_model_offload_keeps_the_projections_apart(folders, monkeypatch, caplog):
    # Offloading moves each weight on its own: the q, k, v views into the fused weight
    # would each become a copy of their own on the card, beside the fused one.
    monkeypatch.setattr(
        quantize_offload, "choose_offload", lambda *args: ("model", "offload: model (test)")
    )
    caplog.set_level(logging.INFO, logger="generation.models.engine")
    engine = Engine(folders["sd"], "cpu")
    engine.load()
    assert "fused QKV: off (model offload)" in caplog.text
    assert not any(getattr(m, "fused_projections", False) for m in engine.pipe.unet.modules())
    assert [p.size for p in engine.generate(job())] == [(64, 64)]


@pytest.mark.parametrize("count", [1, 2])
def test_the_batch_is_freed_before_the_cache_is_emptied(sd, set_device, monkeypatch, count):
    import torch

    held, alive_when_emptied = [], []

    def out_of_memory(pictures):
        latents = torch.zeros(len(pictures), 4, 8, 8)  # what a batch holds when it fails
        held.append(weakref.ref(latents))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(sd, "placement", Placement("cuda:0", "float32"))
    monkeypatch.setattr(sd, "_run", out_of_memory)
    monkeypatch.setattr(
        torch.cuda,
        "empty_cache",
        lambda: alive_when_emptied.append(sum(r() is not None for r in held)),
    )
    with pytest.raises(GenerationError, match="ran out of memory"):
        sd.generate(job(count=count))
    # The whole batch, then (for a batch) its first picture alone.
    assert len(held) == len(alive_when_emptied) == (1 if count == 1 else 2)
    assert alive_when_emptied == [0] * len(held)
