"""`imgbot demo`: the showcase on a throw-away local homeserver."""

from __future__ import annotations

from pathlib import Path

from bot.ops.logs import setup_logging


def add_parser(sub) -> None:
    demo = sub.add_parser("demo", help="the showcase on a throw-away local homeserver")
    demo.add_argument(
        "--model",
        help="a local diffusers folder (default: the configured one, "
        "else a random-weight test model)",
    )
    demo.add_argument("-c", "--config", help="take the model from this config file")
    demo.add_argument("--count", type=int, default=20, help="how many pictures (default 20)")
    demo.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    demo.set_defaults(run=cmd_demo)


def cmd_demo(args) -> int:
    from bot.local.demo import run_demo

    setup_logging("WARNING")
    return run_demo(model=args.model, count=args.count, out=Path(args.out), config=args.config)
