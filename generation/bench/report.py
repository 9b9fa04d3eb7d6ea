"""The bench's report: the configuration that makes a pasted result describe itself, the
table of figures, and the JSON beside it."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path


def config(w, device: str, ours_dtype: str, baseline_dtype: str | None) -> dict:
    import diffusers
    import torch
    import transformers

    if device.startswith("cuda"):
        hardware = torch.cuda.get_device_name(device)
        memory = "peak GPU memory allocated by torch during the timed calls (after warm-up)"
    else:
        hardware = f"{os.cpu_count()} cores, {_cpu_name()}, {torch.get_num_threads()} threads"
        memory = (
            "peak resident memory of the process, from its start to the end of that "
            "side (≤: not above the side measured before it)"
        )
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device,
        "hardware": hardware,
        "model": w.model_name,
        "model_short": w.short_name,
        "random_weights": w.random_weights,
        "size": f"{w.width}x{w.height}",
        "steps": w.steps,
        "guidance": w.guidance,
        "count": w.count,
        "batch": w.batch,
        "batches": list(w.batches),
        "warm_up": w.warm_up,
        "ours_dtype": ours_dtype,
        "ours_compile": w.compile,
        "ours_quantize": w.quantize,
        "baseline_dtype": baseline_dtype,
        "memory": memory,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def render(report: dict) -> str:
    """The configuration, then the table: what a pasted result needs to describe itself."""
    c = report["config"]
    v = c["versions"]
    baseline = (
        f"plain diffusers, {c['baseline_dtype']}, the same pictures per call"
        if c["baseline_dtype"]
        else "none (--no-baseline)"
    )
    batches = ", ".join(map(str, c["batches"]))
    lines = [
        f"imgbot bench, {c['date']}",
        f"  device    {c['device']} ({c['hardware']})",
        f"  model     {c['model']}",
        f"  workload  {c['size']}, {words(c['steps'], 'step')}, guidance {c['guidance']:g}, "
        f"{words(c['count'], 'picture')} a side and batch size, "
        f"{words(c['warm_up'], 'warm-up call')} before timing each",
        f"  ours      imgbot Engine, {c['ours_dtype']}, "
        f"compile {'on' if c['ours_compile'] else 'off'}, quantize {c['ours_quantize']}, "
        f"batches of {batches}, warmed up as the bot is first",
        f"  baseline  {baseline}",
        f"  memory    {c['memory']}",
        f"  versions  python {v['python']}, torch {v['torch']}, diffusers {v['diffusers']}, "
        f"transformers {v['transformers']}",
        "",
    ]
    header = (
        "side",
        "dtype",
        "batch",
        "pictures",
        "s/picture median",
        "s/picture p90",
        "pictures/s",
        "peak memory",
        "ours/baseline",
        "warm-up s",
    )
    table = [header]
    for row in report["rows"]:
        ratio = row.get("ours_over_baseline")
        table.append(
            (
                row["side"],
                row["dtype"],
                str(row["batch"]),
                str(row["pictures"]),
                f"{row['seconds_per_picture_median']:.3f}",
                f"{row['seconds_per_picture_p90']:.3f}",
                f"{row['pictures_per_second']:.3f}",
                "≤ " * row["peak_memory_at_most"] + _gib(row["peak_memory_bytes"]),
                "n/a" if ratio is None else f"{ratio:.2f}",
                _seconds(row.get("warm_up_seconds")),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(r[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def figure_line(config: dict, row: dict) -> str:
    """One measured row as one line of the GPU figures: model, size, steps, batch, seconds
    per picture, pictures per second, peak memory, ours/plain (and, for our engine, its
    warm-up as the bot's: with compile on, the compile's cost)."""
    ratio = row.get("ours_over_baseline")
    how = [row["dtype"]]
    if row["side"] == "imgbot":
        how += ["compiled"] * config["ours_compile"]
        how += [config["ours_quantize"]] * (config["ours_quantize"] != "none")
    parts = [
        config["model_short"],
        config["size"],
        words(config["steps"], "step"),
        f"batch {row['batch']}",
        f"{row['side']} ({', '.join(how)})",
        f"{row['seconds_per_picture_median']:.3f} s/picture",
        f"{row['pictures_per_second']:.3f} pictures/s",
        "peak " + "≤ " * row["peak_memory_at_most"] + _gib(row["peak_memory_bytes"]),
        "ours/plain " + ("n/a" if ratio is None else f"{ratio:.2f}"),
    ]
    if row.get("warm_up_seconds") is not None:
        parts.append(f"warm-up {row['warm_up_seconds']:.1f} s")
    return " | ".join(parts)


def words(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
