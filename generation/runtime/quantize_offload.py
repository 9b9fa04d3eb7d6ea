"""What makes a model fit its card, applied once after loading and before the speed-ups: a
quantized denoiser (`generation.quantize`, through torchao) and diffusers' offloading
(`generation.offload`) for models larger than the card's free memory.

`fit` takes the place of `pipe.to(device)`: an offloaded pipeline is never moved whole, its
hooks bring each part over when it runs. No torch at import: `imgbot check` asks
`torchao_problem` without loading anything.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import struct
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from ..families.known import Family
from ..families.model_folder import ModelError, component_weights
from .device import Placement
from .memory import cuda_free

log = logging.getLogger(__name__)

QUANTIZE = ("none", "fp8", "int8")
OFFLOAD = ("auto", "none", "model", "group")
INSTALL = "pip install 'imgbot[quantize]'"
# torchao's fp8 kernels need the fp8 tensor cores of Ada and Hopper (L4, L40S, RTX 4090, H100).
FP8_CAPABILITY = (8, 9)
# The bytes one value takes in each load precision, and in a safetensors file's own dtypes.
LOAD_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_FLOATS = {"F64", "F32", "F16", "BF16"}
_FILE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2}


def working_room(weights: int) -> int:
    """Memory a picture needs beside the weights: its activations (1-3 GiB at 1024² for these
    models, more for a batch, which the engine splits when it does not fit) and the
    allocator's slack; the CUDA context is already out of the free figure."""
    return 2**30 + weights // 10


def gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


@dataclass(frozen=True)
class Fit:
    """What `fit` did: its notes for the speed line, and what the speed-ups must know."""

    quantize: str = "none"  # "none", "int8", "fp8", or "folder" (the folder's own)
    offload: str = "none"  # "none", "model" or "group"
    notes: tuple[str, ...] = ("quantize: none", "offload: none")

    @property
    def unfused(self) -> str:
        """Why QKV projections must stay apart ("": they may be fused): torchao's tensors
        cannot be concatenated; a fused layer made after group offloading has no hook to
        bring it onto the GPU; and model offloading moves each weight on its own, so that
        the q, k and v weights that speedups.py points into the fused one would be copied
        onto the card beside it, twice the projections' memory there, for every picture."""
        if self.quantize != "none":
            return "quantized"
        return {"group": "group offload", "model": "model offload"}.get(self.offload, "")


def options(quantize: str, offload: str) -> tuple[str, str]:
    """The two settings, checked (the config's own check says the same to the operator)."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize {quantize!r}: choose one of {', '.join(QUANTIZE)}")
    if offload not in OFFLOAD:
        raise ValueError(f"offload {offload!r}: choose one of {', '.join(OFFLOAD)}")
    return quantize, offload


def torchao_missing() -> bool:
    return importlib.util.find_spec("torchao") is None


def torchao_problem(quantize: str) -> str | None:
    """Why `generation.quantize` cannot work here (torchao is missing), or None."""
    if quantize == "none" or not torchao_missing():
        return None
    return f"{quantize} needs torchao: {INSTALL}"


def torchao_version() -> str | None:
    return None if torchao_missing() else version("torchao")


def folder_quantization(folder: Path, denoiser: str) -> str | None:
    """How the folder's denoiser was saved quantized ("torchao Int8WeightOnlyConfig",
    "bitsandbytes 4-bit", …), from its config.json's `quantization_config`; None: it was not."""
    try:
        config = json.loads((Path(folder) / denoiser / "config.json").read_text())
    except (OSError, ValueError):
        return None
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(quantization, dict):
        return None
    method, kind = quantization.get("quant_method", "unknown"), quantization.get("quant_type")
    if isinstance(kind, dict):  # diffusers' TorchAoConfig: {"default": {"_type": …}}
        first = next(iter(kind.values()), None)
        kind = first.get("_type") if isinstance(first, dict) else None
    if method == "bitsandbytes":
        kind = "4-bit" if quantization.get("load_in_4bit") else "8-bit"
    return f"{method} {kind}" if isinstance(kind, str) else str(method)


def on_card(folder: Path, load_bytes: int, quantized: str | None = None) -> dict[str, int]:
    """The bytes each component's weights take once loaded with `load_bytes` per floating
    value (a bf16 load halves fp32 files), from the safetensors headers; the component named
    `quantized` with its linear weights (the 2-D ones) at one byte a value. A .bin file
    counts at its size on disk."""
    sizes = {}
    for component, files in component_weights(folder).items():
        if not files:  # the scheduler, the tokenizer
            continue
        total = 0
        for file in files:
            header = _safetensors_header(file)
            if header is None:
                total += file.stat().st_size
                continue
            for name, tensor in header.items():
                shape, dtype = tensor["shape"], tensor["dtype"]
                if component == quantized and len(shape) == 2 and name.endswith("weight"):
                    each = 1
                else:
                    each = load_bytes if dtype in _FLOATS else _FILE_BYTES.get(dtype, 1)
                total += math.prod(shape) * each
        sizes[component] = total
    return sizes


def weights_on_card(
    folder: Path, family: Family, placement: Placement, quantize: str
) -> dict[str, int]:
    """`on_card` for the model in `folder` as `fit` loads it: in the placement's precision,
    its denoiser quantized where `quantize` applies (not to a folder quantized already)."""
    quantized = quantize != "none" and folder_quantization(folder, family.denoiser) is None
    return on_card(folder, LOAD_BYTES[placement.dtype_name], family.denoiser if quantized else None)


def need(sizes: dict[str, int], offload: str) -> int:
    """The bytes that must be free on the card for weights of `sizes` to load as `offload`
    says, working room included: what `choose_offload` compares with the free memory.
    `auto` counts the whole model, which it loads when that fits; its offloading is for a
    card that cannot make that room."""
    if offload in ("auto", "none"):
        whole = sum(sizes.values())
        return whole + working_room(whole)
    if offload == "model":
        largest = max(sizes.values(), default=0)
        return largest + working_room(largest)
    return working_room(0)  # group: a layer at a time


def _safetensors_header(file: Path) -> dict | None:
    if file.suffix != ".safetensors":
        return None
    try:
        with open(file, "rb") as stream:
            (length,) = struct.unpack("<Q", stream.read(8))
            if length > file.stat().st_size - 8:  # not a safetensors file: no huge read
                return None
            header = json.loads(stream.read(length))
    except (OSError, ValueError, struct.error):
        return None
    return {k: v for k, v in header.items() if k != "__metadata__"}


def choose_offload(
    asked: str, device: str, sizes: dict[str, int], free: int | None
) -> tuple[str, str]:
    """The offloading to use ("none", "model" or "group") and its note, for weights of
    `sizes` (bytes by component, as on the card) and `free` bytes free on `device`.

    `auto`, on CUDA: none when everything fits with working room; else model offload (one
    component on the card at a time) when the largest fits; else group offload (layer by
    layer). Other devices share their memory with the CPU: nothing to offload to."""
    if not device.startswith("cuda"):
        return "none", f"offload: off (for CUDA; this is {device})"
    if asked != "auto":
        return asked, "offload: none" if asked == "none" else f"offload: {asked} (configured)"
    whole = sum(sizes.values())
    if free is None:
        return "none", f"offload: none (weights {gib(whole)}; free memory not known)"
    if need(sizes, "none") <= free:
        return "none", f"offload: none (weights {gib(whole)} fit in {gib(free)} free on {device})"
    room = f"+ {gib(working_room(whole))} working room > {gib(free)} free on {device}"
    largest, biggest = max((size, name) for name, size in sizes.items())
    if need(sizes, "model") <= free:
        return "model", f"offload: model (weights {gib(whole)} {room})"
    return "group", (
        f"offload: group (weights {gib(whole)} {room}, and the {biggest} alone, "
        f"{gib(largest)}, does not fit either)"
    )


def check(quantize: str, placement: Placement) -> None:
    """Refuse, before any weights load, a quantization this device cannot run."""
    problem = torchao_problem(quantize)
    if problem is not None:
        raise ModelError(f"generation.quantize: {problem}")
    if quantize != "fp8":
        return
    where = f"this is {placement.device}"
    if placement.device.startswith("cuda"):
        import torch

        capability = torch.cuda.get_device_capability(placement.device)
        if tuple(capability) >= FP8_CAPABILITY:
            return
        where = (
            f"{placement.device} is a {torch.cuda.get_device_name(placement.device)} "
            f"(compute capability {capability[0]}.{capability[1]})"
        )
    raise ModelError(
        "generation.quantize: fp8 needs an NVIDIA GPU of compute capability "
        f"8.9 or newer (L4, L40S, RTX 4090, H100), and {where}; use int8 or "
        "none there"
    )


def device_problem(quantize: str, device: str) -> str | None:
    """Why `quantize` cannot run on `device` (`auto` resolved as the load resolves it), in
    the words of `check` less its key; None where it can, or the device itself is wrong
    (the load says so). For `imgbot check` and the start, before anything loads."""
    if quantize != "fp8":  # int8 runs anywhere
        return None
    from .device import choose

    try:
        check(quantize, choose(device))
    except ModelError as exc:
        return str(exc).removeprefix("generation.quantize: ")
    except (ValueError, RuntimeError):  # no such device here
        return None
    return None


def fit(
    pipe,
    folder: Path,
    family: Family,
    placement: Placement,
    name: str,
    *,
    quantize: str = "none",
    offload: str = "auto",
    compiled: bool = False,
) -> Fit:
    """Quantize the denoiser (`quantize`, after `check`) and place the pipeline on the
    device, whole or offloaded (`choose_offload`); what was done, for the speed line.
    `compiled`: the speed-ups will torch.compile it (`quantize_denoiser`)."""
    denoiser, own = family.denoiser, folder_quantization(folder, family.denoiser)
    if own is not None and quantize != "none":
        log.warning(
            "generation.quantize %s is not applied to %s: its %s is already quantized (%s)",
            quantize,
            name,
            denoiser,
            own,
        )
    how = "none" if own is not None else quantize
    sizes = weights_on_card(folder, family, placement, quantize)
    choice, offload_note = choose_offload(
        offload, placement.device, sizes, free_memory(placement.device)
    )
    if how != "none":
        # On the card layer by layer where the quantized denoiser fits there (faster, and
        # its full-precision weights never all are); on the CPU under group offloading.
        on = placement.device if placement.device.startswith("cuda") and choice != "group" else None
        # speed.compile_models compiles nothing under group offloading.
        quantize_denoiser(getattr(pipe, denoiser), how, on, compiled=compiled and choice != "group")
    place(pipe, choice, placement)
    note = (
        f"quantize: {how} (torchao, {denoiser})"
        if how != "none"
        else f"quantize: the folder's own ({own}, {denoiser})"
        if own
        else "quantize: none"
    )
    return Fit("folder" if own else how, choice, (note, offload_note))


def quantize_denoiser(
    module, how: str, device: str | None = None, *, compiled: bool = False
) -> None:
    """torchao's weight quantization of every linear layer of `module`, in place: int8
    weights (any device), or fp8 weights and activations (fp8 matrix products).

    `compiled`: `module` will be torch.compiled. Only then may torchao set its recommended
    inductor options (coordinate descent tuning, fusing int8 products with their scales):
    they are process-wide, and would change how every other model of the process compiles
    (the pool's others, the upscaler) for a model that is never compiled."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
        quantize_,
    )

    # Row-wise fp8 scales: what torchao recommends for diffusion transformers on H100
    # (per-tensor scales lose more of the weights' range).
    config = (
        Int8WeightOnlyConfig(set_inductor_config=compiled)
        if how == "int8"
        else Float8DynamicActivationFloat8WeightConfig(
            granularity=PerRow(), set_inductor_config=compiled
        )
    )
    quantize_(module, config, device=device)


def place(pipe, offload: str, placement: Placement) -> None:
    """The pipeline on the device whole (`none`), or kept in CPU memory with diffusers'
    hooks bringing it over: a whole model at a time (`model`), or layer by layer with the
    next layer's copy on a side stream while one runs (`group`)."""
    import torch

    device = placement.device
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "group":
        pipe.enable_group_offload(
            onload_device=torch.device(device),
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=device.startswith("cuda"),
        )  # CPU: no streams
    else:
        pipe.to(device)


def free_memory(device: str) -> int | None:
    """Bytes free for new weights on a CUDA device now (memory.cuda_free); None elsewhere."""
    return cuda_free(device) if device.startswith("cuda") else None
