"""A bridge that systemd starts for whoever connects to its socket (socket mode) is pinned
by its unit: it connects only to the unit's --address and uses only the unit's token. A
hello from someone who may connect (the bot's group) that names another cluster, or asks
it to use a token file of the caller's choice, is refused with words that say why, before
the bridge reaches for any cluster. Runs the real bridge process; no Ray is needed, since
a refused hello never gets that far."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from generation.cluster import frames, messages
from generation.cluster.bridge import pin_refusal
from generation.cluster.spec import ClusterSpec
from generation.models.recipe import Recipe

PINNED = "127.0.0.1:6379"


def _spec(tmp_path: Path, **fields) -> ClusterSpec:
    # As the bot sends it in socket mode: its own token (own_token), no token path.
    return ClusterSpec(
        **{
            "address": PINNED,
            "namespace": "imgbot",
            "workers": 1,
            "resources": {"GPU": 1},
            "bridge_socket": str(tmp_path / "s"),
            "own_token": True,
            "recipe": Recipe(catalogue={"tiny": tmp_path / "tiny"}),
            **fields,
        }
    )


def _hello(tmp_path: Path, spec: ClusterSpec, *args: str) -> tuple[dict, int]:
    """The bridge's answer to `spec`'s hello, and its exit status."""
    wire = messages.spec_to_wire(spec)
    if not spec.own_token:  # what an attacker would write: a token path of its choosing
        wire.update(own_token=False, token_path=spec.token_path)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(tmp_path / "unit-token"),
    }
    bridge = subprocess.run(
        [sys.executable, "-m", "generation.cluster.bridge", *args],
        input=frames.encode({"kind": "hello", "spec": wire}),
        capture_output=True,
        env=env,
        cwd=Path(__file__).parents[3],
        timeout=120,
    )
    frame = frames.receive(io.BytesIO(bridge.stdout))
    assert frame is not None, bridge.stderr.decode()[-2000:]
    return frame[0], bridge.returncode


@pytest.mark.parametrize(
    "fields, args, words",
    [
        (
            {"address": "attacker.example:6379"},
            ["--address", PINNED],
            f"connects only to {PINNED} .* not to attacker.example:6379",
        ),
        (
            {"own_token": False, "token_path": "/home/someone/token"},
            ["--address", PINNED],
            "uses only its unit's token",
        ),
        ({}, [], "has no --address"),  # a unit without the pin fails closed
    ],
)
def test_a_hello_the_unit_does_not_pin_is_refused(tmp_path, fields, args, words):
    answer, status = _hello(tmp_path, _spec(tmp_path, **fields), *args)
    assert answer["kind"] == "refused" and not answer["token_refused"], answer
    assert re.search(words, answer["words"]), answer["words"]
    assert status == 3


def test_the_pinned_hello_is_taken_and_a_token_path_in_it_is_never_used(tmp_path):
    spec = _spec(tmp_path)
    assert pin_refusal(spec, PINNED) is None
    assert pin_refusal(replace(spec, token_path="/home/someone/token"), PINNED) is None
    # A bridge the bot spawns is not pinned: the bot tells it the address and token file.
    assert (
        pin_refusal(replace(spec, own_token=False, token_path="/t", bridge_socket=None), None)
        is None
    )


@pytest.mark.parametrize(
    "pin", ["", "attacker", "127.0.0.1", "127.0.0.1:0", "host:99999", "-", "127.0.0.1:6379 extra"]
)
def test_a_unit_with_an_empty_or_malformed_pin_does_not_start(tmp_path, pin):
    # An empty pin would take a hello whose address is empty too.
    bridge = subprocess.run(
        [sys.executable, "-m", "generation.cluster.bridge", f"--address={pin}"],
        input=frames.encode(
            {"kind": "hello", "spec": messages.spec_to_wire(_spec(tmp_path, address=pin))}
        ),
        capture_output=True,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        cwd=Path(__file__).parents[3],
        timeout=120,
    )
    assert bridge.returncode == 2 and bridge.stdout == b""  # no frame: nothing was taken
    assert "is not a Ray address" in bridge.stderr.decode()
