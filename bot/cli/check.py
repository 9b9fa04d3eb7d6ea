"""`imgbot check`: a config checked as the start would use it, one line per check."""

from __future__ import annotations

from bot.ops.logs import setup_logging


def add_parser(sub) -> None:
    chk = sub.add_parser(
        "check",
        help="check a config: model folders, VAE, fast decoder, upscaler, "
        "the Ray cluster (backend ray), homeserver, login, state_dir and its "
        "free space, encryption, compliance",
        epilog="One line per check: ok, FAIL with the reason, WARN for a risk that does not "
        "stop the bot (a Ray node or a spawned bridge of the bot's user, plain http "
        "to another host, little free space in state_dir), or skip when it needs one "
        "that failed. Everything `run` loads at its start is checked the same way. Leaves "
        "no trace: a password login is logged out again, and a missing state_dir is "
        "not made (with compliance.references, the reference index is brought up to date "
        "in state_dir/references.json, as the start would). A rate-limited login fails at "
        "once, saying when to try again. "
        "Exit status: 0 all ok, 1 a check failed, 2 the config cannot be loaded.",
    )
    chk.add_argument("-c", "--config", required=True, help="the YAML config file")
    chk.add_argument(
        "--load",
        action="store_true",
        help="also load the default model onto its device (slow for real models)",
    )
    chk.set_defaults(run=cmd_check)


def cmd_check(args) -> int:
    from bot.ops.check import run_checks

    setup_logging("WARNING")  # so that a warning (a secret file others can read) shows
    return run_checks(args.config, load=args.load)
