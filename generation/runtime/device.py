"""Which device and precision a pipeline runs on."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "mps", "cpu")


@dataclass(frozen=True)
class Placement:
    device: str  # "cuda", "cuda:1", "mps" or "cpu"
    dtype_name: str  # "bfloat16", "float16" or "float32"

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def choose(requested: str = "auto", *, fp16_safe: bool = True) -> Placement:
    """Pick the device: `auto` takes CUDA, then MPS, then the CPU.

    Half precision on GPUs (bf16 where the card supports it, since it cannot overflow the
    way fp16 can); fp32 on the CPU, where half precision is slow or unsupported.

    `fp16_safe`: the model computes in float16 without overflowing. The UNet families do
    (SD 1.x and SDXL were trained and shipped in it); the transformer families (FLUX, Z-Image,
    Qwen-Image) do not: their activations pass float16's 65504 and the pictures come out
    NaN (black). On a CUDA card without native bf16 those get float32: slower, and twice the
    memory, but pictures.
    """
    import torch

    kind = requested.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"device {requested!r}: choose one of {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            requested = kind = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            requested = kind = "mps"
        else:
            requested = kind = "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA GPU")
        dtype = "bfloat16" if _native_bf16(requested) else "float16" if fp16_safe else "float32"
    elif kind == "mps":
        dtype = "float16"
    else:
        dtype = "float32"
    return Placement(requested, dtype)


def _native_bf16(device: str) -> bool:
    """Whether the asked card (not merely the current one) computes in bfloat16 natively.

    torch's own check says yes for older cards too (T4, V100) when it can merely *store*
    bfloat16 ("emulation"), where it runs many times slower than float16."""
    import torch

    with torch.cuda.device(torch.device(device)):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def make_current(device: str) -> None:
    """Make `device` the calling thread's current CUDA device (a no-op for any other).

    torch's current device is per thread and starts at cuda:0. Work that names no device
    uses it: group offload's copy stream, `torch.cuda.synchronize()` and `empty_cache()`,
    torchao's capability checks. A thread driving cuda:1 must say so before it loads or
    generates, or that work lands on, or asks about, another card. A bare "cuda" means
    the current device itself: nothing to set."""
    if not device.startswith("cuda:"):
        return
    import torch

    torch.cuda.set_device(torch.device(device))
