"""How much GPU memory the process holds, for the metrics endpoint, and how much is free
for new weights, for fitting a model and the model pool.

Read from torch's caching allocator, which keeps these counters on the host: reading them
neither synchronises with the GPU nor waits for the running job.
"""

from __future__ import annotations

import sys


def gpu_memory() -> dict[str, int] | None:
    """Bytes `allocated` (by live tensors) and `reserved` (held by the caching allocator),
    summed over all CUDA devices; None when there is nothing to report.

    Never imports torch itself, and never initialises CUDA: a bot that runs its model on the
    CPU (or has not loaded it yet) must not create a CUDA context just to be scraped.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    devices = range(torch.cuda.device_count())
    return {
        "allocated": sum(torch.cuda.memory_allocated(i) for i in devices),
        "reserved": sum(torch.cuda.memory_reserved(i) for i in devices),
    }


def cuda_free(device: str) -> int:
    """Bytes free for new tensors on the CUDA `device`: what the driver has free, and the
    blocks torch's caching allocator has reserved but holds no tensor in (free to torch,
    though not to the driver that `mem_get_info` asks)."""
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
