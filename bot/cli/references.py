"""`imgbot references index`: the reference pictures of the copy check, fingerprinted."""

from __future__ import annotations

import time
import sys

from bot.cli.common import settings_of
from bot.config.private import private_dir
from bot.text import plural


def add_parser(sub) -> None:
    refs = sub.add_parser("references", help="the reference pictures of the copy check")
    refs_sub = refs.add_subparsers(dest="action", required=True, metavar="ACTION")
    index = refs_sub.add_parser(
        "index",
        help="index compliance.references into state_dir",
        epilog="Exit status 1 when no picture of the folder can be "
        "matched (all too flat or unreadable).",
    )
    index.add_argument("-c", "--config", required=True, help="the YAML config file")
    refs.set_defaults(run=cmd_references)


def cmd_references(args) -> int:
    """`imgbot references index`: fingerprint the reference folder now, and say which
    pictures cannot be matched (unreadable, or too flat for perceptual hashes). Exit
    status 1 when none can be."""
    from generation.compliance.references import MIN_QUALITY, build

    settings = settings_of(args, secrets=False)  # it never logs in
    folder = settings.compliance.references
    if folder is None:
        print("imgbot references: compliance.references is not set in the config", file=sys.stderr)
        return 2
    private_dir(settings.state_dir)  # as the bot makes it: 0700, whatever the umask
    started = time.perf_counter()
    index = build(folder.expanduser().resolve())
    path = settings.state_dir / "references.json"
    index.save(path)
    print(
        f"indexed {plural(len(index.references), 'reference picture')} of {folder} "
        f"({index.usable} can be matched) in {time.perf_counter() - started:.1f} s into "
        f"{path}"
    )
    for reference in index.flat:
        print(
            f"  too flat to match (PDQ quality {reference.quality} < {MIN_QUALITY}), left "
            f"out: {reference.name}"
        )
    for name in index.unreadable:
        print(f"  not a picture that can be read, left out: {name}")
    if not index.usable:
        print(
            f"imgbot references: no picture of {folder} can be matched: the copy check "
            "would let every picture through",
            file=sys.stderr,
        )
        return 1
    return 0
