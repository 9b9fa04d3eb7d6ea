"""`imgbot make-test-model`: a tiny (or full-size) random-weight model folder."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.ops.logs import setup_logging


def add_parser(sub) -> None:
    from generation.testing.full_size import FULL_SIZE  # no torch: these only name the models
    from generation.testing.tiny import BUILDERS

    tm = sub.add_parser("make-test-model", help="write a tiny random-weight model folder")
    tm.add_argument(
        "dir", help="the model folder; for esrgan, the folder that gets test-esrgan-x4.safetensors"
    )
    tm.add_argument(
        "--arch",
        choices=(*BUILDERS, "esrgan"),
        default="sd",
        help=f"{', '.join(BUILDERS)} (diffusion models) or esrgan (an upscaler "
        "for generation.upscaler); default sd",
    )
    tm.add_argument(
        "--full-size",
        action="store_true",
        help=f"{', '.join(FULL_SIZE)}: the real architecture instead of a tiny "
        "one, in float16 (2.1 GB for sd to 20.5 GB for zimage), for GPU "
        "benchmarks",
    )
    tm.set_defaults(run=cmd_make_test_model)


def cmd_make_test_model(args) -> int:
    from generation.testing.full_size import FULL_SIZE
    from generation.testing.tiny import make_test_model
    from generation.testing.upscaler import make_test_upscaler

    setup_logging("WARNING")
    if args.full_size and args.arch not in FULL_SIZE:
        print(f"imgbot make-test-model: --full-size is for {', '.join(FULL_SIZE)}", file=sys.stderr)
        return 2
    if args.arch == "esrgan":
        path = make_test_upscaler(Path(args.dir) / "test-esrgan-x4.safetensors")
        print(
            f"{path}: a tiny random-weight ESRGAN 4x upscaler (a blocky enlargement with "
            "random texture); set generation.upscaler to this file"
        )
        return 0
    path = make_test_model(args.dir, args.arch, full_size=args.full_size)
    print(
        f"{path}: a {'full-size' if args.full_size else 'tiny'} random-weight {args.arch} "
        "model (its pictures are noise)"
    )
    return 0
