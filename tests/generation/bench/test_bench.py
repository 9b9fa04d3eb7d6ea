"""`imgbot bench` and the full-size random-weight models it can run on.

Nothing here asserts anything about speed: CI runs on two shared cores. The full-size
architectures are checked on the meta device (no memory, no arithmetic), against the
published models' parameter counts and the FLOPs the issue quotes.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from bot.cli import main as imgbot
from generation.bench.comparison import BenchError, Workload, run_bench
from generation.job import Job
from generation.models.engine import Engine
from generation.testing.full_size import random_pipeline
from generation.testing.tiny import BUILDERS

# The published models' parameter counts: runwayml/stable-diffusion-v1-5 and
# stabilityai/stable-diffusion-xl-base-1.0 (CLIP ViT-L/14 text encoder, OpenCLIP ViT-bigG/14
# with its projection, the shared VAE architecture).
REAL_PARAMETERS = {
    "sd15": {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863},
    "sdxl": {
        "unet": 2_567_463_684,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
        "vae": 83_653_863,
    },
}

ROW = re.compile(
    r"^(imgbot|diffusers)\s+float32\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+"
    r"([\d.]+)\s+((?:≤ )?[\d.]+ GiB)\s+([\d.]+)\s+([\d.]+|n/a)$",
    re.MULTILINE,
)


def test_bench_on_the_tiny_model_prints_both_rows(test_model, tmp_path, capsys):
    out, lines = tmp_path / "bench.json", tmp_path / "figures.txt"
    assert (
        imgbot(
            [
                "bench",
                "--model",
                str(test_model),
                "--size",
                "64x64",
                "--steps",
                "1",
                "--count",
                "2",
                "--batch",
                "1,2",
                "--device",
                "cpu",
                "--json",
                str(out),
                "--figures",
                str(lines),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    rows = {(match[1], match[2]): match for match in ROW.finditer(printed)}
    # each side at each batch size, the baseline making as many pictures a call as ours
    assert set(rows) == {(side, b) for side in ("imgbot", "diffusers") for b in "12"}, printed
    assert all(float(row[6]) > 0 for row in rows.values())  # pictures per second
    # The warm-up: ours has one (shown to a tenth of a second: a tiny model's may read 0.0;
    # its exact seconds are checked in the JSON below), the baseline has none.
    assert rows["diffusers", "1"][9] == "n/a" and float(rows["imgbot", "1"][9]) >= 0
    for words in ("64x64, 1 step,", "guidance 0", "torch ", "diffusers ", str(test_model)):
        assert words in printed, words
    report = json.loads(out.read_text())
    assert report["config"]["device"] == "cpu" and report["config"]["batches"] == [1, 2]
    by = {(row["side"], row["batch"]): row for row in report["rows"]}
    assert (
        len(by["imgbot", 2]["call_seconds"]) == 1 and len(by["diffusers", 2]["call_seconds"]) == 1
    )
    assert len(by["diffusers", 1]["call_seconds"]) == 2
    for batch in (1, 2):
        assert by["imgbot", batch]["ours_over_baseline"] == pytest.approx(
            by["imgbot", batch]["pictures_per_second"]
            / by["diffusers", batch]["pictures_per_second"]
        )
    # one line a figure, written as each was measured: the baseline's first
    written = lines.read_text().splitlines()
    assert [line.split(" | ")[3:5] for line in written] == [
        ["batch 1", "diffusers (float32)"],
        ["batch 2", "diffusers (float32)"],
        ["batch 1", "imgbot (float32)"],
        ["batch 2", "imgbot (float32)"],
    ]
    assert all(
        re.search(r"\| peak (≤ )?[\d.]+ GiB \| ours/plain [\d.]+", line) for line in written
    ), written


def test_the_baseline_runs_in_our_engines_precision(test_model, monkeypatch):
    """On a GPU ours runs in bfloat16: so does the baseline (not float16 with the VAE in
    float32), so that ours/plain compares engines. The CPU stands in for the GPU here."""
    import generation.bench.comparison
    import generation.models.engine
    from generation.runtime.device import Placement

    half = Placement("cpu", "bfloat16")
    asked = []  # as Engine.load asks: float16 is safe for the UNet families only
    monkeypatch.setattr(
        generation.bench.comparison, "choose", lambda _device, **kw: asked.append(kw) or half
    )
    monkeypatch.setattr(generation.models.engine, "choose", lambda _device, **_: half)
    seen = []
    monkeypatch.setattr(
        generation.bench.comparison,
        "_baseline",
        lambda w, device, dtype: (seen.append(dtype) or (lambda batch: [None] * batch), None, None),
    )
    workload = Workload.make(str(test_model), None, "64x64", steps=1, count=1, device="cpu")
    report = run_bench(workload)
    assert [str(dtype) for dtype in seen] == ["torch.bfloat16"]
    assert {row["dtype"] for row in report["rows"]} == {"bfloat16"}
    assert report["config"]["baseline_dtype"] == report["config"]["ours_dtype"] == "bfloat16"
    assert asked and all(kw == {"fp16_safe": True} for kw in asked)  # SD: a UNet


def test_our_engine_warms_up_as_the_bot_does_before_each_batch_is_timed(test_model, monkeypatch):
    """One picture, then a batch of two (the bot's warm-up, which makes a compiled batch
    size dynamic), and only then the workload's own batch sizes; its seconds are a figure."""
    from generation.models.engine import Engine

    counts = []
    generate = Engine.generate
    monkeypatch.setattr(
        Engine, "generate", lambda self, job: counts.append(job.count) or generate(self, job)
    )
    workload = Workload.make(
        str(test_model), None, "64x64", steps=1, count=4, batch=(1, 4), device="cpu"
    )
    report = run_bench(workload, baseline=False)
    # warm-up 1, 2; then at batch 1: 1 untimed + 4 timed; at batch 4: 1 untimed + 1 timed
    assert counts == [1, 2, 1, 1, 1, 1, 1, 4, 4]
    assert all(
        row["warm_up_seconds"] > 0 and row["first_call_seconds"] > 0 for row in report["rows"]
    )


def test_the_baseline_of_an_earlier_run_gives_ours_over_plain(test_model, tmp_path, capsys):
    first = tmp_path / "first.json"
    common = [
        "bench",
        "--model",
        str(test_model),
        "--size",
        "64x64",
        "--steps",
        "1",
        "--count",
        "1",
        "--device",
        "cpu",
    ]
    assert imgbot([*common, "--json", str(first)]) == 0
    again = tmp_path / "again.json"
    assert (
        imgbot([*common, "--no-baseline", "--baseline-from", str(first), "--json", str(again)]) == 0
    )
    base = next(r for r in json.loads(first.read_text())["rows"] if r["side"] == "diffusers")
    (ours,) = json.loads(again.read_text())["rows"]
    assert ours["ours_over_baseline"] == pytest.approx(
        ours["pictures_per_second"] / base["pictures_per_second"]
    )
    capsys.readouterr()
    assert (
        imgbot([*common[:6], "2", *common[7:], "--no-baseline", "--baseline-from", str(first)]) == 2
    )
    assert "another workload (steps 1, not 2)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(size="64x65"), "multiples of 8"),
        (dict(size="big"), "WIDTHxHEIGHT"),
        (dict(size="64x64", count=3, batch=2), "not a multiple of --batch 2"),
        (dict(size="64x64", steps=0), "--steps is at least 1"),
        (dict(size="64x64", count=4, batch=(1, 3)), "not a multiple of --batch 3"),
        (dict(size="64x64", quantize="fp8", device="cpu"), "--quantize: fp8 needs an NVIDIA GPU"),
        (dict(size="64x64", device="tpu"), "device 'tpu'"),
    ],
)
def test_a_workload_that_cannot_run_is_refused_before_loading(test_model, options, message):
    size = options.pop("size")
    with pytest.raises(BenchError, match=re.escape(message)):
        Workload.make(str(test_model), None, size, **options)


def test_random_weights_that_do_not_fit_are_refused_before_anything_is_made(monkeypatch, capsys):
    """Z-Image-Turbo's 10.3 B parameters take 41 GB in the CPU's float32: more than a small
    machine has, where the kernel would kill the bench half-way through building them."""
    import generation.models.pool

    monkeypatch.setattr(generation.models.pool, "free_bytes", lambda device: 24 * 10**9)
    assert (
        imgbot(["bench", "--random-weights", "zimage", "--size", "256x256", "--device", "cpu"]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "--random-weights zimage: its weights take 41.0 GB at 4 bytes a parameter, "
        "and cpu has 24.0 GB free" in err
    )
    # An architecture that fits is not held back.
    Workload.make(None, "sd15", "64x64", device="cpu")


def test_a_model_that_only_edits_is_refused_naming_it(tmp_path, capsys):
    from generation.testing.tiny import make_test_model

    folder = make_test_model(tmp_path / "qwen-edit", "qwenimage-edit")
    assert imgbot(["bench", "--model", str(folder), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert (
        f"imgbot bench: --model {folder}: a Qwen-Image-Edit model only edits pictures, "
        "and the bench times pictures made from a prompt" in err
    )
    assert "Traceback" not in err


def test_bench_needs_a_model_or_random_weights(capsys):
    with pytest.raises(SystemExit):
        imgbot(["bench", "--size", "64x64"])
    assert "--model" in capsys.readouterr().err


def test_an_upscaler_has_no_full_size(tmp_path, capsys):
    assert imgbot(["make-test-model", str(tmp_path), "--arch", "esrgan", "--full-size"]) == 2
    assert "--full-size is for sd, sdxl" in capsys.readouterr().err


@pytest.mark.parametrize("arch", sorted(REAL_PARAMETERS))
def test_random_pipeline_has_the_real_models_parameter_counts(arch):
    pipe = random_pipeline(arch, device="meta")  # the architecture alone: instant, no memory
    counts = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }
    assert counts == REAL_PARAMETERS[arch]


def test_random_sdxl_does_the_real_models_arithmetic():
    """The FLOPs of SDXL at 1024x1024: 6.76 TFLOP a UNet step, 10.5 for the VAE decode."""
    from torch.utils.flop_counter import FlopCounterMode

    pipe = random_pipeline("sdxl", device="meta")
    latents = torch.empty(1, 4, 128, 128, device="meta")
    conditions = {
        "text_embeds": torch.empty(1, 1280, device="meta"),
        "time_ids": torch.empty(1, 6, device="meta"),
    }
    with torch.no_grad(), FlopCounterMode(display=False) as unet:
        pipe.unet(
            latents,
            torch.tensor([999.0], device="meta"),
            encoder_hidden_states=torch.empty(1, 77, 2048, device="meta"),
            added_cond_kwargs=conditions,
        )
    with torch.no_grad(), FlopCounterMode(display=False) as vae:
        pipe.vae.decode(latents)
    assert unet.get_total_flops() / 1e12 == pytest.approx(6.76, rel=0.01)
    assert vae.get_total_flops() / 1e12 == pytest.approx(10.5, rel=0.01)
    assert pipe.vae.config.scaling_factor == 0.13025


def test_the_random_fill_is_seeded_and_keeps_the_buffers():
    """Filled on the CPU: the same seed gives the same weights; norm scales are 1, biases
    0; the buffers built beside the meta parameters (CLIP's position ids) are kept."""
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel

    from generation.testing.full_size import _materialise

    def build(seed):
        with init_empty_weights(include_buffers=False):
            model = CLIPTextModel(
                CLIPTextConfig(
                    hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2
                )
            )
        _materialise(model, "cpu", torch.float32, torch.Generator().manual_seed(seed))
        return model

    def weight(model, name):  # by the end of its name (transformers 5 dropped "text_model.")
        return next(p for n, p in model.named_parameters() if n.endswith(name))

    one, again, other = build(0), build(0), build(1)
    assert all(p.device.type == "cpu" for p in one.parameters())
    assert all(torch.equal(p, q) for p, q in zip(one.parameters(), again.parameters()))
    fc1 = "encoder.layers.0.mlp.fc1.weight"
    assert not torch.equal(weight(one, fc1), weight(other, fc1))
    assert weight(one, fc1).abs().max() <= 1 / 32**0.5  # ±1/sqrt(fan_in)
    assert torch.all(weight(one, "final_layer_norm.weight") == 1)
    assert torch.all(weight(one, "encoder.layers.0.mlp.fc1.bias") == 0)
    position_ids = next(b for n, b in one.named_buffers() if n.endswith("position_ids"))
    assert torch.equal(position_ids[0], torch.arange(77))


def test_an_engine_runs_a_pipeline_built_in_memory(tmp_path):
    pipe = BUILDERS["sd"](tmp_path)
    engine = Engine.from_pipeline(pipe, "in-memory", "cpu")
    assert (engine.name, engine.family, engine.path) == ("in-memory", "sd", None)
    assert engine.native_size() == (512, 512)
    images = engine.generate(Job(prompt="a cat", seed=1, steps=1, width=64, height=64, count=2))
    assert [image.size for image in images] == [(64, 64), (64, 64)]


@pytest.mark.skipif(
    not os.environ.get("IMGBOT_SLOW_TESTS"),
    reason="builds two 4.3 GB pipelines: over a minute on 2 cores; set IMGBOT_SLOW_TESTS=1",
)
def test_bench_runs_the_full_size_sd15_end_to_end(capsys):
    assert (
        imgbot(
            [
                "bench",
                "--random-weights",
                "sd15",
                "--size",
                "64x64",
                "--steps",
                "1",
                "--count",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "random-weight sd15" in printed
    assert {match[1] for match in ROW.finditer(printed)} == {"imgbot", "diffusers"}


def test_an_engine_over_a_pipeline_built_in_memory_can_be_quantized(tmp_path):
    """The bench's fp8 figure goes this way (int8 here: fp8 needs an Ada or Hopper GPU):
    the denoiser's linear layers quantized, and its QKV projections left apart."""
    engine = Engine.from_pipeline(BUILDERS["sd"](tmp_path), "in-memory", "cpu", quantize="int8")
    assert engine.fit.quantize == "int8" and engine.fit.unfused == "quantized"
    linear = next(m for n, m in engine.pipe.unet.named_modules() if n.endswith("attn1.to_q"))
    assert type(linear.weight) not in (torch.nn.Parameter, torch.Tensor)  # torchao's
    images = engine.generate(Job(prompt="a cat", seed=1, steps=1, width=64, height=64))
    assert [image.size for image in images] == [(64, 64)]
