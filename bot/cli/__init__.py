"""`imgbot`: the command line. Each sub-command builds what it needs and nothing more."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from bot.config import ConfigError, Settings, load_settings
from bot.ops.logs import setup_logging
from bot.text import plural

log = logging.getLogger("imgbot")


# Exit statuses of `imgbot run`, for the service manager: only 1 (and the watchdog's 3) is
# worth a restart; a wrong config or a refused login stays wrong until someone fixes it
# (the systemd unit has RestartPreventExitStatus=2).
EXIT_RETRY = 1
EXIT_FIX_CONFIG = 2


def _settings(args) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(f"imgbot: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FIX_CONFIG) from None


# ---- sub-commands ---------------------------------------------------------------------------

def cmd_run(args) -> int:
    from bot.app import DeviceFault, ServiceDown, run_bot
    from bot.matrix.cross_signing import CrossSigningFailed
    from bot.matrix.messages import NETWORK_ERRORS
    from bot.matrix.session import LoginFailed
    from bot.matrix.sync import TokenRejected

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    try:
        # The login is checked before the model is loaded, so a wrong password or an
        # unreachable homeserver is reported in seconds.
        asyncio.run(run_bot(settings))
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        log.error("%s", exc.code)  # a model folder that is not one
        return EXIT_FIX_CONFIG
    except (LoginFailed, TokenRejected) as exc:
        log.error("%s", exc)
        return EXIT_FIX_CONFIG
    except CrossSigningFailed as exc:
        log.error("cross-signing: %s", exc)
        return EXIT_RETRY if exc.retry else EXIT_FIX_CONFIG
    except (DeviceFault, ServiceDown) as exc:
        log.error("%s", exc)
        return EXIT_RETRY
    except NETWORK_ERRORS as exc:
        log.error("cannot reach the homeserver at %s: %s (is it running? is "
                  "matrix.homeserver_url right?)", settings.matrix.homeserver_url,
                  f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return EXIT_RETRY
    log.info("stopped")
    return 0


def cmd_generate(args, extra: list[str]) -> int:
    from generation.compliance import Compliance
    from generation.compliance.checks import SigningFailed
    from generation.engine import Engine, ModelError
    from generation.job import GenerationError
    from generation.png import encode_png
    from generation.studio import Studio

    from bot.chat.commands import Generate, UsageError, parse
    from bot import version
    from bot.config import ComplianceSettings, GenerationSettings, LimitSettings
    from bot.chat.resolve import Catalogue, resolve
    from bot.chat.styles import catalogue

    settings = _settings(args) if args.config else None
    defaults = settings.generation if settings else GenerationSettings()
    limits = settings.limits if settings else LimitSettings()
    # The chat's own parser, so the options and their limits are exactly the chat's.
    command = parse("!img " + " ".join([args.prompt, *extra]), "!img", limits)
    if not isinstance(command, Generate):
        message = command.message if isinstance(command, UsageError) else "give a prompt"
        print(f"imgbot generate: {message}", file=sys.stderr)
        return 2
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        print(f"imgbot generate: {out} must end in .png (it writes PNG files)", file=sys.stderr)
        return 2
    if not out.parent.is_dir():
        print(f"imgbot generate: the folder {out.parent} does not exist", file=sys.stderr)
        return 2
    model = args.model or defaults.model
    if model is None:
        print("imgbot generate: give --model DIR (a local diffusers folder) or -c config.yaml",
              file=sys.stderr)
        return 2
    setup_logging("WARNING")
    try:
        engine = Engine(model, args.device or defaults.device)
    except ModelError as exc:
        print(f"imgbot generate: {exc}", file=sys.stderr)
        return 2
    styles = settings.style_catalogue if settings else catalogue()
    job = resolve(command, defaults, limits, Catalogue(
        engine.name, {engine.name: engine.native_size(engine.name)}, styles))
    if isinstance(job, UsageError):
        print(f"imgbot generate: {job.message}", file=sys.stderr)
        return 2
    if command.strength is not None:
        print("imgbot generate: --strength needs a picture to start from; in chat, reply to "
              "one", file=sys.stderr)
        return 2
    # The config's compliance section holds here as in chat: the same checks, marks and
    # signature, so a picture made from the shell is no less marked than one from a room.
    try:
        compliance = Compliance.from_settings(
            settings.compliance if settings else ComplianceSettings(),
            settings.state_dir if settings else Path("."), version())
    except Exception as exc:
        print(f"imgbot generate: the compliance checks cannot be loaded: {exc}",
              file=sys.stderr)
        return 2
    if (term := compliance.blocklist.blocked(job.prompt)) is not None:
        print(f"imgbot generate: the prompt contains the blocked term {term!r} "
              "(compliance.blocklist), so nothing was made", file=sys.stderr)
        return 2
    engine.load()
    started = time.perf_counter()
    try:
        images = Studio(engine).generate(job)  # --enhance, as in chat
    except GenerationError as exc:
        print(f"imgbot generate: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    params = job.parameters(engine.name)
    withheld = 0
    for index, image in enumerate(images):
        # With --n, the second picture goes to out-2.png and so on.
        path = out if index == 0 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")
        seed = job.seed + index
        verdict = compliance.screen(image, job.prompt)
        if verdict.reasons:
            said = {"block": "not written", "send": "written (on_match: log)"}.get(
                verdict.action, verdict.action)
            print(f"{path}: {said}: {'; '.join(verdict.reasons)}", file=sys.stderr)
        if verdict.withheld:
            withheld += 1
            continue
        public = compliance.public_parameters({**params, "seed": seed})
        try:
            path.write_bytes(encode_png(verdict.image, public, compliance.signing(public)))
        except SigningFailed as exc:
            print(f"imgbot generate: {path}: {exc}", file=sys.stderr)
            return 1
        print(f"{path}: seed {seed}, {job.steps} steps, {job.width}x{job.height}")
    print(f"{plural(len(images), 'picture')} in {seconds:.2f} s on "
          f"{engine.placement.device}" + (f", {withheld} withheld by the compliance checks"
                                          if withheld else ""))
    return 1 if withheld else 0


def cmd_usage(args) -> int:
    from bot.store import db as database
    from bot.store import usage

    settings = _settings(args)
    try:
        since = usage.parse_since(args.since)
    except ValueError as exc:
        print(f"imgbot usage: --since {exc}", file=sys.stderr)
        return 2
    path = settings.state_dir / "imgbot.sqlite3"
    if not path.exists():
        print(f"imgbot usage: no usage log at {path} yet", file=sys.stderr)
        return 1

    async def read():
        # Read-only: a review never migrates, locks or changes the bot's database.
        db = await database.connect_readonly(path)
        try:
            return await usage.query(db, since=since, user=args.user, room=args.room)
        finally:
            await db.close()

    try:
        rows = asyncio.run(read())
    except database.SchemaMismatch as exc:
        print(f"imgbot usage: {path}: {exc}", file=sys.stderr)
        return 1
    if args.by:
        print(usage.render_grouped(rows, args.by, args.format))
    else:
        print(usage.render(rows, args.format))
    return 0


def cmd_check(args) -> int:
    from bot.ops.check import run_checks

    setup_logging("WARNING")  # so that a warning (a secret file others can read) shows
    return run_checks(args.config, load=args.load)


def cmd_verify(args) -> int:
    """Each file's AI marker, C2PA state and watermark. Exit status 0 when every file is
    marked and no manifest is Invalid (with --trust: every manifest is Trusted), 1 when
    one is not, 2 when a file or the trust root cannot be read."""
    try:
        from generation.compliance.verify import INVALID, TRUSTED, verify
    except ImportError as exc:
        print(f"imgbot verify: needs the compliance extra ({exc})", file=sys.stderr)
        return 2
    trust = None
    if args.trust:
        from cryptography import x509

        try:
            trust = Path(args.trust).read_text(encoding="utf-8")
            x509.load_pem_x509_certificates(trust.encode())
        except OSError as exc:
            print(f"imgbot verify: cannot read {args.trust} ({exc.strerror})", file=sys.stderr)
            return 2
        except (UnicodeDecodeError, ValueError):
            print(f"imgbot verify: {args.trust} holds no PEM certificate (give the company "
                  "CA's root certificate)", file=sys.stderr)
            return 2
    status = 0
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            print(f"{name}: cannot read it ({exc.strerror})")
            status = 2
            continue
        report = verify(data, trust, watermark=not args.no_watermark)
        print(name)
        if not report.picture:
            print("  not a picture imgbot can read (PNG, JPEG, WebP, …)")
            status = 2
            continue
        print("\n".join(report.lines()))
        good = report.ai_marked and report.c2pa != INVALID and (
            trust is None or report.c2pa == TRUSTED)
        status = max(status, 0 if good else 1)
    return status


def cmd_references(args) -> int:
    """`imgbot references index`: fingerprint the reference folder now, and say which
    pictures cannot be matched (unreadable, or too flat for perceptual hashes). Exit
    status 1 when none can be."""
    from generation.compliance.references import MIN_QUALITY, build

    settings = _settings(args)
    folder = settings.compliance.references
    if folder is None:
        print("imgbot references: compliance.references is not set in the config",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    index = build(folder.expanduser().resolve())
    path = settings.state_dir / "references.json"
    index.save(path)
    print(f"indexed {plural(len(index.references), 'reference picture')} of {folder} "
          f"({index.usable} can be matched) in {time.perf_counter() - started:.1f} s into "
          f"{path}")
    for reference in index.flat:
        print(f"  too flat to match (PDQ quality {reference.quality} < {MIN_QUALITY}), left "
              f"out: {reference.name}")
    for name in index.unreadable:
        print(f"  not a picture that can be read, left out: {name}")
    if not index.usable:
        print(f"imgbot references: no picture of {folder} can be matched: the copy check "
              "would let every picture through", file=sys.stderr)
        return 1
    return 0


def cmd_make_test_model(args) -> int:
    from generation.test_model import make_test_model, make_test_upscaler

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


def cmd_bench(args) -> int:
    from generation.bench import BenchError, Workload, render, run_bench, write_json
    from generation.engine import ModelError
    from generation.job import GenerationError

    setup_logging("WARNING")
    out = Path(args.json) if args.json else None
    if out and not out.parent.is_dir():
        print(f"imgbot bench: the folder {out.parent} does not exist", file=sys.stderr)
        return 2
    try:
        workload = Workload.make(args.model, args.random_weights, args.size, steps=args.steps,
                                 guidance=args.guidance, count=args.count, batch=args.batch,
                                 warm_up=args.warm_up, device=args.device,
                                 compile=args.compile)
    except (BenchError, ModelError) as exc:
        print(f"imgbot bench: {exc}", file=sys.stderr)
        return 2
    if args.through_matrix:
        return _bench_through_matrix(workload, out)
    try:
        report = run_bench(workload, say=lambda line: print(line, file=sys.stderr, flush=True),
                           baseline=not args.no_baseline)
    except GenerationError as exc:  # out of GPU memory, in our engine
        print(f"imgbot bench: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    if out:
        write_json(report, out)
    return 0


def _bench_through_matrix(workload, out: Path | None = None) -> int:
    """The workload as chat commands through a local Synapse and the bot (batched by the
    bot's queue up to --batch pictures)."""
    from generation.bench import load_ours

    from bot.local.bench_matrix import through_matrix

    print("Loading the model and starting a throw-away Synapse…", file=sys.stderr)
    engine = load_ours(workload)
    engine.warm_up(workload.width, workload.height, workload.steps,
                   guidance=workload.guidance, batch=workload.batch)
    figures = through_matrix(engine, count=workload.count, width=workload.width,
                             height=workload.height, steps=workload.steps,
                             guidance=workload.guidance, max_batch=workload.batch)
    print(f"{workload.model_name}, {workload.width}x{workload.height}, {workload.steps} "
          f"steps, guidance {workload.guidance:g}, {workload.count} pictures, batches of up "
          f"to {workload.batch}, on {engine.placement.device}")
    print(figures.table())
    if out:
        out.write_text(json.dumps({
            "workload": {**dataclasses.asdict(workload), "model": workload.model_name},
            **dataclasses.asdict(figures),
            "pictures_per_second": figures.pictures_per_second,
            "engine_pictures_per_second": figures.engine_pictures_per_second,
            "idle_share": figures.idle_share}, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_demo(args) -> int:
    from bot.local.demo import run_demo

    setup_logging("WARNING")
    return run_demo(model=args.model, count=args.count, out=Path(args.out), config=args.config)


# ---- the parser -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgbot",
        description="A Matrix chat bot that makes pictures with local diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the bot")
    run.add_argument("-c", "--config", required=True, help="the YAML config file")

    demo = sub.add_parser("demo", help="the showcase on a throw-away local homeserver")
    demo.add_argument("--model", help="a local diffusers folder (default: the configured one, "
                                      "else a random-weight test model)")
    demo.add_argument("-c", "--config", help="take the model from this config file")
    demo.add_argument("--count", type=int, default=20, help="how many pictures (default 20)")
    demo.add_argument("--out", default="demo-output", help="output folder (default demo-output)")

    gen = sub.add_parser("generate", help="one picture without chat, with the chat's options",
                         epilog="Options as in chat: --seed N --steps N --size WxH --ar W:H "
                                "--n N --style NAME --guidance X --no TEXT")
    gen.add_argument("prompt")
    gen.add_argument("-o", "--output", default="out.png", help="PNG file to write (.png)")
    gen.add_argument("--model", help="a local diffusers folder")
    gen.add_argument("--device", help="auto, cuda, mps or cpu")
    gen.add_argument("-c", "--config", help="take model, defaults, limits and the compliance "
                                               "checks and marks from this config")

    use = sub.add_parser("usage", help="review the usage log")
    use.add_argument("-c", "--config", required=True)
    use.add_argument("--since", default="7d", help="30m, 24h, 7d, 4w or all (default 7d)")
    use.add_argument("--user", help="only this user ID")
    use.add_argument("--room", help="only this room ID")
    use.add_argument("--format", choices=("table", "csv", "json"), default="table")
    use.add_argument("--by", choices=("user", "room", "day"),
                     help="one line per user, room or day instead of one per job")

    chk = sub.add_parser(
        "check", help="check a config: model folders, homeserver, login, state_dir, "
                      "encryption, compliance",
        epilog="One line per check: ok, FAIL with the reason, or skip when it needs one that "
               "failed. Leaves no trace: a password login is logged out again. Exit status: "
               "0 all ok, 1 a check failed, 2 the config cannot be loaded.")
    chk.add_argument("-c", "--config", required=True, help="the YAML config file")
    chk.add_argument("--load", action="store_true",
                     help="also load the default model onto its device (slow for real models)")

    tm = sub.add_parser("make-test-model", help="write a tiny random-weight model folder")
    tm.add_argument("dir", help="the model folder; for esrgan, the folder that gets "
                                "test-esrgan-x4.safetensors")
    tm.add_argument("--arch", choices=("sd", "sdxl", "esrgan"), default="sd",
                    help="sd, sdxl (diffusion models) or esrgan (an upscaler for "
                         "generation.upscaler); default sd")
    tm.add_argument("--full-size", action="store_true",
                    help="sd and sdxl: the real SD 1.5 / SDXL architecture instead of a tiny "
                         "one, in float16 (2.1 / 6.9 GB), for GPU benchmarks")

    bench = sub.add_parser(
        "bench", help="time the engine against plain diffusers on the same workload",
        epilog="Prints the configuration and a table: seconds per picture (median, p90), "
               "pictures per second, peak memory and ours/baseline, for our engine and for "
               "plain diffusers (half precision on a GPU, one picture per call).")
    source = bench.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a local diffusers folder")
    source.add_argument("--random-weights", choices=("sd15", "sdxl"),
                        help="the full-size architecture with random weights, built in memory")
    bench.add_argument("--size", help="WxH (default: the model's native size)")
    bench.add_argument("--steps", type=int, default=4, help="default 4")
    bench.add_argument("--guidance", type=float, default=0.0, help="default 0")
    bench.add_argument("--count", type=int, default=10, help="pictures timed a side (default 10)")
    bench.add_argument("--batch", type=int, default=1,
                       help="pictures per call of our engine (default 1; the baseline makes one)")
    bench.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    bench.add_argument("--warm-up", type=int, default=1,
                       help="untimed calls a side before the timed ones (default 1)")
    bench.add_argument("--compile", action="store_true",
                       help="our engine with torch.compile, as generation.compile: true")
    bench.add_argument("--no-baseline", action="store_true", help="time our engine only")
    bench.add_argument("--through-matrix", action="store_true",
                       help="send the workload as chat commands through a throw-away local "
                            "Synapse and the bot (needs imgbot[demo]); reports pictures per "
                            "second through the bot beside the engine's own, the worker's "
                            "idle share while jobs waited, and each reply's overhead")
    bench.add_argument("--json", metavar="FILE", help="also write the figures to FILE")

    ver = sub.add_parser(
        "verify", help="a picture's AI-generated marker, C2PA state and watermark",
        epilog="C2PA: Trusted (chains to --trust), Valid but untrusted, Invalid (changed "
               "after signing) or none. Exit status 0 when every file is marked and none is "
               "Invalid (with --trust: all Trusted), 1 otherwise, 2 when a file cannot be read "
               "or is not a picture, or the --trust file holds no certificate.")
    ver.add_argument("files", nargs="+", metavar="FILE")
    ver.add_argument("--trust", metavar="ROOT.pem",
                     help="the company CA's root certificate (PEM; more roots may follow, "
                          "e.g. the time-stamp authority's)")
    ver.add_argument("--no-watermark", action="store_true",
                     help="do not read the watermark (it takes a second or so)")

    refs = sub.add_parser("references", help="the reference pictures of the copy check")
    refs_sub = refs.add_subparsers(dest="action", required=True, metavar="ACTION")
    index = refs_sub.add_parser("index", help="index compliance.references into state_dir",
                                epilog="Exit status 1 when no picture of the folder can be "
                                       "matched (all too flat or unreadable).")
    index.add_argument("-c", "--config", required=True, help="the YAML config file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "generate":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "generate":
        return cmd_generate(args, extra)
    handlers = {"run": cmd_run, "demo": cmd_demo, "usage": cmd_usage, "check": cmd_check,
                "make-test-model": cmd_make_test_model, "bench": cmd_bench,
                "verify": cmd_verify, "references": cmd_references}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
