"""The engine with a quantized denoiser and with offloading, for real on the CPU: torchao's
int8 weights in every linear layer of the UNet or transformer, pictures of the asked size,
LoRAs and torch.compile on top, and diffusers' offload hooks (which the engine only turns on
for CUDA: the decision is faked, the hooks are real). What CUDA alone decides (the free
memory, quantizing on the card) is checked with a pipeline that records what it is asked."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from generation.families.known import SD
from generation.job import Job
from generation.models.engine import Engine
from generation.runtime import quantize_offload, speedups
from generation.runtime.device import Placement
from generation.testing.lora import make_test_lora
from generation.testing.tiny import make_test_model

GiB = 2**30


def job(**fields) -> Job:
    return Job(
        **{"prompt": "a lighthouse", "seed": 3, "steps": 2, "width": 64, "height": 96, **fields}
    )


def speed_line(caplog) -> str:
    (line,) = [r.getMessage() for r in caplog.records if "speed-ups" in r.getMessage()]
    return line


def quantized_linears(module) -> tuple[int, int]:
    """(linear layers, those whose weight is one of torchao's quantized tensors)."""
    import torch
    from torchao.utils import TorchAOBaseTensor

    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return len(linears), sum(isinstance(m.weight, TorchAOBaseTensor) for m in linears)


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("flux") / "tiny-flux", "flux")


@pytest.fixture(scope="module")
def int8_sd(test_model):
    engine = Engine(test_model, "cpu", quantize="int8")
    engine.load()
    yield engine
    engine.unload()


def test_int8_quantizes_every_linear_weight_of_the_unet(int8_sd, engine):
    linears, quantized = quantized_linears(int8_sd.pipe.unet)
    assert linears > 10 and quantized == linears
    assert quantized_linears(int8_sd.pipe.text_encoder)[1] == 0  # the denoiser only
    made = int8_sd.generate(job())
    plain = engine.generate(job())
    assert [p.size for p in made] == [(64, 96)]
    # The same picture up to 8-bit weights' rounding: close, not equal.
    a, b = (np.asarray(p[0], dtype=np.int16) for p in (made, plain))
    assert np.abs(a - b).mean() < 8


def test_int8_is_named_in_the_speed_line(test_model, caplog):
    caplog.set_level(logging.INFO, logger="generation.models.engine")
    engine = Engine(test_model, "cpu", quantize="int8")
    engine.load()
    assert speed_line(caplog) == (
        f"speed-ups for {engine.name}: quantize: int8 (torchao, unet); offload: off (for CUDA; "
        "this is cpu); attention: SDPA; channels_last: off (for CUDA; this is cpu); fused QKV: "
        "off (quantized); VAE: float32; compile: off; fast decoder: none"
    )


def test_int8_on_a_transformer_model(tiny_flux, caplog):
    caplog.set_level(logging.INFO, logger="generation.models.engine")
    engine = Engine(tiny_flux, "cpu", quantize="int8")
    engine.load()
    linears, quantized = quantized_linears(engine.pipe.transformer)
    assert linears and quantized == linears
    assert [p.size for p in engine.generate(job(count=2))] == [(64, 96)] * 2
    assert "quantize: int8 (torchao, transformer)" in speed_line(caplog)
    engine.unload()


def test_a_lora_goes_onto_the_quantized_unet(test_model, int8_sd, tmp_path):
    lora = make_test_lora(test_model, tmp_path / "brand.safetensors")
    engine = Engine(test_model, "cpu", quantize="int8", loras={"brand": lora})
    engine.load()
    branded = np.asarray(engine.generate(job(lora="brand", lora_weight=0.8))[0], np.int16)
    plain = np.asarray(engine.generate(job())[0], np.int16)
    assert (branded != plain).any()
    assert (plain == np.asarray(int8_sd.generate(job())[0], np.int16)).all()


def test_int8_compiles(test_model, monkeypatch, caplog):
    import torch._dynamo

    caplog.set_level(logging.INFO, logger="generation.models.engine")
    monkeypatch.setattr(speedups, "COMPILE_BACKEND", "eager")  # tracing only: fast on a CPU
    torch._dynamo.reset()
    engine = Engine(test_model, "cpu", quantize="int8", compile=True)
    engine.load()
    assert [p.size for p in engine.generate(job())] == [(64, 96)]
    assert (
        "compile: on (default, UNet blocks (BasicTransformerBlock) and VAE decoder)"
        in speed_line(caplog)
    )
    torch._dynamo.reset()


# ---- offloading: the hooks for real, on the CPU ----------------------------------------


@pytest.fixture
def offloading(monkeypatch):
    """The engine takes the offloading it is given even on the CPU (on CUDA, `auto` or the
    config chooses it), so that diffusers' real hooks run here."""

    def choose(kind):
        monkeypatch.setattr(
            quantize_offload, "choose_offload", lambda *args: (kind, f"offload: {kind} (test)")
        )

    return choose


@pytest.mark.parametrize("kind", ["model", "group"])
def test_an_offloaded_pipeline_makes_the_same_pictures(
    test_model, engine, offloading, kind, monkeypatch, caplog
):
    import torch._dynamo

    offloading(kind)
    caplog.set_level(logging.INFO, logger="generation.models.engine")
    monkeypatch.setattr(speedups, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    offloaded = Engine(test_model, "cpu", compile=True)
    offloaded.load()
    line = speed_line(caplog)
    if kind == "model":
        assert offloaded.pipe._all_hooks  # accelerate's hooks, one per model
        assert (
            "compile: on (default, UNet blocks (BasicTransformerBlock) and VAE decoder, "
            "after the offload hook)"
        ) in line
    else:
        assert "compile: off (group offload breaks the graph at every layer)" in line
        assert "fused QKV: off (group offload)" in line
    assert f"offload: {kind} (test)" in line
    # A batch too (compiled under model offload: a second shape is a second trace, 15 s).
    for one in (job(),) if kind == "model" else (job(), job(seed=4, count=2)):
        assert [p.size for p in offloaded.generate(one)] == [(64, 96)] * one.count
    a, b = (np.asarray(e.generate(job())[0], np.int16) for e in (offloaded, engine))
    assert np.abs(a - b).max() <= 2  # fused or not, the same picture
    torch._dynamo.reset()


def test_int8_and_model_offload_together(test_model, int8_sd, offloading):
    offloading("model")
    engine = Engine(test_model, "cpu", quantize="int8")
    engine.load()
    assert quantized_linears(engine.pipe.unet)[1] == quantized_linears(int8_sd.pipe.unet)[1]
    a, b = (np.asarray(e.generate(job())[0], np.int16) for e in (engine, int8_sd))
    assert (a == b).all()


# ---- what CUDA decides, with a pipeline that records what it is asked --------------------


class Recording(SimpleNamespace):
    """A pipeline that records placement calls; its UNet is a stand-in module."""

    def __init__(self):
        super().__init__(unet=object(), calls=[])

    def to(self, device):
        self.calls.append(("to", device))

    def enable_model_cpu_offload(self, **kwargs):
        self.calls.append(("model", kwargs))

    def enable_group_offload(self, **kwargs):
        self.calls.append(("group", kwargs))


@pytest.mark.parametrize(
    "free, offload, on_card",
    [(40 * GiB, "none", "cuda:1"), (GiB // 5 + 150_000, "model", "cuda:1"), (2**20, "group", None)],
)
def test_on_cuda_the_free_memory_decides(test_model, monkeypatch, free, offload, on_card):
    import torch

    cuda = Placement("cuda:1", "bfloat16")
    quantized = []
    monkeypatch.setattr(
        quantize_offload,
        "quantize_denoiser",
        lambda module, how, device, **_: quantized.append((how, device)),
    )
    monkeypatch.setattr(quantize_offload, "free_memory", lambda device: free)
    # The tiny model's weights are 0.2 MB (its int8 UNet 0.1 MB): a smaller working room.
    monkeypatch.setattr(quantize_offload, "working_room", lambda weights: GiB // 5 + weights // 10)
    pipe = Recording()
    fit = quantize_offload.fit(pipe, test_model, SD, cuda, "tiny", quantize="int8")
    assert fit.offload == offload and fit.notes[0] == "quantize: int8 (torchao, unet)"
    # Quantized on the card layer by layer, except where not even one model fits there.
    assert quantized == [("int8", on_card)]
    assert pipe.calls == [
        {
            "none": ("to", "cuda:1"),
            "model": ("model", {"device": "cuda:1"}),
            "group": (
                "group",
                {
                    "onload_device": torch.device("cuda:1"),
                    "offload_device": torch.device("cpu"),
                    "offload_type": "leaf_level",
                    "use_stream": True,
                },
            ),
        }[offload]
    ]
    assert fit.notes[1].startswith(f"offload: {offload} (weights ")
