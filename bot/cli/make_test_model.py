"""`imgbot make-test-model`: a tiny (or full-size) random-weight model folder."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.ops.logs import setup_logging


def add_parser(sub) -> None:
    tm = sub.add_parser("make-test-model", help="write a tiny random-weight model folder")
    tm.add_argument("dir", help="the model folder; for esrgan, the folder that gets "
                                "test-esrgan-x4.safetensors")
    tm.add_argument("--arch", choices=("sd", "sdxl", "esrgan"), default="sd",
                    help="sd, sdxl (diffusion models) or esrgan (an upscaler for "
                         "generation.upscaler); default sd")
    tm.add_argument("--full-size", action="store_true",
                    help="sd and sdxl: the real SD 1.5 / SDXL architecture instead of a tiny "
                         "one, in float16 (2.1 / 6.9 GB), for GPU benchmarks")
    tm.set_defaults(run=cmd_make_test_model)


def cmd_make_test_model(args) -> int:
    from generation.testing.tiny import make_test_model
    from generation.testing.upscaler import make_test_upscaler

    setup_logging("WARNING")
    if args.arch == "esrgan" and args.full_size:
        print("imgbot make-test-model: --full-size is for sd and sdxl", file=sys.stderr)
        return 2
    if args.arch == "esrgan":
        path = make_test_upscaler(Path(args.dir) / "test-esrgan-x4.safetensors")
        print(f"{path}: a tiny random-weight ESRGAN 4x upscaler (a blocky enlargement with "
              "random texture); set generation.upscaler to this file")
        return 0
    path = make_test_model(args.dir, args.arch, full_size=args.full_size)
    print(f"{path}: a {'full-size' if args.full_size else 'tiny'} random-weight {args.arch} "
          "model (its pictures are noise)")
    return 0

