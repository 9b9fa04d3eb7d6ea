"""Bots on the tiny models of the newer families, loaded once per test module."""

from __future__ import annotations

import pytest

from generation.models.engine import Engine
from generation.testing.tiny import make_test_model


@pytest.fixture(scope="module")
def family_engines(tmp_path_factory):
    engines = {}
    for arch in ("zimage", "flux2-klein"):
        engine = Engine(make_test_model(tmp_path_factory.mktemp(arch) / arch, arch), "cpu")
        engine.load()
        engines[arch] = engine
    yield engines
    for engine in engines.values():
        engine.unload()
