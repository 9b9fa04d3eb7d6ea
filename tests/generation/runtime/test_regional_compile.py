"""torch.compile as the engine applies it (speedups.compile_models): the denoiser's repeated
blocks, without fullgraph, so that new batch sizes, caption lengths and LoRA adapters
compile anew (or run uncompiled past dynamo's limit) instead of failing the job. Traced
with dynamo's "eager" backend: the graphs are real, inductor's C++ build is left out."""

from __future__ import annotations

import logging

import pytest

from generation.job import Job
from generation.models.engine import Engine
from generation.runtime import speedups
from generation.runtime.device import Placement
from generation.testing.lora import make_test_lora
from generation.testing.tiny import make_test_model

WORDS = "a red lighthouse at dawn over a calm sea with gulls and fishing boats".split()


@pytest.fixture
def tracing(monkeypatch):
    """Dynamo's eager backend, a fresh dynamo, and its settings back as they were."""
    import torch._dynamo

    monkeypatch.setattr(speedups, "COMPILE_BACKEND", "eager")
    # Not monkeypatch: its undo deletes the setting, which dynamo's config then hides.
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = limit


@pytest.fixture(scope="module")
def zimage(tmp_path_factory):
    root = tmp_path_factory.mktemp("regional-zimage")
    model = make_test_model(root / "tiny-zimage", "zimage")
    loras = {
        name: make_test_lora(model, root / f"{name}.safetensors", seed=seed)
        for seed, name in enumerate(("ink", "oil"))
    }
    return model, loras


def test_a_compiled_zimage_takes_any_batch_caption_and_lora(zimage, tracing, caplog):
    # Z-Image's transformer takes lists of per-picture tensors: compiled whole with
    # fullgraph, its first call already failed, and a batch size or caption length each was
    # a graph of its own, up to dynamo's limit of 8 and FailOnRecompileLimitHit after it.
    from torch._dynamo.utils import counters

    model, loras = zimage
    caplog.set_level(logging.INFO, logger="generation.models.engine")
    engine = Engine(model, "cpu", compile=True, loras=loras)
    engine.load()
    for count in range(1, 10):
        lora = ("", "ink", "oil")[count % 3]
        made = engine.generate(
            Job(
                prompt=" ".join(WORDS[: count + 1]),
                seed=count,
                steps=1,
                width=32,
                height=32,
                count=count,
                lora=lora,
                lora_weight=0.8 if lora else 0.0,
            )
        )
        assert [p.size for p in made] == [(32, 32)] * count
    assert counters["stats"]["unique_graphs"] > 0  # compiled, not merely run
    assert (
        "compile: on (default, transformer blocks (ZImageTransformerBlock) and VAE decoder)"
    ) in caplog.text


def test_a_model_without_repeated_blocks_is_compiled_whole_and_survives_many_shapes(tracing):
    import torch

    class Lists(torch.nn.Module):
        """A denoiser that, like Z-Image's, takes a list of tensors: dynamo specialises on
        the list's length, so each length is a graph of its own."""

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Linear(4, 4)

        def forward(self, pictures):
            return [self.scale(p) for p in pictures]

    pipe = type("Pipe", (), {})()
    pipe.transformer, pipe.vae = Lists(), torch.nn.Module()  # a VAE without a decoder
    note = speedups.compile_models(pipe, Placement("cpu", "float32"), "transformer")
    assert note == "compile: on (default, transformer)"
    for length in range(1, 13):  # past the default limit of 8 graphs
        made = pipe.transformer([torch.ones(2, 4)] * length)
        assert len(made) == length
    assert torch._dynamo.config.recompile_limit >= 12
