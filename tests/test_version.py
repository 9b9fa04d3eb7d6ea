"""The version is written in one place, pyproject.toml's [project] version: the installed
package's metadata carries it, and bot.version() (what /metrics' imgbot_build_info shows)
reads that, so no module keeps a copy that could drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot import version

REPO = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")


def test_the_installed_version_is_pyprojects():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project.get("dynamic", [])
    assert version() == project["version"]


def test_no_module_keeps_a_version_of_its_own():
    for path in [*REPO.glob("bot/**/*.py"), *REPO.glob("generation/**/*.py")]:
        assert not re.search(r"(?m)^__version__\s*=", path.read_text()), path


def test_the_changelog_starts_with_the_unreleased_round():
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.findall(r"(?m)^## (.*)$", changelog)[0] == "[Unreleased]"
