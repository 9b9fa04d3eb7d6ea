"""Fitting a model to its card (generation/runtime/quantize_offload.py): the offload
decision as a pure function, the weights' size on the card from the safetensors headers, torchao's int8
quantization for real on the CPU (a tiny model still makes its pictures), fp8 and a missing
torchao refused with the words to fix them, and diffusers' offloading hooks run for real on
the CPU. CUDA itself is a fake at its boundary (free memory, compute capability)."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from types import SimpleNamespace

import pytest

from generation.families.known import SD
from generation.families.model_folder import ModelError
from generation.models.engine import Engine
from generation.models.preflight import check_parts
from generation.runtime import quantize_offload
from generation.runtime.device import Placement

GiB = 2**30
CPU = Placement("cpu", "float32")


@pytest.fixture
def no_torchao(monkeypatch):
    """A machine without torchao, as `pip install imgbot` leaves it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a)
    )


# ---- the offload decision ---------------------------------------------------------------

SIZES = {"transformer": 38 * GiB, "text_encoder": 15 * GiB, "vae": GiB // 4}


@pytest.mark.parametrize(
    "free, choice, note",
    [
        (79 * GiB, "none", "offload: none (weights 53.2 GiB fit in 79.0 GiB free on cuda:0)"),
        (
            44 * GiB,
            "model",
            "offload: model (weights 53.2 GiB + 6.3 GiB working room > 44.0 GiB free on cuda:0)",
        ),
        (
            23 * GiB,
            "group",
            "offload: group (weights 53.2 GiB + 6.3 GiB working room > 23.0 GiB "
            "free on cuda:0, and the transformer alone, 38.0 GiB, does not fit "
            "either)",
        ),
    ],
)
def test_auto_offloads_only_what_does_not_fit(free, choice, note):
    assert quantize_offload.choose_offload("auto", "cuda:0", SIZES, free) == (choice, note)


def test_the_working_room_counts_too():
    # 20 GiB of weights in 20.5 GiB free: the weights fit, a picture beside them would not.
    choose = quantize_offload.choose_offload
    assert choose("auto", "cuda", {"unet": 20 * GiB}, 41 * GiB // 2)[0] == "group"
    assert choose("auto", "cuda", {"unet": 20 * GiB}, 24 * GiB)[0] == "none"


@pytest.mark.parametrize("asked", ["none", "model", "group"])
def test_a_configured_offload_is_taken_as_it_is(asked):
    choice, note = quantize_offload.choose_offload(asked, "cuda:1", SIZES, 200 * GiB)
    assert choice == asked
    assert note == ("offload: none" if asked == "none" else f"offload: {asked} (configured)")


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_nothing_is_offloaded_off_cuda(device):
    assert quantize_offload.choose_offload("model", device, SIZES, None) == (
        "none",
        f"offload: off (for CUDA; this is {device})",
    )


# ---- the weights' size on the card ------------------------------------------------------


def test_the_size_on_the_card_follows_the_load_precision_and_quantization(test_model):
    import torch
    from diffusers import UNet2DConditionModel

    in_fp32 = quantize_offload.on_card(test_model, 4)
    in_bf16 = quantize_offload.on_card(test_model, 2)
    unet = UNet2DConditionModel.from_pretrained(test_model / "unet", dtype=torch.float32)
    state = unet.state_dict()
    assert in_fp32["unet"] == sum(t.numel() * 4 for t in state.values())
    assert in_bf16["unet"] * 2 == in_fp32["unet"]  # a bf16 load halves fp32 files
    # Quantized: the linear layers' weights at a byte a value, the rest as loaded.
    quantized = quantize_offload.on_card(test_model, 2, quantized="unet")
    assert quantized["unet"] == sum(
        t.numel() * (1 if t.dim() == 2 else 2)
        for name, t in state.items()
        if name.endswith("weight")
    ) + sum(t.numel() * 2 for name, t in state.items() if not name.endswith("weight"))
    assert quantized["text_encoder"] == in_bf16["text_encoder"]
    assert set(in_fp32) == {"unet", "vae", "text_encoder"}  # folders without weights: none


# ---- a folder saved quantized -----------------------------------------------------------


@pytest.mark.parametrize(
    "config, said",
    [
        (
            {
                "quant_method": "torchao",
                "quant_type": {
                    "default": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {}}
                },
            },
            "torchao Int8WeightOnlyConfig",
        ),
        ({"quant_method": "torchao", "quant_type": "int8wo"}, "torchao int8wo"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "bitsandbytes 4-bit"),
        ({"quant_method": "gguf"}, "gguf"),
        (None, None),
    ],
)
def test_a_folder_saved_quantized_says_how(tmp_path, config, said):
    (tmp_path / "transformer").mkdir()
    data = {"_class_name": "FluxTransformer2DModel"}
    if config is not None:
        data["quantization_config"] = config
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(data))
    assert quantize_offload.folder_quantization(tmp_path, "transformer") == said


def test_a_folder_saved_quantized_loads_as_it_is(test_model, tmp_path, caplog):
    folder = tmp_path / "saved-quantized"
    shutil.copytree(test_model, folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    pipe = SimpleNamespace(to=lambda device: None)
    with caplog.at_level(logging.WARNING, logger="generation.runtime.quantize_offload"):
        fit = quantize_offload.fit(pipe, folder, SD, CPU, "saved", quantize="int8")
    assert fit.notes[0] == "quantize: the folder's own (bitsandbytes 8-bit, unet)"
    assert fit.unfused == "quantized"
    assert "generation.quantize int8 is not applied to saved" in caplog.text


# ---- refusals ---------------------------------------------------------------------------


def test_fp8_on_the_cpu_is_refused_before_anything_loads(test_model):
    engine = Engine(test_model, "cpu", quantize="fp8")
    with pytest.raises(
        ModelError,
        match=r"generation.quantize: fp8 needs an NVIDIA GPU of "
        r"compute capability 8.9 or newer .*this is cpu",
    ):
        engine.load()
    assert engine.pipe is None


@pytest.mark.parametrize("capability, refused", [((8, 0), True), ((8, 9), False), ((9, 0), False)])
def test_fp8_needs_ada_or_hopper(monkeypatch, capability, refused):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA A100-SXM4-80GB")
    if not refused:
        quantize_offload.check("fp8", Placement("cuda:0", "bfloat16"))
        return
    with pytest.raises(
        ModelError,
        match=r"cuda:0 is a NVIDIA A100-SXM4-80GB \(compute "
        r"capability 8.0\); use int8 or none there",
    ):
        quantize_offload.check("fp8", Placement("cuda:0", "bfloat16"))


def test_without_torchao_the_load_and_the_check_say_what_to_install(test_model, no_torchao):
    words = "int8 needs torchao: pip install 'imgbot[quantize]'"
    with pytest.raises(ModelError, match=f"^generation.quantize: {words}$".replace("[", r"\[")):
        Engine(test_model, "cpu", quantize="int8").load()
    catalogue = {"tiny": ("generation.model", test_model)}
    (part,) = [p for p in check_parts(catalogue, quantize="int8") if p.name == "quantize"]
    assert part.message == f"generation.quantize: {words}"
    assert all(p.ok for p in check_parts(catalogue))  # without quantize nothing needs it


def test_the_check_names_torchao_and_a_folder_that_needs_it(test_model, tmp_path, no_torchao):
    folder = tmp_path / "int8-folder"
    shutil.copytree(test_model, folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "torchao", "quant_type": "int8wo"}
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    (part,) = [p for p in check_parts({"q": ("generation.models.q", folder)}) if not p.ok]
    assert part.message == (
        "generation.models.q: its denoiser was saved quantized with "
        "torchao, which is not installed: pip install 'imgbot[quantize]'"
    )


def test_the_check_says_which_torchao_quantizes(test_model):
    (part,) = [
        p
        for p in check_parts({"t": ("generation.model", test_model)}, quantize="int8")
        if p.name == "quantize"
    ]
    torchao = quantize_offload.torchao_version()
    assert part.ok and part.detail.startswith(f"int8 (torchao {torchao})")


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="quantize 'int4': choose one of none, fp8, int8"):
        quantize_offload.options("int4", "auto")
    with pytest.raises(ValueError, match="offload 'disk': choose one of auto, none, model"):
        quantize_offload.options("none", "disk")


# ---- what the check and the start agree on -----------------------------------------------


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_fp8_on_auto_is_refused_by_the_check_in_the_loads_words(test_model, no_gpu):
    with pytest.raises(ModelError) as refused:
        Engine(test_model, "auto", quantize="fp8").load()
    (part,) = [
        p
        for p in check_parts(
            {"t": ("generation.model", test_model)}, quantize="fp8", devices=["auto"]
        )
        if p.name == "quantize"
    ]
    assert part.message == str(refused.value)
    assert (
        part.message.startswith(
            "generation.quantize: fp8 needs an NVIDIA GPU of compute capability 8.9 or newer"
        )
        and "this is cpu" in part.message
    )


def test_fp8_on_auto_is_checked_on_the_card_auto_takes(test_model, monkeypatch):
    import torch

    import generation.runtime.device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(generation.runtime.device, "_native_bf16", lambda device: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA A100-SXM4-80GB")
    catalogue = {"t": ("generation.model", test_model)}
    for capability, problem in [
        (
            (8, 0),
            "cuda is a NVIDIA A100-SXM4-80GB (compute capability 8.0); use int8 or none there",
        ),
        ((9, 0), None),
    ]:
        monkeypatch.setattr(
            torch.cuda, "get_device_capability", lambda device, capability=capability: capability
        )
        (part,) = [
            p
            for p in check_parts(catalogue, quantize="fp8", devices=["auto", "auto"])
            if p.name == "quantize"
        ]
        assert part.problem is None if problem is None else part.problem.endswith(problem)


def test_free_memory_counts_what_torch_reserved_and_holds_no_tensor_in(monkeypatch):
    import torch

    from generation.models.pool import free_bytes

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (3 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5 * GiB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2 * GiB)
    # 3 GiB the driver has free, and 3 GiB of torch's cache: what a model may load into.
    assert quantize_offload.free_memory("cuda:0") == free_bytes("cuda:0") == 6 * GiB
    assert quantize_offload.free_memory("cpu") is None
