"""`imgbot`: the command line. One module a sub-command, each adding its own parser and
building what it needs and nothing more (the heavy imports wait inside each command);
`main` only dispatches. The top wing: it may import everything below it.
"""

from __future__ import annotations

import argparse

from bot.cli import bench, check, demo, generate, make_test_model, references, run, usage, verify
from bot.ops.logs import setup_logging  # importable from here as before

__all__ = ["build_parser", "main", "setup_logging"]

# In the order `imgbot --help` lists them.
COMMANDS = (run, demo, generate, usage, check, make_test_model, bench, verify, references)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgbot",
        description="A Matrix chat bot that makes pictures with local diffusion models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "generate":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "generate":
        return args.run(args, extra)
    return args.run(args)
