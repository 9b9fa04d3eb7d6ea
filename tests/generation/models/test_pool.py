"""Several named models (`generation/models/pool.py`) and the single Engine as a runner of its
own, with real tiny random-weight models on the CPU; memory shortage is simulated through the
pool's injectable free-memory probe, and a GPU's out-of-memory error by a patched load."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import weakref
from pathlib import Path

import pytest
import torch
from PIL import Image

from bot.app import load_engine
from bot.config import Settings
from generation.families.model_folder import native_size, weights_bytes
from generation.job import GenerationError, Job
from generation.models.engine import Engine
from generation.models.pool import ModelPool, free_bytes
from generation.scheduling.queue import GenerationQueue
from generation.testing.tiny import make_test_model

PLENTY = 1 << 50  # bytes of free memory that no model needs


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Three tiny SD models with different random weights, so pictures tell them apart."""
    root = tmp_path_factory.mktemp("pool-models")
    return {
        name: make_test_model(root / name, "sd", seed=seed)
        for seed, name in enumerate(("alpha", "beta", "gamma"))
    }


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("pool-sdxl") / "tiny-sdxl", "sdxl")


def pool_of(folders: dict[str, Path], *names: str, **kw) -> ModelPool:
    return ModelPool({n: folders[n] for n in names}, names[0], "cpu", **kw)


def job(model: str = "", seed: int = 1) -> Job:
    return Job(prompt="a lighthouse at dawn", seed=seed, steps=1, width=64, height=64, model=model)


def pixels(images: list[Image.Image]) -> bytes:
    assert len(images) == 1
    return images[0].convert("RGB").tobytes()


def unloads(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "generation.models.pool" and r.getMessage().startswith("unloaded")
    ]


# ---- lazy loading -------------------------------------------------------------------------


def test_only_the_default_loads_at_start_and_another_on_its_first_job(folders, caplog):
    pool = pool_of(folders, "alpha", "beta")
    assert pool.loaded == []
    pool.load()
    assert pool.loaded == ["alpha"]
    with caplog.at_level(logging.INFO, logger="generation.models.engine"):
        beta = pixels(pool.generate(job("beta")))
    assert pool.loaded == ["alpha", "beta"]
    assert any(r.getMessage().startswith("loaded beta ") for r in caplog.records)
    # Each job ran on the model it named: the pictures are those of that model alone.
    alone = Engine(folders["beta"], "cpu")
    alone.load()
    assert beta == pixels(alone.generate(job()))
    assert pixels(pool.generate(job(""))) == pixels(pool.generate(job("alpha"))) != beta


def test_the_default_comes_first_and_names_the_pool(folders):
    pool = ModelPool({"beta": folders["beta"], "alpha": folders["alpha"]}, "alpha", "cpu")
    assert pool.name == "alpha"
    assert pool.models == ["alpha", "beta"]
    with pytest.raises(ValueError, match="default model 'gamma'"):
        ModelPool({"alpha": folders["alpha"]}, "gamma", "cpu")


def test_warm_up_loads_the_default_only(folders):
    pool = pool_of(folders, "alpha", "beta")
    assert pool.warm_up(64, 64) > 0
    assert pool.loaded == ["alpha"]


# ---- least recently used ------------------------------------------------------------------


def test_one_at_a_time_swaps_models(folders, caplog):
    pool = pool_of(folders, "alpha", "beta", max_loaded=1)
    pool.load()
    with caplog.at_level(logging.INFO, logger="generation.models.pool"):
        pool.generate(job("beta"))
        assert pool.loaded == ["beta"]
        pool.generate(job())
        assert pool.loaded == ["alpha"]
        pool.generate(job("alpha"))  # already loaded: nothing is unloaded
    assert unloads(caplog) == [
        "unloaded model alpha: at most 1 may be loaded, and beta is next",
        "unloaded model beta: at most 1 may be loaded, and alpha is next",
    ]


def test_two_at_a_time_unload_the_least_recently_used(folders, caplog):
    pool = pool_of(folders, "alpha", "beta", "gamma", max_loaded=2)
    pool.load()
    pool.generate(job("beta"))
    pool.generate(job("alpha"))  # alpha is now more recent than beta
    assert pool.loaded == ["beta", "alpha"]
    with caplog.at_level(logging.INFO, logger="generation.models.pool"):
        pool.generate(job("gamma"))
    assert pool.loaded == ["alpha", "gamma"]
    assert unloads(caplog) == ["unloaded model beta: at most 2 may be loaded, and gamma is next"]


def test_short_memory_unloads_only_as_many_as_needed(folders, caplog):
    # Room for two models: the third one finds too little free memory until one is gone.
    pool = pool_of(
        folders,
        "alpha",
        "beta",
        "gamma",
        free_memory=lambda: PLENTY if len(pool.loaded) < 2 else 1000,
    )
    pool.load()
    pool.generate(job("beta"))
    assert pool.loaded == ["alpha", "beta"]
    with caplog.at_level(logging.INFO, logger="generation.models.pool"):
        pool.generate(job("gamma"))
    assert pool.loaded == ["beta", "gamma"]
    [message] = unloads(caplog)
    assert message.startswith("unloaded model alpha: gamma needs about ")
    assert message.endswith(" GiB, 0.0 GiB is free")


def test_a_model_that_never_fits_still_gets_its_try_alone(folders):
    pool = pool_of(folders, "alpha", "beta", free_memory=lambda: 0)
    pool.load()
    pool.generate(job("beta"))
    assert pool.loaded == ["beta"]


def test_memory_that_cannot_be_known_unloads_nothing(folders):
    pool = pool_of(folders, "alpha", "beta", "gamma", free_memory=lambda: None)
    for name in ("alpha", "beta", "gamma"):
        pool.generate(job(name))
    assert pool.loaded == ["alpha", "beta", "gamma"]


def test_free_memory_probe_of_this_machine():
    assert free_bytes("cpu") > 0  # MemAvailable of /proc/meminfo
    assert free_bytes("mps") is None


# ---- out of GPU memory while loading ------------------------------------------------------


class OutOfMemoryLoads:
    """`failures["beta"] = n`: the next n loads of beta run out of GPU memory."""

    def __init__(self):
        self.failures: dict[str, int] = {}
        self.attempts: list[str] = []


@pytest.fixture
def oom_loading(monkeypatch) -> OutOfMemoryLoads:
    oom = OutOfMemoryLoads()
    real_load = Engine.load

    def load(engine: Engine) -> None:
        oom.attempts.append(engine.name)
        if oom.failures.get(engine.name):
            oom.failures[engine.name] -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_load(engine)

    monkeypatch.setattr(Engine, "load", load)
    return oom


def test_out_of_gpu_memory_unloads_the_least_recent_and_retries(folders, oom_loading, caplog):
    pool = pool_of(folders, "alpha", "beta", "gamma")
    pool.load()
    pool.generate(job("beta"))
    oom_loading.failures["gamma"] = 1
    with caplog.at_level(logging.INFO, logger="generation.models.pool"):
        pool.generate(job("gamma"))
    assert pool.loaded == ["beta", "gamma"]
    assert unloads(caplog) == ["unloaded model alpha: the GPU ran out of memory loading gamma"]


def test_out_of_gpu_memory_twice_is_a_clear_error_and_the_default_comes_back(folders, oom_loading):
    pool = pool_of(folders, "alpha", "beta")
    pool.load()
    oom_loading.failures["beta"] = 2
    with pytest.raises(
        GenerationError, match=r"^The model beta could not be loaded: not enough GPU memory\.$"
    ):
        pool.generate(job("beta"))
    assert pool.loaded == []
    pool.generate(job())
    assert pool.loaded == ["alpha"]


def test_out_of_gpu_memory_with_nothing_else_loaded_is_not_retried(folders, oom_loading):
    pool = pool_of(folders, "alpha", "beta")
    oom_loading.failures["beta"] = 1
    with pytest.raises(GenerationError, match="beta could not be loaded: not enough GPU memory"):
        pool.generate(job("beta"))
    assert oom_loading.attempts == ["beta"]
    pool.generate(job("beta"))  # the memory is back: it loads
    assert pool.loaded == ["beta"]


# ---- names and folders that are wrong -----------------------------------------------------


def test_an_unknown_model_name_is_a_generation_error(folders):
    pool = pool_of(folders, "alpha", "beta")
    pool.load()
    for call in (lambda: pool.generate(job("gama")), lambda: pool.native_size("gama")):
        with pytest.raises(
            GenerationError, match=r"^Unknown model 'gama'; choose one of alpha, beta\.$"
        ):
            call()
    assert pool.loaded == ["alpha"]


@pytest.fixture
def broken(folders, tmp_path) -> Path:
    """A model folder that passes inspection but whose UNet weights are garbage."""
    folder = shutil.copytree(folders["beta"], tmp_path / "broken")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights" * 99)
    return folder


def test_a_broken_model_fails_its_jobs_and_the_pool_serves_the_others(folders, broken, caplog):
    pool = ModelPool({"alpha": folders["alpha"], "broken": broken}, "alpha", "cpu")
    pool.load()
    with caplog.at_level(logging.ERROR, logger="generation.models.pool"):
        for _ in range(2):  # a second job gets the same answer, not a half-loaded model
            with pytest.raises(GenerationError, match="^The model broken could not be loaded"):
                pool.generate(job("broken"))
    assert any(
        "model broken could not be loaded from" in r.getMessage() and r.exc_info
        for r in caplog.records
    )
    assert pool.loaded == ["alpha"]
    assert len(pool.generate(job("alpha"))) == 1


async def test_the_worker_survives_a_broken_model(folders, broken):
    pool = ModelPool({"alpha": folders["alpha"], "broken": broken}, "alpha", "cpu")
    pool.load()
    queue = GenerationQueue(pool, max_size=10, per_user=10)
    queue.start()
    try:
        bad = queue.submit(job("broken"), "@alice:localhost")
        good = queue.submit(job(), "@alice:localhost")
        bad_result = await asyncio.wait_for(bad.result, 60)
        good_result = await asyncio.wait_for(good.result, 60)
    finally:
        await queue.close(timeout=60)
    assert not bad_result.ok and "The model broken could not be loaded" in bad_result.error
    assert good_result.ok and len(good_result.images) == 1


# ---- native sizes and weight sizes, from the folder alone ---------------------------------


def test_native_size_without_loading(folders, sdxl_folder):
    pool = ModelPool({"alpha": folders["alpha"], "xl": sdxl_folder}, "alpha", "cpu")
    assert pool.native_size("alpha") == pool.native_size("") == (512, 512)
    assert pool.native_size("xl") == (1024, 1024)  # UNet sample_size 128 × the VAE's 8
    assert pool.loaded == []
    assert native_size(folders["alpha"]) == (512, 512)
    assert native_size(sdxl_folder) == (1024, 1024)


def test_native_size_of_a_rectangular_sample_size_is_width_by_height(folders, tmp_path):
    folder = shutil.copytree(folders["alpha"], tmp_path / "wide")
    config = folder / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": [96, 128]}))
    assert native_size(folder) == (1024, 768)  # sample_size is [height, width]


@pytest.mark.parametrize("arch, side", [("sd", 512), ("sdxl", 1024)])
def test_native_size_without_configs_is_the_familys(folders, sdxl_folder, tmp_path, arch, side):
    source = folders["alpha"] if arch == "sd" else sdxl_folder
    shutil.copy(source / "model_index.json", tmp_path / "model_index.json")
    assert native_size(tmp_path) == (side, side)


def test_weights_bytes_counts_the_files_a_load_reads(folders, tmp_path):
    folder = shutil.copytree(folders["alpha"], tmp_path / "alpha")
    expected = sum(f.stat().st_size for f in folder.glob("*/*.safetensors"))
    assert expected > 100_000
    assert weights_bytes(folder) == expected
    # A half-precision variant and an old .bin beside them are not what loads.
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x" * 5000)
    (folder / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"x" * 7000)
    assert weights_bytes(folder) == expected
    # A component that only has a variant is counted by it.
    vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    vae.rename(folder / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    (folder / "vae" / "diffusion_pytorch_model.bin").unlink()
    assert weights_bytes(folder) == expected


# ---- a single Engine is a runner of its own -----------------------------------------------


def test_engine_as_a_runner(folders):
    engine = Engine(folders["alpha"], "cpu")
    assert engine.models == ["alpha"]
    assert engine.native_size() == engine.native_size("alpha") == (512, 512)
    engine.load()
    assert pixels(engine.generate(job("alpha"))) == pixels(engine.generate(job("")))
    with pytest.raises(GenerationError, match=r"^Unknown model 'beta'; choose one of alpha\.$"):
        engine.generate(job("beta"))
    assert Engine(folders["alpha"], "cpu", name="first").models == ["first"]


def test_engine_unload_frees_the_pipeline(folders):
    engine = Engine(folders["alpha"], "cpu")
    engine.load()
    pipeline = weakref.ref(engine.pipe)
    engine.unload()
    assert pipeline() is None  # nothing keeps the weights alive
    with pytest.raises(RuntimeError, match="before load"):
        engine.generate(job())
    engine.load()
    assert len(engine.generate(job())) == 1


# ---- the bot's start: one Engine, or a pool with only the default loaded --------------------


def settings_for(**generation) -> Settings:
    return Settings(
        matrix={"homeserver_url": "http://localhost:8008", "user_id": "@imgbot:localhost"},
        generation={"device": "cpu", "size": "64x64", "steps": 1, **generation},
    )


def test_load_engine_with_one_model_is_an_engine(folders):
    runner = load_engine(settings_for(model=folders["alpha"]))
    assert isinstance(runner, Engine) and runner.pipe is not None


def test_load_engine_with_models_is_a_pool_with_the_default_loaded(folders):
    runner = load_engine(
        settings_for(
            model=folders["alpha"],
            models={"b": folders["beta"], "c": folders["gamma"]},
            max_loaded_models=2,
        )
    )
    assert isinstance(runner, ModelPool)
    assert (runner.name, runner.models, runner.loaded) == ("alpha", ["alpha", "b", "c"], ["alpha"])
    assert runner.max_loaded == 2


def test_load_engine_stops_at_a_model_folder_typo(folders, tmp_path):
    with pytest.raises(SystemExit) as info:
        load_engine(settings_for(model=folders["alpha"], models={"b": tmp_path / "bta"}))
    assert (
        str(info.value) == f"generation.models.b: {tmp_path / 'bta'} is not a "
        "folder (models load from local folders only)"
    )
    with pytest.raises(SystemExit, match=r"^generation.model: .*nowhere is not a folder"):
        load_engine(settings_for(model=tmp_path / "nowhere", models={"b": folders["beta"]}))
