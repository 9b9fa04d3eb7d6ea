"""`imgbot bench`: our engine timed against plain diffusers, or through chat."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bot.ops.logs import setup_logging
from generation.bench.comparison import RANDOM_ARCHS


def add_parser(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="time the engine against plain diffusers on the same workload",
        epilog="Prints the configuration and a table: seconds per picture (median, p90), "
        "pictures per second, peak memory, ours/baseline and our engine's warm-up "
        "(as the bot's; with --compile, the compile's cost), for our engine and for "
        "plain diffusers (in our engine's precision, the same pictures per call), at "
        "each batch size.",
    )
    source = bench.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a local diffusers folder")
    source.add_argument(
        "--random-weights",
        choices=tuple(RANDOM_ARCHS),
        help="the full-size architecture with random weights, built in memory",
    )
    bench.add_argument("--size", help="WxH (default: the model's native size)")
    bench.add_argument("--steps", type=int, default=4, help="default 4")
    bench.add_argument("--guidance", type=float, default=0.0, help="default 0")
    bench.add_argument(
        "--count",
        type=int,
        default=10,
        help="pictures timed a side at each batch size (default 10)",
    )
    bench.add_argument(
        "--batch",
        type=_batches,
        default=(1,),
        metavar="N[,N…]",
        help="pictures per call, on both sides; several sizes (1,4) are each "
        "timed on one load (default 1)",
    )
    bench.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    bench.add_argument(
        "--warm-up",
        type=int,
        default=1,
        help="untimed calls a side before the timed ones (default 1)",
    )
    bench.add_argument(
        "--compile",
        action="store_true",
        help="our engine with torch.compile, as generation.compile: true",
    )
    bench.add_argument(
        "--quantize",
        choices=("none", "int8", "fp8"),
        default="none",
        help="our engine's denoiser quantized, as generation.quantize (needs "
        "imgbot[quantize]; fp8 a GPU of compute capability 8.9 or newer)",
    )
    bench.add_argument("--no-baseline", action="store_true", help="time our engine only")
    bench.add_argument(
        "--baseline-from",
        metavar="FILE",
        help="with --no-baseline: ours/baseline against the baseline rows of "
        "an earlier --json FILE of the same workload",
    )
    bench.add_argument(
        "--through-matrix",
        action="store_true",
        help="send the workload as chat commands through a throw-away local "
        "Synapse and the bot (needs imgbot[demo]); reports pictures per "
        "second through the bot beside the engine's own, the worker's "
        "idle share while jobs waited, and each reply's overhead, with the "
        "bot's buttons off and on (--buttons)",
    )
    bench.add_argument(
        "--buttons",
        choices=("off", "on", "both"),
        default="both",
        help="with --through-matrix: the bot's reaction buttons under each picture "
        "(chat.buttons) off, on (its default ones), or both, one run after the "
        "other, each on its own homeserver (default both)",
    )
    bench.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="ray: the workload made by GPU workers on the Ray cluster that "
        "the config's generation.ray names, through the bot's queue "
        "(with --through-matrix, through chat too); needs --model and -c",
    )
    bench.add_argument("-c", "--config", help="with --backend ray: the config file")
    bench.add_argument(
        "--workers",
        type=int,
        help="with --backend ray: how many workers (default: generation.ray.workers of the config)",
    )
    bench.add_argument(
        "--json",
        metavar="FILE",
        help="also write the figures to FILE (rewritten as each is measured)",
    )
    bench.add_argument(
        "--figures",
        metavar="FILE",
        help="append one line per figure to FILE as soon as it is measured "
        "(model, size, steps, batch, s/picture, pictures/s, peak memory, "
        "ours/plain)",
    )
    bench.set_defaults(run=cmd_bench)


def _batches(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give N or N,N,… (1,4)") from None


def cmd_bench(args) -> int:
    from generation.bench.comparison import BenchError, Workload, baseline_of, run_bench
    from generation.bench.report import figure_line, render, write_json
    from generation.families.model_folder import ModelError
    from generation.job import GenerationError

    setup_logging("WARNING")
    out = Path(args.json) if args.json else None
    figures = Path(args.figures) if args.figures else None
    for path in (out, figures):
        if path and not path.parent.is_dir():
            print(f"imgbot bench: the folder {path.parent} does not exist", file=sys.stderr)
            return 2
    if args.baseline_from and not args.no_baseline:
        print("imgbot bench: --baseline-from goes with --no-baseline", file=sys.stderr)
        return 2
    if args.buttons != "both" and not args.through_matrix:
        print("imgbot bench: --buttons goes with --through-matrix", file=sys.stderr)
        return 2
    try:
        workload = Workload.make(
            args.model,
            args.random_weights,
            args.size,
            steps=args.steps,
            guidance=args.guidance,
            count=args.count,
            batch=args.batch,
            warm_up=args.warm_up,
            device=args.device,
            compile=args.compile,
            quantize=args.quantize,
        )
        earlier = (
            baseline_of(_read_report(Path(args.baseline_from)), workload)
            if args.baseline_from
            else None
        )
    except (BenchError, ModelError) as exc:
        print(f"imgbot bench: {exc}", file=sys.stderr)
        return 2
    if args.backend == "ray":
        return _bench_on_cluster(workload, args)
    if args.through_matrix:
        return _bench_through_matrix(workload, out, figures, _buttons(args.buttons))
    rows: list[dict] = []

    def measured(config: dict, row: dict) -> None:  # kept at once: a run cut short has it
        rows.append(row)
        if out:
            write_json({"config": config, "rows": rows}, out)
        if figures:
            with figures.open("a", encoding="utf-8") as file:
                file.write(figure_line(config, row) + "\n")

    try:
        report = run_bench(
            workload,
            say=lambda line: print(line, file=sys.stderr, flush=True),
            baseline=not args.no_baseline,
            baseline_rows=earlier,
            on_row=measured,
        )
    except GenerationError as exc:  # out of GPU memory, in our engine
        print(f"imgbot bench: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    if out:
        write_json(report, out)
    return 0


def _read_report(path: Path) -> dict:
    from generation.bench.comparison import BenchError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"--baseline-from {path}: {exc}") from None


def _bench_on_cluster(workload, args) -> int:
    """The workload made by the Ray cluster's workers, through the queue (or through chat)."""
    from bot.cluster import catalogue_of, spec_of
    from bot.config import ConfigError, load_settings
    from generation.cluster.bench import run
    from bot.local.bench_matrix import through_matrix

    if workload.model is None or not args.config:
        print(
            "imgbot bench: --backend ray needs --model DIR (on every GPU host) and -c "
            "CONFIG (its generation.ray names the cluster)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"imgbot bench: {exc}", file=sys.stderr)
        return 2
    ray = settings.generation.ray.model_dump()
    if args.workers:
        ray["workers"] = args.workers
    generation = {
        "model": workload.model,
        "size": f"{workload.width}x{workload.height}",
        "steps": workload.steps,
        "guidance": workload.guidance,
        "max_batch": workload.batch,
        "backend": "ray",
        "ray": ray,
        "warm_up": True,
    }
    settings = settings.model_copy(update={"generation": type(settings.generation)(**generation)})
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    where = f"{ray['workers']} Ray worker(s) of {ray['resources']}"
    if args.through_matrix:
        runs = []
        for buttons in _buttons(args.buttons):
            say(
                f"Starting a throw-away Synapse (buttons {_on_off(buttons)}); the workers "
                "load on the cluster…"
            )
            runs.append(
                through_matrix(None, **_through(workload), generation=generation, buttons=buttons)
            )
        print(_headline(workload, where))
        print(_tables(runs))
        return 0
    spec = spec_of(settings)
    figures = run(spec, catalogue_of(spec.recipe), **_through(workload), say=say)
    print(_headline(workload, where))
    print(figures.table())
    return 0


def _buttons(choice: str) -> tuple[bool, ...]:
    """--buttons as the runs to make: off first, then on."""
    return {"off": (False,), "on": (True,), "both": (False, True)}[choice]


def _on_off(buttons: bool) -> str:
    return "on" if buttons else "off"


def _tables(runs: list) -> str:
    """Each run's table under a line naming its buttons; with both, the two figures the
    issue keeps (through chat as a share of the engine's rate, the median reply overhead)
    side by side."""
    parts = []
    for figures in runs:
        parts += [f"buttons {_on_off(bool(figures.buttons))}:", figures.table()]
    if len(runs) > 1:
        parts += [
            "buttons off, then on (one run after the other):",
            "  through the bot / engine   "
            + " / ".join(f"{figures.through_share:.1%}" for figures in runs),
            "  median reply overhead      "
            + " / ".join(f"{figures.median_overhead * 1000:.0f} ms" for figures in runs),
            "  button reactions seen      "
            + " / ".join(f"{f.button_reactions} of {f.buttons_expected}" for f in runs),
        ]
    return "\n".join(parts)


def _through(workload) -> dict:
    """The workload as the runs through chat and through the cluster take it."""
    return dict(
        count=workload.count,
        width=workload.width,
        height=workload.height,
        steps=workload.steps,
        guidance=workload.guidance,
        max_batch=workload.batch,
    )


def _headline(workload, where: str) -> str:
    """The line above a run's table: what was made, and where."""
    return (
        f"{workload.model_name}, {workload.width}x{workload.height}, {workload.steps} "
        f"steps, guidance {workload.guidance:g}, {workload.count} pictures, batches of up "
        f"to {workload.batch}, {where}"
    )


def _bench_through_matrix(
    workload,
    out: Path | None = None,
    lines: Path | None = None,
    buttons: tuple[bool, ...] = (False, True),
) -> int:
    """The workload as chat commands through a local Synapse and the bot (batched by the
    bot's queue up to --batch pictures), once for each of `buttons` (off, on), back to back
    on one loaded engine, each run on a fresh homeserver."""
    from generation.bench.comparison import load_ours

    from bot.local.bench_matrix import through_matrix

    print("Loading the model and starting a throw-away Synapse…", file=sys.stderr)
    engine = load_ours(workload)
    # As the bot warms up (generation/models/recipe.py): one picture, then a batch of two.
    engine.warm_up(
        workload.width, workload.height, guidance=workload.guidance, batch=workload.batch
    )
    how = ", ".join(
        [engine.placement.dtype_name]
        + ["compiled"] * workload.compile
        + [workload.quantize] * (workload.quantize != "none")
    )
    runs = []
    for each in buttons:
        print(f"Through chat with buttons {_on_off(each)}…", file=sys.stderr, flush=True)
        figures = through_matrix(engine, **_through(workload), buttons=each)
        runs.append(figures)
        if out:  # rewritten after each run: a run cut short keeps what it had
            _write_runs(out, workload, runs)
        if lines:
            with lines.open("a", encoding="utf-8") as file:
                file.write(_figure_line(workload, how, figures) + "\n")
    print(_headline(workload, f"on {engine.placement.device}"))
    print(_tables(runs))
    return 0


def _run_json(figures) -> dict:
    return {
        **dataclasses.asdict(figures),
        "pictures_per_second": figures.pictures_per_second,
        "engine_pictures_per_second": figures.engine_pictures_per_second,
        "through_share": figures.through_share,
        "median_reply_overhead_seconds": figures.median_overhead,
        "idle_share": figures.idle_share,
        "buttons_expected": figures.buttons_expected,
    }


def _write_runs(out: Path, workload, runs: list) -> None:
    """The last run's figures at the top level (as before there were buttons; with both,
    the run with buttons on), every run's under "runs", in the order they ran."""
    out.write_text(
        json.dumps(
            {
                "workload": {**dataclasses.asdict(workload), "model": workload.model_name},
                **_run_json(runs[-1]),
                "runs": [_run_json(figures) for figures in runs],
            },
            indent=2,
            default=str,
        )
        + "\n",
        encoding="utf-8",
    )


def _figure_line(workload, how: str, figures) -> str:
    """One --figures line for a run through chat."""
    return " | ".join(
        [
            workload.short_name,
            f"{workload.width}x{workload.height}",
            f"{workload.steps} steps",
            f"batch up to {workload.batch}",
            f"through chat ({how}, buttons {_on_off(bool(figures.buttons))}), "
            f"{figures.pictures} commands",
            f"{1 / figures.pictures_per_second:.3f} s/picture",
            f"{figures.pictures_per_second:.3f} pictures/s",
            f"through the bot / engine {figures.through_share:.1%}",
            f"median reply overhead {figures.median_overhead * 1000:.0f} ms",
        ]
        + [f"{figures.button_reactions} of {figures.buttons_expected} button reactions seen"]
        * bool(figures.buttons)
    )
