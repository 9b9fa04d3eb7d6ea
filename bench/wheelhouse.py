#!/usr/bin/env python3
"""A folder of wheels from which imgbot installs on a machine with no internet.

Run it on a machine that has the internet (and pip), in the repository:

    python3 bench/wheelhouse.py FOLDER [--extras bench] [--python-version 3.12]
                               [--glibc 2.28] [--have FILE | --have-nothing]

It builds imgbot's own wheel (`pip wheel --no-deps .`) into FOLDER, then downloads with
`pip download --only-binary=:all:` the wheels of every dependency of `imgbot[EXTRAS]` for
the target: CPython of `--python-version` on manylinux x86-64 (glibc `--glibc` or newer),
leaving out what the target already has. FOLDER's size comes last. On the target:

    pip install --no-index --find-links FOLDER 'imgbot[EXTRAS]'

What the target has is a list of NAME==VERSION lines (`pip freeze` there gives one): by
default bench/gpu-target.txt, the bare GPU machine of bench/gpu-figures.sh (torch,
transformers, accelerate, peft, aiohttp, pillow and what they depend on). Those packages
take part in the resolution as empty stand-ins of their version (so pip neither fetches
them nor their own dependencies, torch's CUDA libraries among them) and are left out of
the folder; their own requirements (read from the index's metadata, nothing downloaded)
bound what the folder brings beside them (transformers 5.17 takes huggingface-hub below
2.0, so the folder's must be). Binary wheels only: the folder installs without a compiler, so an extra whose
package has no wheel (compliance's pdqhash) cannot go in it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HAVE = Path(__file__).resolve().parent / "gpu-target.txt"
# The stand-ins' local version label: "torch==2.11.0" is met by 2.11.0+have and, as pip
# prefers the local version among equal ones, the stand-in is taken over the index's wheel.
LABEL = "have"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where the wheels go (made if missing)")
    parser.add_argument(
        "--extras",
        default="bench",
        help="imgbot's extras, comma-separated (default: bench); '' for none",
    )
    parser.add_argument("--python-version", default="3.12", help="the target's (default 3.12)")
    parser.add_argument(
        "--glibc",
        default="2.28",
        help="the target's glibc, or older (default 2.28, as torch's wheels)",
    )
    have = parser.add_mutually_exclusive_group()
    have.add_argument(
        "--have",
        type=Path,
        default=DEFAULT_HAVE,
        help="what the target has installed, NAME==VERSION a line (pip freeze); "
        f"default {DEFAULT_HAVE.relative_to(ROOT)}",
    )
    have.add_argument(
        "--have-nothing",
        action="store_true",
        help="the target has nothing: every dependency goes in the folder",
    )
    parser.add_argument(
        "--pip", default=sys.executable, help="the Python whose pip downloads (default: this one)"
    )
    args = parser.parse_args(argv)
    try:
        installed = {} if args.have_nothing else read_have(args.have)
    except (OSError, ValueError) as exc:
        print(f"wheelhouse: {exc}", file=sys.stderr)
        return 2
    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    pip = [args.pip, "-m", "pip"]

    print(f"+ pip wheel --no-deps {ROOT} -w {folder}", flush=True)
    for old in folder.glob("imgbot-*.whl"):
        old.unlink()
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--quiet", "-w", str(folder), str(ROOT)], check=True
    )
    wheel = next(folder.glob("imgbot-*.whl"))

    target = [
        "--only-binary=:all:",
        "--python-version",
        args.python_version,
        "--implementation",
        "cp",
        "--abi",
        "cp" + args.python_version.replace(".", ""),
        *(option for tag in platforms(args.glibc) for option in ("--platform", tag)),
    ]
    extras = ",".join(e.strip() for e in args.extras.split(",") if e.strip())
    requirement = f"{wheel}[{extras}]" if extras else str(wheel)
    with tempfile.TemporaryDirectory() as tmp:
        stand_ins = Path(tmp) / "stand-ins"
        pins = Path(tmp) / "have.txt"
        print(f"+ reading the metadata of the {len(installed)} packages the target has", flush=True)
        metadata = metadata_of(installed, pip, target, Path(tmp)) if installed else {}
        made = write_stand_ins(installed, metadata, stand_ins)
        bounds = bounds_of(metadata, installed)
        pins.write_text(
            "".join(
                [
                    *(f"{name}=={version}+{LABEL}\n" for name, version in installed.items()),
                    *(f"{bound}\n" for bound in bounds),
                ]
            ),
            encoding="utf-8",
        )
        print(
            f"+ pip download {requirement} ({len(installed)} packages the target has "
            f"left out), Python {args.python_version}, manylinux glibc {args.glibc}",
            flush=True,
        )
        subprocess.run(
            [
                *pip,
                "download",
                "--quiet",
                "--dest",
                str(folder),
                *target,
                "--find-links",
                str(stand_ins),
                "--constraint",
                str(pins),
                requirement,
            ],
            check=True,
        )
    for name in made:  # pip copies the stand-ins it took into the folder: not the target's
        (folder / name).unlink(missing_ok=True)
    wheels = sorted(folder.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    print(f"{folder}: {len(wheels)} wheels, {size / 2**20:.1f} MiB")
    print(
        f"on the target: pip install --no-index --find-links {folder} "
        f"'imgbot{f'[{extras}]' if extras else ''}'"
    )
    return 0


def metadata_of(
    have: dict[str, str], pip: list[str], target: list[str], tmp: Path
) -> dict[str, dict]:
    """The index's metadata of each installed NAME==VERSION (pip's dry run, no deps, no
    wheel downloaded), by name; one that the index lacks as a wheel for the target (a
    private package, one built from source there) is left out, and said."""
    wanted = dict(have)
    for _ in range(50):
        report = tmp / "report.json"
        done = subprocess.run(
            [
                *pip,
                "install",
                "--dry-run",
                "--quiet",
                "--ignore-installed",
                "--no-deps",
                "--target",
                str(tmp / "nothing"),
                "--report",
                str(report),
                *target,
                *(f"{name}=={version}" for name, version in wanted.items()),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0:
            return {
                normalise(item["metadata"]["name"]): item["metadata"]
                for item in json.loads(report.read_text(encoding="utf-8"))["install"]
            }
        missing = re.search(r"No matching distribution found for ([A-Za-z0-9._-]+)==", done.stderr)
        if not missing or normalise(missing[1]) not in wanted:
            break
        print(
            f"wheelhouse: the index has no {missing[1]} {wanted[normalise(missing[1])]} "
            "wheel for the target: what it requires does not bound the folder",
            file=sys.stderr,
            flush=True,
        )
        del wanted[normalise(missing[1])]
    raise SystemExit(f"wheelhouse: could not read the target's packages' metadata:\n{done.stderr}")


def bounds_of(metadata: dict[str, dict], have: dict[str, str]) -> list[str]:
    """What the installed packages require of the packages they do not list, as constraint
    lines: the folder's versions of those must suit them too (extras left out)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip's own copy, where packaging is not installed
        from pip._vendor.packaging.requirements import Requirement

    bounds = set()
    for data in metadata.values():
        for line in data.get("requires_dist", []):
            requirement = Requirement(line)
            marker = str(requirement.marker or "")
            if (
                normalise(requirement.name) in have
                or "extra" in marker
                or not requirement.specifier
            ):
                continue
            bounds.add(
                f"{requirement.name}{requirement.specifier}" + (f"; {marker}" if marker else "")
            )
    return sorted(bounds)


def read_have(path: Path) -> dict[str, str]:
    """NAME==VERSION lines (comments, blank lines and `-e`/URL lines of pip freeze skipped),
    names normalised as pip does. Raises ValueError naming a line that is neither."""
    have = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-e ") or " @ " in line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.!+_-]+)", line)
        if not match:
            raise ValueError(f"{path}:{number}: {line!r} is not NAME==VERSION")
        # the local label goes: a stand-in has its own (torch 2.11.0+cu130 → 2.11.0+have)
        have[normalise(match[1])] = match[2].split("+", 1)[0]
    return have


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def platforms(glibc: str) -> list[str]:
    """The manylinux x86-64 tags a target of that glibc installs, newest first."""
    major, minor = (int(part) for part in glibc.split("."))
    if major != 2 or minor < 17:
        raise SystemExit(f"wheelhouse: --glibc {glibc}: give 2.17 or newer")
    tags = [f"manylinux_2_{m}_x86_64" for m in range(minor, 16, -1)]
    return [
        *tags,
        "manylinux2014_x86_64",
        "manylinux_2_12_x86_64",
        "manylinux2010_x86_64",
        "manylinux_2_5_x86_64",
        "manylinux1_x86_64",
    ]


def write_stand_ins(have: dict[str, str], metadata: dict[str, dict], folder: Path) -> list[str]:
    """An empty wheel for each installed package, of its version with the local label and no
    dependencies but those of its extras (matrix-nio[e2e] asks for vodozemac): what the
    resolver needs to count it as there. Returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, version in have.items():
        project = name.replace("-", "_")
        full = f"{version}+{LABEL}"
        info = f"{project}-{full}.dist-info"
        file = f"{project}-{full}-py3-none-any.whl"
        data = metadata.get(name, {})
        extras = "".join(f"Provides-Extra: {extra}\n" for extra in data.get("provides_extra", []))
        extras += "".join(
            f"Requires-Dist: {line}\n"
            for line in data.get("requires_dist", [])
            if "extra" in line.partition(";")[2]
        )
        with zipfile.ZipFile(folder / file, "w") as whl:
            whl.writestr(
                f"{info}/METADATA",
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {full}\n{extras}",
            )
            whl.writestr(
                f"{info}/WHEEL",
                "Wheel-Version: 1.0\nGenerator: imgbot-wheelhouse\n"
                "Root-Is-Purelib: true\nTag: py3-none-any\n",
            )
            whl.writestr(f"{info}/RECORD", f"{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
        names.append(file)
    return names


if __name__ == "__main__":
    sys.exit(main())
