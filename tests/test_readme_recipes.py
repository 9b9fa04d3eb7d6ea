"""The shell lines of the manual's install page (docs/install.md, the steps of running it
for real) and of the unit's header, as an operator pastes them: the service recipe run for real (with /etc moved into a scratch folder), the
install and admin lines read for their shape (they need the network, or systemd)."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The page the recipes are on (README.md points to it).
INSTALL = (REPO / "docs" / "install.md").read_text()
UNIT = REPO / "systemd" / "imgbot.service"
PASSWORD = "correct horse battery staple"


def block(marker: str) -> list[str]:
    """The commands of the ```sh block after `<!-- marker -->`, one per line (a line ending
    in a backslash joined to the next)."""
    after = INSTALL.split(f"<!-- {marker} -->", 1)[1]
    body = textwrap.dedent(after.split("```sh\n", 1)[1].split("```", 1)[0])
    return [line for line in body.replace("\\\n", " ").splitlines() if line.strip()]


def unsudo(line: str) -> str:
    return line.removeprefix("sudo ")


def header_recipe() -> list[str]:
    """The commands in the unit's header comment: the lines of the form `#   command …`."""
    header = UNIT.read_text().split("[Unit]", 1)[0]
    return [
        line[4:]
        for line in header.splitlines()
        if re.match(r"#   (useradd|install|systemctl) ", line)
    ]


def unit_value(key: str) -> str:
    values = re.findall(rf"(?m)^{key}=(.*)$", UNIT.read_text())
    assert len(values) == 1, (key, values)
    return values[0]


RECIPES = {
    "docs/install.md": [unsudo(line) for line in block("the service recipe")],
    "imgbot.service": header_recipe(),
}


def test_the_readme_and_the_unit_give_the_same_recipe():
    assert RECIPES["docs/install.md"] == RECIPES["imgbot.service"]
    assert RECIPES["docs/install.md"][0].startswith("useradd --system --user-group ")


def test_the_recipe_writes_where_the_unit_reads():
    recipe = RECIPES["docs/install.md"]
    password = [line.split()[-1] for line in recipe if "/dev/stdin" in line]
    assert password == [unit_value("LoadCredential").split(":", 1)[1]]
    config = shlex.split(unit_value("ExecStart"))[-1]
    assert any(line.endswith(f" config.yaml {config}") for line in recipe), recipe
    assert f"install -m 644 systemd/imgbot.service /etc/systemd/system/{UNIT.name}" in recipe


def stand_ins() -> dict[str, str]:
    """Who plays root and the imgbot group in the scratch copy of /etc: root and another
    group where the test runs as root (as in CI), else this user and their own group."""
    if os.getuid() == 0:
        others = [g for g in ("nogroup", "nobody", "daemon") if _group_exists(g)]
        if not others:
            pytest.skip("no group to stand in for imgbot")
        return {"owner": "root", "root_group": "root", "service_group": others[0]}
    me = pwd.getpwuid(os.getuid())
    mine = grp.getgrgid(me.pw_gid).gr_name
    return {"owner": me.pw_name, "root_group": mine, "service_group": mine}


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.skipif(shutil.which("install") is None, reason="needs coreutils' install")
@pytest.mark.parametrize("source", sorted(RECIPES))
def test_the_service_recipe_works_on_a_fresh_machine(source):
    """Run as written, on a machine whose /etc has no imgbot folder yet; only the user
    account (useradd) and systemctl are left out, and /etc is a scratch folder."""
    who = stand_ins()
    recipe = RECIPES[source]
    assert recipe[0].startswith("useradd ") and "imgbot" in shlex.split(recipe[0])
    # Not pytest's tmp_path: its parents are private to the user running the tests, and the
    # stand-in service user below must reach the files.
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        (root / "etc/systemd/system").mkdir(parents=True)
        clone = root / "clone"
        (clone / "systemd").mkdir(parents=True)
        shutil.copy(UNIT, clone / "systemd" / UNIT.name)
        (clone / "config.yaml").write_text("state_dir: /var/lib/imgbot\n")
        script = "\n".join(
            line.replace(" /etc/", f" {root}/etc/")
            .replace("-o root", f"-o {who['owner']}")
            .replace("-g root", f"-g {who['root_group']}")
            .replace("-g imgbot", f"-g {who['service_group']}")
            for line in recipe
            if not line.startswith(("useradd ", "systemctl "))
        )
        assert not any(word.startswith("/etc") for word in script.split()), script

        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=clone,
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert done.returncode == 0, done.stderr
        etc = root / "etc/imgbot"
        owner = pwd.getpwnam(who["owner"]).pw_uid
        service_gid = grp.getgrnam(who["service_group"]).gr_gid
        expected = {
            etc: (0o750, service_gid),
            etc / "config.yaml": (0o640, service_gid),
            etc / "password": (0o600, grp.getgrnam(who["root_group"]).gr_gid),
        }
        for path, (mode, gid) in expected.items():
            st = path.stat()
            assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == (oct(mode), owner, gid), path
        assert (etc / "password").read_text().strip() == PASSWORD
        assert (etc / "config.yaml").read_text() == "state_dir: /var/lib/imgbot\n"
        unit = root / "etc/systemd/system" / UNIT.name
        assert unit.read_text() == UNIT.read_text() and unit.stat().st_mode & 0o777 == 0o644
        if os.getuid() == 0 and shutil.which("setpriv"):
            # The service's user (here nobody, in the stand-in group) reads its config and
            # not the password, which only systemd, as root, reads for LoadCredential=.
            as_service = [
                "setpriv",
                "--reuid",
                str(pwd.getpwnam("nobody").pw_uid),
                "--regid",
                str(service_gid),
                "--clear-groups",
                "cat",
            ]
            config = subprocess.run(
                [*as_service, str(etc / "config.yaml")], capture_output=True, text=True, timeout=10
            )
            assert config.returncode == 0, config.stderr
            secret = subprocess.run(
                [*as_service, str(etc / "password")], capture_output=True, text=True, timeout=10
            )
            assert secret.returncode != 0 and "Permission denied" in secret.stderr


@pytest.mark.parametrize(
    "marker", ["the GPU install", "the CPU install", "the service recipe", "the admin commands"]
)
def test_the_lines_are_valid_shell_each_on_its_own(marker):
    lines = block(marker)
    assert lines
    for line in lines:
        checked = subprocess.run(
            ["bash", "-n", "-c", line], capture_output=True, text=True, timeout=10
        )
        assert checked.returncode == 0, (line, checked.stderr)


def pip_installs(marker: str) -> list[list[str]]:
    """The arguments of each `pip install` of a block, in order, after the venv is made."""
    lines = [shlex.split(unsudo(line)) for line in block(marker)]
    assert lines[0] == ["python3", "-m", "venv", "/opt/imgbot/venv"], lines[0]
    for words in lines[1:]:
        assert words[:2] == ["/opt/imgbot/venv/bin/pip", "install"], words
    return [words[2:] for words in lines[1:]]


def test_the_install_lines_take_torch_first_at_the_tested_version():
    tested = version("torch").split("+")[0]
    for marker, index in (
        ("the GPU install", "https://download.pytorch.org/whl/cu"),
        ("the CPU install", "https://download.pytorch.org/whl/cpu"),
    ):
        first, *_ = pip_installs(marker)
        assert first[0] == f"torch=={tested}", (marker, first)
        where = first[first.index("--index-url") + 1]
        assert where.startswith(index), (marker, where)


def test_the_gpu_route_takes_torchvision_with_torch_then_the_upscale_extra():
    torch, imgbot = pip_installs("the GPU install")
    assert "torchvision" in torch
    assert imgbot == [".[upscale]"]


def test_the_cpu_route_has_no_torchvision_and_spandrel_without_its_deps():
    text = "\n".join(block("the CPU install"))
    assert "torchvision" not in text and "[upscale]" not in text
    torch, imgbot, spandrel = pip_installs("the CPU install")
    assert imgbot == ["."]
    # Last: a pip install after it would report spandrel's missing torchvision as an error.
    assert spandrel[0] == "--no-deps" and spandrel[1].startswith("spandrel")
    assert "einops" in spandrel


def systemd_runs() -> list[tuple[dict[str, list[str]], list[str]]]:
    """Each `systemd-run` of the admin commands: its -p properties and the command it runs."""
    found = []
    for line in block("the admin commands"):
        words = shlex.split(unsudo(line))
        assert words[0] == "systemd-run", words
        properties: dict[str, list[str]] = {}
        rest = words[1:]
        while rest[0].startswith("-"):
            if rest[0] == "-p":
                key, _, value = rest[1].partition("=")
                properties.setdefault(key, []).append(value)
                rest = rest[2:]
            else:
                rest = rest[1:]
        found.append((properties, rest))
    return found


def test_the_admin_commands_run_as_the_service_and_only_check_gets_the_password():
    binary, _, _, config = shlex.split(unit_value("ExecStart"))
    commands = {}
    for properties, command in systemd_runs():
        assert command[0] == binary and command[2:4] == ["-c", config], command
        assert properties["User"] == [unit_value("User")]
        assert properties["StateDirectory"] == [unit_value("StateDirectory")]
        # Without it systemd sets the existing state folder to 0755 at this run's start.
        assert properties["StateDirectoryMode"] == [unit_value("StateDirectoryMode")]
        commands[command[1]] = properties.get("LoadCredential")
    assert commands == {"check": [unit_value("LoadCredential")], "usage": None}
