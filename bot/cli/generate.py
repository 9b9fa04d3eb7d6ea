"""`imgbot generate`: one picture without chat, with the chat's options and checks."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bot.cli.common import settings_of
from bot.config.private import private_dir
from bot.ops.logs import setup_logging
from bot.text import plural


def add_parser(sub) -> None:
    gen = sub.add_parser(
        "generate",
        help="one picture without chat, with the chat's options",
        epilog="Options as in chat: --seed N --steps N --size WxH --ar W:H "
        "--n N --style NAME --guidance X --no TEXT",
    )
    gen.add_argument("prompt")
    gen.add_argument("-o", "--output", default="out.png", help="PNG file to write (.png)")
    gen.add_argument("--model", help="a local diffusers folder")
    gen.add_argument("--device", help="auto, cuda, mps or cpu")
    gen.add_argument(
        "-c",
        "--config",
        help="take model, defaults, limits and the compliance checks and marks from this config",
    )
    gen.set_defaults(run=cmd_generate)


def cmd_generate(args, extra: list[str]) -> int:
    from generation.compliance import Compliance
    from generation.compliance.signing import SigningError
    from generation.families.model_folder import ModelError
    from generation.job import GenerationError
    from generation.models.engine import Engine
    from generation.postprocess.finishing_runner import FinishingRunner
    from generation.postprocess.png import encode_png

    from bot.chat.language.commands import Generate, UsageError
    from bot.chat.language.prompts import parse_generate
    from bot import version
    from bot.config import ComplianceSettings, GenerationSettings, LimitSettings
    from bot.chat.language.resolve import Catalogue, resolve
    from bot.chat.language.styles import catalogue, configured

    settings = settings_of(args, secrets=False) if args.config else None  # no login
    defaults = settings.generation if settings else GenerationSettings()
    limits = settings.limits if settings else LimitSettings()
    # The chat's own prompt parser, so the options and their limits are exactly the chat's
    # (and a prompt may start with a word that is a sub-command in chat).
    command = parse_generate(" ".join([args.prompt, *extra]), limits)
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
        print(
            "imgbot generate: give --model DIR (a local diffusers folder) or -c config.yaml",
            file=sys.stderr,
        )
        return 2
    setup_logging("WARNING")
    try:
        engine = Engine(model, args.device or defaults.device, **engine_options(settings, model))
    except ModelError as exc:
        print(f"imgbot generate: {exc}", file=sys.stderr)
        return 2
    family = engine.family_of()
    if not family.text_to_image:
        # imgbot generate has no picture to start from; the bot edits with such a model.
        print(
            f"imgbot generate: {model} is a {family.label} model, which only edits "
            "pictures: it cannot make one from a prompt. Give --model a model that makes "
            "pictures from prompts; this one edits in chat, as generation.edit_model.",
            file=sys.stderr,
        )
        return 2
    styles = configured(settings.styles) if settings else catalogue()
    job = resolve(
        command,
        defaults,
        limits,
        Catalogue(
            engine.name,
            {engine.name: engine.native_size(engine.name)},
            styles,
            families={engine.name: family},
        ),
    )
    if isinstance(job, UsageError):
        print(f"imgbot generate: {job.message}", file=sys.stderr)
        return 2
    if command.strength is not None:
        print(
            "imgbot generate: --strength needs a picture to start from; in chat, reply to one",
            file=sys.stderr,
        )
        return 2
    # The config's compliance section holds here as in chat: the same checks, marks and
    # signature, so a picture made from the shell is no less marked than one from a room.
    if settings and settings.compliance.references is not None:
        private_dir(settings.state_dir)  # its reference index goes there, as the bot's does
    try:
        compliance = Compliance.from_settings(
            settings.compliance if settings else ComplianceSettings(),
            settings.state_dir if settings else Path("."),
            version(),
        )
    except Exception as exc:
        print(f"imgbot generate: the compliance checks cannot be loaded: {exc}", file=sys.stderr)
        return 2
    if (term := compliance.blocklist.blocked(job.prompt)) is not None:
        print(
            f"imgbot generate: the prompt contains the blocked term {term!r} "
            "(compliance.blocklist), so nothing was made",
            file=sys.stderr,
        )
        return 2
    try:
        engine.load()
    except ModelError as exc:  # the config's quantize on this card, a LoRA that does not fit
        print(f"imgbot generate: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        images = FinishingRunner(engine).generate(job)  # --enhance, as in chat
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
                verdict.action, verdict.action
            )
            print(f"{path}: {said}: {'; '.join(verdict.reasons)}", file=sys.stderr)
        if verdict.withheld:
            withheld += 1
            continue
        public = compliance.public_parameters({**params, "seed": seed})
        try:
            path.write_bytes(encode_png(verdict.image, public, compliance.signing(public)))
        except SigningError as exc:
            print(f"imgbot generate: {path}: {exc}", file=sys.stderr)
            return 1
        print(f"{path}: seed {seed}, {job.steps} steps, {job.width}x{job.height}")
    print(
        f"{plural(len(images), 'picture')} in {seconds:.2f} s on "
        f"{engine.placement.device}"
        + (f", {withheld} withheld by the compliance checks" if withheld else "")
    )
    return 1 if withheld else 0


def engine_options(settings, model) -> dict:
    """The engine options of the config, as the bot builds its engines (quantize, offload,
    the VAE and the fast decoder); none without a config. Its LoRAs only for its own default
    model, the one they are loaded onto; and no compile, which costs minutes and pays off
    only over many pictures."""
    if settings is None:
        return {}
    generation = settings.generation
    options = generation.engine_options(settings.state_dir)
    same = (
        generation.model is not None
        and Path(model).expanduser().resolve() == generation.model.expanduser().resolve()
    )
    return {**options, "compile": False, "loras": options["loras"] if same else {}}
