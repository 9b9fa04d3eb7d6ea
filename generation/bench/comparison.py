"""`imgbot bench`: our engine against plain diffusers, on the same model and workload, in
one run.

The baseline is diffusers as its documentation uses it: the pipeline moved `.to(device)`,
default attention, no compile, `batch` pictures a call (`num_images_per_prompt`). It runs
in our engine's precision (bfloat16 on a GPU that has it, float32 on the CPU), so that
ours/plain measures the engine, not the dtype. Ours is `Engine` as it is, called through its
public API with `batch` pictures per job. The baseline runs first, so that whatever global
switches our engine turns on cannot speed it up. Each side is loaded once, then for each of
the workload's batch sizes warmed up (not timed) and timed call by call, and freed before
the other; the GPU is synchronised around every timed call. Our engine is first warmed up
as the bot warms it (`Engine.warm_up`: one picture, then a batch of two when batches are
larger), and those seconds are a figure: with `compile` they are the compile's cost.
Peak memory is torch's on CUDA (per batch size), and the process's resident peak on the
CPU (see `_process_peak`).
"""

from __future__ import annotations

import gc
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImgbotError
from ..families.known import FAMILIES, Family
from ..families.model_folder import ModelError, NATIVE_SIDES, family_of, inspect_model, native_size
from ..job import Job
from ..models.engine import Engine, quiet_libraries
from ..models.pipeline_call import arguments
from ..runtime import quantize_offload
from ..runtime.device import choose
from . import report

PROMPT = "Albert Einstein, oil painting"
# --random-weights NAME → (testing.full_size.random_pipeline's architecture, the family)
RANDOM_ARCHS = {
    "sd15": ("sd15", "sd"),
    "sdxl": ("sdxl", "sdxl"),
    "flux1-schnell": ("flux1-schnell", "flux"),
    "zimage": ("zimage-turbo", "zimage"),
    "flux2-klein": ("flux2-klein-4b", "flux2-klein"),
}
CHOICES = "|".join(RANDOM_ARCHS)


class BenchError(ImgbotError):
    """The benchmark was asked for something it cannot do; the message says what."""


@dataclass(frozen=True)
class Workload:
    model: Path | None  # a diffusers folder, or None with `random_weights`
    random_weights: str | None  # "sd15" or "sdxl": the full-size architecture, random weights
    width: int
    height: int
    steps: int = 4
    guidance: float = 0.0
    count: int = 10  # pictures timed on each side, at each batch size
    batches: tuple[int, ...] = (1,)  # pictures per call, each size timed in turn
    warm_up: int = 1  # untimed calls on each side before the timed ones, at each batch size
    device: str = "auto"
    compile: bool = False  # our engine with torch.compile (generation.compile)
    quantize: str = "none"  # our engine's denoiser quantized (generation.quantize)
    seed: int = 0

    @classmethod
    def make(
        cls, model: str | None, random_weights: str | None, size: str | None, **options
    ) -> Workload:
        """A checked workload; the size defaults to the model's native size."""
        if (model is None) == (random_weights is None):
            raise BenchError(f"give either --model DIR or --random-weights {CHOICES}")
        if random_weights is not None and random_weights not in RANDOM_ARCHS:
            raise BenchError(
                f"--random-weights {random_weights}: choose one of {', '.join(RANDOM_ARCHS)}"
            )
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
        batch = options.pop("batch", None)  # one size, or several: --batch 1,4
        if batch is not None:
            options["batches"] = (batch,) if isinstance(batch, int) else tuple(batch)
        workload = cls(path, random_weights, width, height, **options)
        workload.check()
        return workload

    @property
    def batch(self) -> int:
        """The largest batch: what the bot's queue batches up to (`max_batch`)."""
        return max(self.batches)

    def check(self) -> None:
        try:
            placement = self.placement
        except (ValueError, RuntimeError) as exc:  # unknown, or not on this machine
            raise BenchError(str(exc)) from None
        if not self.family.text_to_image:  # both sides time pictures made from a prompt
            raise BenchError(
                f"--model {self.model}: a {self.family.label} model only edits "
                "pictures, and the bench times pictures made from a prompt; "
                "give it a model that makes them"
            )
        multiple = self.family.multiple
        if self.width <= 0 or self.height <= 0 or self.width % multiple or self.height % multiple:
            raise BenchError(
                f"--size {self.width}x{self.height}: width and height are "
                f"positive multiples of {multiple} for {self.family.label}"
            )
        if not self.batches or len(set(self.batches)) != len(self.batches):
            raise BenchError(f"--batch {','.join(map(str, self.batches))}: give each size once")
        for name, value in (
            ("steps", self.steps),
            ("count", self.count),
            *(("batch", b) for b in self.batches),
        ):
            if value < 1:
                raise BenchError(f"--{name} is at least 1, not {value}")
        if self.warm_up < 0:
            raise BenchError(f"--warm-up is at least 0, not {self.warm_up}")
        for batch in self.batches:
            if self.count % batch:
                raise BenchError(f"--count {self.count} is not a multiple of --batch {batch}")
        try:
            quantize_offload.options(self.quantize, "auto")
            quantize_offload.check(self.quantize, placement)  # torchao there, fp8 on this card
        except (ValueError, ModelError) as exc:
            raise BenchError(str(exc).replace("generation.quantize", "--quantize")) from None
        if self.random_weights is not None:
            # Both sides load in the placement's dtype on the CPU (float32), in 16 bits on a GPU.
            _check_room(self, placement.device, placement.dtype.itemsize)

    @property
    def placement(self):
        """Where and in what precision our engine runs the workload, as `Engine.load` picks
        them (float32, not float16, for a transformer family on a card without bf16)."""
        return choose(self.device, fp16_safe=self.family.denoiser == "unet")

    @property
    def family(self) -> Family:
        if self.model is not None:
            return family_of(self.model)
        return FAMILIES[RANDOM_ARCHS[self.random_weights][1]]

    @property
    def short_name(self) -> str:
        """The model in a figure line: the random-weight architecture, or the folder's name."""
        if self.model is not None:
            return self.model.name
        return RANDOM_ARCHS[self.random_weights][0] + " (random weights)"

    @property
    def model_name(self) -> str:
        if self.model is not None:
            return str(self.model)
        return (
            f"random-weight {self.random_weights} (full-size architecture: real FLOPs, "
            "pictures are noise)"
        )


def run_bench(
    workload: Workload,
    say: Callable[[str], None] = lambda _: None,
    baseline: bool = True,
    baseline_rows: list[dict] | None = None,
    on_row: Callable[[dict, dict], None] = lambda _config, _row: None,
) -> dict:
    """Measure the baseline (unless `baseline` is false), then our engine, at each of the
    workload's batch sizes; return the report (plain data, JSON-ready): `config` and one row
    per side and batch size. `baseline_rows`, with `baseline` false: the baseline's rows of
    an earlier report of the same workload (`baseline_of`), for ours/plain. `on_row` gets
    the config and each row as soon as it is measured (a run cut short keeps what it had)."""
    quiet_libraries()  # no loading bars from the baseline's from_pretrained
    placement = workload.placement
    device = placement.device
    config = report.config(
        workload,
        device,
        placement.dtype_name,
        placement.dtype_name if baseline or baseline_rows else None,
    )
    base: list[dict] = []
    if baseline:
        base = _measure(
            "diffusers",
            placement.dtype,
            workload,
            device,
            lambda: _baseline(workload, device, placement.dtype),
            say,
            lambda row: on_row(config, _ratio(row, row)),
        )
    elif baseline_rows:
        base = baseline_rows
    by_batch = {row["batch"]: row for row in base}
    ours = _measure(
        "imgbot",
        placement.dtype,
        workload,
        device,
        lambda: _ours(workload),
        say,
        lambda row: on_row(config, _ratio(row, by_batch.get(row["batch"]))),
    )
    return {"config": config, "rows": ours + ([] if baseline_rows and not baseline else base)}


def _ratio(row: dict, base: dict | None) -> dict:
    """`row` with ours/plain of pictures per second, against the baseline of its batch."""
    row["ours_over_baseline"] = (
        row["pictures_per_second"] / base["pictures_per_second"] if base else None
    )
    return row


def baseline_of(report: dict, workload: Workload) -> list[dict]:
    """The baseline's rows of an earlier report (its --json), checked to be of the same
    workload and device. Raises BenchError saying what differs."""
    c = report.get("config", {})
    mine = {
        "model": workload.model_name,
        "size": f"{workload.width}x{workload.height}",
        "steps": workload.steps,
        "guidance": workload.guidance,
    }
    differ = [
        f"{key} {c.get(key)!r}, not {value!r}" for key, value in mine.items() if c.get(key) != value
    ]
    if differ:
        raise BenchError(
            f"--baseline-from: that report is of another workload ({'; '.join(differ)})"
        )
    rows = [row for row in report.get("rows", []) if row.get("side") == "diffusers"]
    if not rows:
        raise BenchError("--baseline-from: that report has no baseline (it ran --no-baseline)")
    return rows


def _check_room(w: Workload, device: str, element: int) -> None:
    """A BenchError, before anything is allocated, where the random-weight architecture's
    weights do not fit in `device`'s free memory (each side loads them once, the other
    side's freed first): on the CPU a model that does not fit gets the process killed."""
    from ..models.pool import free_bytes
    from generation.testing.full_size import random_pipeline

    pipe = random_pipeline(RANDOM_ARCHS[w.random_weights][0], device="meta")
    needed = element * sum(
        p.numel()
        for m in pipe.components.values()
        if hasattr(m, "parameters")
        for p in m.parameters()
    )
    free = free_bytes(device)
    if free is not None and needed > free:
        raise BenchError(
            f"--random-weights {w.random_weights}: its weights take {needed / 1e9:.1f} GB "
            f"at {element} bytes a parameter, and {device} has {free / 1e9:.1f} GB free; run "
            "it where they fit (a GPU in bfloat16 takes half as much as the CPU's float32)"
        )


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _baseline(w: Workload, device: str, dtype):
    """Plain diffusers: the pipeline, `.to(device)`, `batch` pictures a call."""
    import torch
    from diffusers import AutoPipelineForText2Image

    if w.model is not None:
        pipe = AutoPipelineForText2Image.from_pretrained(
            w.model, dtype=dtype, local_files_only=True
        )
    else:
        from generation.testing.full_size import random_pipeline

        pipe = random_pipeline(
            RANDOM_ARCHS[w.random_weights][0], device=device, dtype=dtype, seed=w.seed
        )
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    family = w.family

    def call(batch: int) -> list:
        # The guidance as the family's pipeline takes it (Qwen-Image's true_cfg_scale…).
        return pipe(
            prompt=PROMPT,
            num_inference_steps=w.steps,
            width=w.width,
            height=w.height,
            num_images_per_prompt=batch,
            generator=torch.Generator("cpu").manual_seed(w.seed),
            **arguments(family, w.guidance, [""]),
        ).images

    return call, None, None


def load_ours(w: Workload) -> Engine:
    """Our engine for the workload, loaded: the folder, or the random-weight architecture."""
    if w.model is not None:
        engine = Engine(w.model, w.device, compile=w.compile, quantize=w.quantize, offload="none")
        engine.load()
        return engine
    from generation.testing.full_size import random_pipeline

    placement = w.placement  # built where and how the engine will run it
    pipe = random_pipeline(
        RANDOM_ARCHS[w.random_weights][0],
        device=placement.device,
        dtype=placement.dtype,
        seed=w.seed,
    )
    return Engine.from_pipeline(
        pipe, f"random-{w.random_weights}", w.device, w.compile, quantize=w.quantize
    )


def _ours(w: Workload):
    """Our engine through its public API, `batch` pictures per job, warmed up as the bot
    warms it (models/recipe.py: one picture, then a batch of two where batches are larger)."""
    engine = load_ours(w)

    def call(batch: int) -> list:
        return engine.generate(
            Job(
                prompt=PROMPT,
                seed=w.seed,
                steps=w.steps,
                width=w.width,
                height=w.height,
                guidance=w.guidance,
                count=batch,
            )
        )

    def warm() -> float:
        return engine.warm_up(w.width, w.height, guidance=w.guidance, batch=w.batch)

    return call, engine.unload, warm


def _measure(
    side: str, dtype, w: Workload, device: str, load, say, measured: Callable[[dict], None]
) -> list[dict]:
    """Load the side once, warm it up, then time each batch size in turn: one row each,
    given to `measured` as soon as it is made."""
    import torch

    cuda = device.startswith("cuda")
    before = None if cuda else _process_peak()
    say(f"{side}: loading {w.model_name}")
    started = time.perf_counter()
    call, unload, warm = load()
    load_seconds = time.perf_counter() - started
    warm_seconds = None
    if warm is not None:
        say(f"{side}: warming up as the bot does" + (" (compiling)" if w.compile else ""))
        warm_seconds = warm()
    rows = []
    for batch in w.batches:
        first_call = None
        for index in range(w.warm_up):
            say(f"{side}: warm-up {index + 1} of {w.warm_up} at batch {batch}")
            started = time.perf_counter()
            call(batch)
            if cuda:
                torch.cuda.synchronize()
            first_call = first_call or time.perf_counter() - started
        calls = w.count // batch
        say(f"{side}: timing {report.words(calls, 'call')} of {report.words(batch, 'picture')}")
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        seconds = []
        for _ in range(calls):
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            images = call(batch)
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - started)
            if len(images) != batch:
                raise RuntimeError(f"{side} made {len(images)} pictures, not {batch}")
        del images
        peak = torch.cuda.max_memory_allocated(device) if cuda else _process_peak()
        per_picture = sorted(s / batch for s in seconds)
        row = {
            "side": side,
            "dtype": _dtype_name(dtype),
            "batch": batch,
            "pictures": w.count,
            "load_seconds": load_seconds,
            # ours: Engine.warm_up as the bot runs it (with compile: the compile's cost)
            "warm_up_seconds": warm_seconds,
            # the first untimed call at this batch size (a recompile shows here)
            "first_call_seconds": first_call,
            "call_seconds": seconds,
            "seconds_per_picture_median": statistics.median(per_picture),
            # nearest rank: the smallest time that at least 90 % of the pictures took no
            # longer than
            "seconds_per_picture_p90": per_picture[math.ceil(0.9 * len(per_picture)) - 1],
            "pictures_per_second": w.count / sum(seconds),
            "peak_memory_bytes": peak,
            "peak_memory_at_most": peak == before,  # CPU: this side did not raise the peak
        }
        rows.append(row)
        measured(row)
    del call
    if unload:
        unload()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return rows


def _process_peak() -> int:
    """The process's peak resident memory since it started, in bytes.

    It is not reset between sides (only Linux can, through /proc/self/clear_refs, and the
    timings after it looked disturbed when that was tried), so a side that did not raise it
    gets it as an upper bound ("≤")."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere
