"""`python -m generation.bench.upscale --bench`: one upscale timed, with a given upscaler
file or the random-weight test ESRGAN (kept apart from upscale.py, which product code
loads, so that the upscaler never imports the test models)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PIL import Image

from ..postprocess.upscale import FACTORS, Upscaler
from ..testing.upscaler import make_test_upscaler


def bench(
    path: Path | None = None, side: int = 1024, factor: int = 4, device: str = "cpu"
) -> float:
    """Seconds to upscale a `side`² picture by `factor` (the model loaded beforehand, not
    counted); without `path`, with the tiny random-weight test upscaler."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        upscaler = Upscaler(
            path or make_test_upscaler(Path(tmp) / "test-esrgan-x4.safetensors"), device
        )
        upscaler.load()
    # Noise rather than a flat colour: the same work, and nothing a kernel could skip.
    picture = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    )
    started = time.perf_counter()
    upscaler.upscale(picture, factor)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m generation.bench.upscale", description="time an upscale"
    )
    parser.add_argument(
        "--bench",
        action="store_true",
        required=True,
        help="upscale one picture and print how long it took",
    )
    parser.add_argument(
        "--model", type=Path, help="an upscaler file (default: the random-weight test ESRGAN ×4)"
    )
    parser.add_argument("--side", type=int, default=1024, help="picture side (default 1024)")
    parser.add_argument("--factor", type=int, choices=FACTORS, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    seconds = bench(args.model, args.side, args.factor, args.device)
    import torch

    print(
        f"{args.side}x{args.side} x{args.factor} with "
        f"{args.model.name if args.model else 'the test ESRGAN (16 filters, 1 block)'} on "
        f"{args.device} ({torch.get_num_threads()} threads): {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
