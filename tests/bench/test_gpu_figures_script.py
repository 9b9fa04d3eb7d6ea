"""bench/wheelhouse.py and bench/gpu-figures.sh end to end on the CPU: a folder of wheels
built here, the script's own offline install from it into a venv over this Python, and
every figure measured on tiny models (the scripts' workload overrides), each written to
its file with the fields the README describes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Left out of what "the target has": the folder must bring these (small, pure Python), so
# that the download of dependencies runs for real too.
BROUGHT = {"aiosqlite", "prometheus-client"}
FIGURE_FIELDS = [
    "model",
    "size",
    "steps",
    "batch",
    "side",
    "s/picture",
    "pictures/s",
    "peak",
    "ours/plain",
]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """The wheel folder for this Python, this venv's packages counted as the target's."""
    tmp = tmp_path_factory.mktemp("wheelhouse")
    have = tmp / "have.txt"
    have.write_text(
        "".join(
            f"{dist.metadata['Name']}=={dist.version}\n"
            for dist in importlib.metadata.distributions()
            if _normal(dist.metadata["Name"]) not in BROUGHT | {"imgbot"}
        ),
        encoding="utf-8",
    )
    folder = tmp / "wheels"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "wheelhouse.py"),
            str(folder),
            "--python-version",
            version,
            "--have",
            str(have),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"wheels, \d+\.\d MiB", done.stdout), done.stdout
    return folder


def test_the_folder_has_imgbot_and_what_the_target_lacks_only(wheels):
    names = {_normal(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
    assert {"imgbot", *BROUGHT} <= names
    assert not names & {"torch", "diffusers", "transformers", "numpy"}  # the target's
    assert not list(wheels.glob("*+have*"))  # no stand-in left behind


def test_a_have_line_that_is_not_name_version_is_refused(tmp_path):
    have = tmp_path / "have.txt"
    have.write_text("torch>=2.11\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "wheelhouse.py"),
            str(tmp_path / "w"),
            "--have",
            str(have),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "is not NAME==VERSION" in done.stderr


def test_gpu_figures_installs_offline_and_writes_every_figure(wheels, tmp_path):
    from generation.testing.tiny import make_test_model

    models = {
        arch: make_test_model(tmp_path / "models" / arch, arch)
        for arch in ("flux2-klein", "zimage", "sdxl")
    }
    out = tmp_path / "figures"
    env = {
        **os.environ,
        "WHEELS": str(wheels),
        "PYTHON": sys.executable,
        "VENV": str(tmp_path / "venv"),
        "DEVICE": "cpu",
        "COMPILE_CACHE": str(tmp_path / "compile-cache"),
        "FLUX2": f"--model {models['flux2-klein']} --size 64x64 --steps 2",
        "FLUX2_BATCHES": "1,2",
        "FLUX2_COUNT": "2",
        "ZIMAGE": f"--model {models['zimage']} --size 64x64 --steps 2",
        "ZIMAGE_COUNT": "1",
        "SDXL": f"--model {models['sdxl']} --size 64x64 --steps 2 --guidance 0",
        "SDXL_BATCHES": "1,2",
        "SDXL_COUNT": "2",
        "CHAT_COUNT": "4",
        "CHAT_BATCH": "2",
        # the compiled figure's path, without the inductor's minutes on two cores
        "TORCH_COMPILE_DISABLE": "1",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu-figures.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "FAILED" not in log, log
    # imgbot ran from the venv the script installed from the folder, not from this checkout
    assert f"imgbot from {tmp_path / 'venv'}" in log, log

    setup = json.loads((out / "0-setup.json").read_text())
    assert setup["offline"] is True and setup["gpu"] == "none" and setup["fp8"] is False
    assert setup["install_seconds"] >= 0
    # the compiled figure needs a C compiler and Python.h (Triton's); without, a line says so
    compiled = setup["compiled_figure"]
    assert compiled == bool(setup["c_compiler"] and setup["python_headers"])

    lines = (out / "figures.txt").read_text().splitlines()
    # figures 1, 3, 4, 5 (through chat with buttons off, then on), then 2 (the compile, last)
    assert len(lines) == 4 + 2 + 4 + 2 + (2 if compiled else 1), lines
    for line in lines[:10] + lines[12:] * compiled:
        parts = line.split(" | ")
        assert len(parts) >= len(FIGURE_FIELDS), line
        assert parts[1] == "64x64" and parts[2] == "2 steps", line
        assert re.fullmatch(r"batch \d", parts[3]) and parts[4].startswith(("imgbot", "diffusers"))
        assert re.fullmatch(r"\d+\.\d{3} s/picture", parts[5]), line
        assert re.fullmatch(r"\d+\.\d{3} pictures/s", parts[6]), line
        assert re.fullmatch(r"peak (≤ )?\d+\.\d\d GiB", parts[7]), line
        assert re.fullmatch(r"ours/plain \d+\.\d\d", parts[8]), line
    for line, buttons in ((lines[10], "off"), (lines[11], "on")):
        assert f"through chat (float32, buttons {buttons})" in line, line
        assert "through the bot / engine" in line and "median reply overhead" in line
    assert lines[11].endswith("| 12 of 12 button reactions seen"), lines[11]

    for name, batches in (("1-flux2-klein", [1, 2]), ("3-zimage", [1]), ("4-sdxl", [1, 2])):
        report = json.loads((out / f"{name}.json").read_text())
        assert report["config"]["device"] == "cpu"
        rows = {(row["side"], row["batch"]): row for row in report["rows"]}
        assert set(rows) == {(side, b) for side in ("imgbot", "diffusers") for b in batches}
        for (side, batch), row in rows.items():
            assert row["dtype"] == "float32"  # the baseline in ours' precision (bug 3)
            assert row["pictures_per_second"] > 0 and row["peak_memory_bytes"] > 0
            assert row["ours_over_baseline"] == pytest.approx(
                row["pictures_per_second"] / rows["diffusers", batch]["pictures_per_second"]
            )
            assert (row["warm_up_seconds"] is not None) == (side == "imgbot")
    chat = json.loads((out / "5-through-chat.json").read_text())
    assert chat["pictures"] == 4 and 0 < chat["through_share"]
    assert chat["median_reply_overhead_seconds"] > 0
    assert [run["buttons"] for run in chat["runs"]] == [[], ["again", "vary", "upscale"]]

    fast = json.loads((out / "2-flux2-klein-fast.json").read_text())
    if not compiled:
        assert lines[12].startswith("2 skipped: no ") and "Triton" in fast["skipped"]
        return
    assert all("compiled" in line for line in lines[12:])
    assert fast["config"]["ours_compile"] is True
    assert [row["batch"] for row in fast["rows"]] == [1, 2]
    # ours/plain against figure 1's baseline; the warm-up (the compile's cost) a figure
    assert all(row["ours_over_baseline"] > 0 and row["warm_up_seconds"] > 0 for row in fast["rows"])
