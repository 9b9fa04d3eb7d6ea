"""`imgbot bench`: our engine against plain diffusers, on the same model and workload, in
one run.

The baseline is diffusers as its documentation uses it: the pipeline in half precision
(float16; float32 on the CPU) moved `.to(device)`, default attention, no compile, one
picture per call. Ours is `Engine` as it is, called through its public API with `--batch`
pictures per job. The baseline runs first, so that whatever global switches our engine
turns on cannot speed it up. Each side is loaded, warmed up (not timed), timed call by call
and freed before the other; the GPU is synchronised around every timed call. Peak memory is
torch's on CUDA, and the process's resident peak on the CPU (see `_process_peak`).
"""

from __future__ import annotations

import gc
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import bench_report
from .device import choose
from .engine import Engine, quiet_libraries
from .in_memory import from_pipeline
from .job import Job
from .families import FAMILIES, Family
from .model_folder import NATIVE_SIDES, family_of, inspect_model, native_size
from .pipeline_call import arguments

PROMPT = "Albert Einstein, oil painting"
# --random-weights NAME → (testing.full_size.random_pipeline's architecture, the family)
RANDOM_ARCHS = {"sd15": ("sd15", "sd"), "sdxl": ("sdxl", "sdxl"),
                "flux1-schnell": ("flux1-schnell", "flux"),
                "zimage": ("zimage-turbo", "zimage"),
                "flux2-klein": ("flux2-klein-4b", "flux2-klein")}
CHOICES = "|".join(RANDOM_ARCHS)


class BenchError(ValueError):
    """The benchmark was asked for something it cannot do; the message says what."""


@dataclass(frozen=True)
class Workload:
    model: Path | None  # a diffusers folder, or None with `random_weights`
    random_weights: str | None  # "sd15" or "sdxl": the full-size architecture, random weights
    width: int
    height: int
    steps: int = 4
    guidance: float = 0.0
    count: int = 10  # pictures timed on each side
    batch: int = 1  # pictures per call of our engine (the baseline always makes one)
    warm_up: int = 1  # untimed calls on each side before the timed ones
    device: str = "auto"
    compile: bool = False  # our engine with torch.compile (generation.compile)
    seed: int = 0

    @classmethod
    def make(cls, model: str | None, random_weights: str | None, size: str | None,
             **options) -> Workload:
        """A checked workload; the size defaults to the model's native size."""
        if (model is None) == (random_weights is None):
            raise BenchError(f"give either --model DIR or --random-weights {CHOICES}")
        if random_weights is not None and random_weights not in RANDOM_ARCHS:
            raise BenchError(f"--random-weights {random_weights}: choose one of "
                             f"{', '.join(RANDOM_ARCHS)}")
        path = Path(model).expanduser() if model else None
        if path is not None:
            inspect_model(path)  # a ModelError says what is wrong with the folder
        if size:
            match = re.fullmatch(r"(\d+)x(\d+)", size)
            if not match:
                raise BenchError(f"--size {size}: give WIDTHxHEIGHT, like 1024x1024")
            width, height = int(match[1]), int(match[2])
        elif path is not None:
            width, height = native_size(path)
        else:
            width = height = NATIVE_SIDES[RANDOM_ARCHS[random_weights][1]]
        workload = cls(path, random_weights, width, height, **options)
        workload.check()
        return workload

    def check(self) -> None:
        try:
            placement = choose(self.device)
        except (ValueError, RuntimeError) as exc:  # unknown, or not on this machine
            raise BenchError(str(exc)) from None
        if not self.family.text_to_image:  # both sides time pictures made from a prompt
            raise BenchError(f"--model {self.model}: a {self.family.label} model only edits "
                             "pictures, and the bench times pictures made from a prompt; "
                             "give it a model that makes them")
        multiple = self.family.multiple
        if self.width <= 0 or self.height <= 0 or self.width % multiple \
                or self.height % multiple:
            raise BenchError(f"--size {self.width}x{self.height}: width and height are "
                             f"positive multiples of {multiple} for {self.family.label}")
        for name in ("steps", "count", "batch"):
            if getattr(self, name) < 1:
                raise BenchError(f"--{name} is at least 1, not {getattr(self, name)}")
        if self.warm_up < 0:
            raise BenchError(f"--warm-up is at least 0, not {self.warm_up}")
        if self.count % self.batch:
            raise BenchError(f"--count {self.count} is not a multiple of --batch {self.batch}")
        if self.random_weights is not None:
            # Both sides load in the placement's dtype on the CPU (float32), in 16 bits on a GPU.
            _check_room(self, placement.device, placement.dtype.itemsize)

    @property
    def family(self) -> Family:
        if self.model is not None:
            return family_of(self.model)
        return FAMILIES[RANDOM_ARCHS[self.random_weights][1]]

    @property
    def model_name(self) -> str:
        if self.model is not None:
            return str(self.model)
        return f"random-weight {self.random_weights} (full-size architecture: real FLOPs, " \
               "pictures are noise)"


def run_bench(workload: Workload, say: Callable[[str], None] = lambda _: None,
              baseline: bool = True) -> dict:
    """Measure the baseline (unless `baseline` is false), then our engine; return the report
    (plain data, JSON-ready): `config` and one row per side."""
    import torch

    quiet_libraries()  # no loading bars from the baseline's from_pretrained
    placement = choose(workload.device)
    device = placement.device
    half = device.startswith(("cuda", "mps"))
    # Plain diffusers as the model cards run it: float16 for the UNet families, bfloat16
    # for the transformer ones (whose activations overflow float16).
    baseline_dtype = (torch.float32 if not half else torch.float16
                      if workload.family.denoiser == "unet" else torch.bfloat16)
    base = None
    if baseline:
        base = _measure("diffusers", baseline_dtype, 1, workload, device,
                        lambda: _baseline(workload, device, baseline_dtype), say)
    ours = _measure("imgbot", placement.dtype, workload.batch, workload, device,
                    lambda: _ours(workload), say)
    if base:
        ours["ours_over_baseline"] = ours["pictures_per_second"] / base["pictures_per_second"]
        base["ours_over_baseline"] = 1.0
    config = bench_report.config(workload, device, placement.dtype_name,
                     _dtype_name(baseline_dtype) if base else None)
    return {"config": config, "rows": [ours, base] if base else [ours]}


def _check_room(w: Workload, device: str, element: int) -> None:
    """A BenchError, before anything is allocated, where the random-weight architecture's
    weights do not fit in `device`'s free memory (each side loads them once, the other
    side's freed first): on the CPU a model that does not fit gets the process killed."""
    from .pool import free_bytes
    from generation.testing.full_size import random_pipeline

    pipe = random_pipeline(RANDOM_ARCHS[w.random_weights][0], device="meta")
    needed = element * sum(p.numel() for m in pipe.components.values()
                           if hasattr(m, "parameters") for p in m.parameters())
    free = free_bytes(device)
    if free is not None and needed > free:
        raise BenchError(
            f"--random-weights {w.random_weights}: its weights take {needed / 1e9:.1f} GB "
            f"at {element} bytes a parameter, and {device} has {free / 1e9:.1f} GB free; run "
            "it where they fit (a GPU in bfloat16 takes half as much as the CPU's float32)")


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _baseline(w: Workload, device: str, dtype):
    """Plain diffusers: the pipeline, `.to(device)`, one picture per call."""
    import torch
    from diffusers import AutoPipelineForText2Image

    if w.model is not None:
        pipe = AutoPipelineForText2Image.from_pretrained(w.model, dtype=dtype,
                                                         local_files_only=True)
    else:
        from generation.testing.full_size import random_pipeline

        pipe = random_pipeline(RANDOM_ARCHS[w.random_weights][0], device=device, dtype=dtype,
                               seed=w.seed)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    family = w.family

    def call() -> list:
        # The guidance as the family's pipeline takes it (Qwen-Image's true_cfg_scale…).
        return pipe(prompt=PROMPT, num_inference_steps=w.steps, width=w.width,
                    height=w.height, generator=torch.Generator("cpu").manual_seed(w.seed),
                    **arguments(family, w.guidance, [""])).images

    return call, None


def load_ours(w: Workload) -> Engine:
    """Our engine for the workload, loaded: the folder, or the random-weight architecture."""
    if w.model is not None:
        engine = Engine(w.model, w.device, compile=w.compile)
        engine.load()
        return engine
    from generation.testing.full_size import random_pipeline

    placement = choose(w.device)  # built where and how the engine will run it
    pipe = random_pipeline(RANDOM_ARCHS[w.random_weights][0], device=placement.device,
                           dtype=placement.dtype, seed=w.seed)
    return from_pipeline(pipe, f"random-{w.random_weights}", w.device, w.compile)


def _ours(w: Workload):
    """Our engine through its public API, `batch` pictures per job."""
    engine = load_ours(w)
    job = Job(prompt=PROMPT, seed=w.seed, steps=w.steps, width=w.width, height=w.height,
              guidance=w.guidance, count=w.batch)
    return (lambda: engine.generate(job)), engine.unload


def _measure(side: str, dtype, batch: int, w: Workload, device: str, load, say) -> dict:
    import torch

    cuda = device.startswith("cuda")
    before = None if cuda else _process_peak()
    say(f"{side}: loading {w.model_name}")
    started = time.perf_counter()
    call, unload = load()
    load_seconds = time.perf_counter() - started
    for index in range(w.warm_up):
        say(f"{side}: warm-up {index + 1} of {w.warm_up}")
        call()
    calls = w.count // batch
    say(f"{side}: timing {bench_report.words(calls, 'call')} of "
        f"{bench_report.words(batch, 'picture')}")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(calls):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        images = call()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        if len(images) != batch:
            raise RuntimeError(f"{side} made {len(images)} pictures, not {batch}")
    peak = torch.cuda.max_memory_allocated(device) if cuda else _process_peak()
    del call, images
    if unload:
        unload()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    per_picture = sorted(s / batch for s in seconds)
    return {
        "side": side,
        "dtype": _dtype_name(dtype),
        "batch": batch,
        "pictures": w.count,
        "load_seconds": load_seconds,
        "call_seconds": seconds,
        "seconds_per_picture_median": statistics.median(per_picture),
        # nearest rank: the smallest time that at least 90 % of the pictures took no longer than
        "seconds_per_picture_p90": per_picture[math.ceil(0.9 * len(per_picture)) - 1],
        "pictures_per_second": w.count / sum(seconds),
        "peak_memory_bytes": peak,
        "peak_memory_at_most": peak == before,  # CPU: this side did not raise the peak
    }


def _process_peak() -> int:
    """The process's peak resident memory since it started, in bytes.

    It is not reset between sides (only Linux can, through /proc/self/clear_refs, and the
    timings after it looked disturbed when that was tried), so a side that did not raise it
    gets it as an upper bound ("≤")."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere
