"""`generation.backend` and `generation.ray`: the defaults, each rule with its message, the
token file (${CREDENTIALS_DIRECTORY}, stripped, warned about when others can read it)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from bot.config import ConfigError, RaySettings, load_settings

TOKEN = "0123456789abcdef-cluster-token"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No IMGBOT_… or CREDENTIALS_DIRECTORY of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("IMGBOT_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def write(tmp_path: Path, generation: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "matrix": {
                    "homeserver_url": "https://matrix.example.org",
                    "user_id": "@imgbot:example.org",
                },
                "generation": generation,
            }
        ),
        encoding="utf-8",
    )
    return path


def load(tmp_path: Path, **generation):
    return load_settings(write(tmp_path, generation)).generation


def refused(tmp_path: Path, **generation) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **generation)
    return str(info.value)


def token_file(tmp_path: Path, mode: int = 0o600, content: str = f"  {TOKEN}\n") -> Path:
    path = tmp_path / "ray-token"
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    return path


def test_the_defaults_are_local_and_need_nothing_of_ray(tmp_path):
    generation = load(tmp_path)
    assert generation.backend == "local"
    ray = generation.ray
    assert (ray.address, ray.workers, ray.resources, ray.namespace) == (
        "auto",
        4,
        {"GPU": 1, "imgbot_worker": 1},
        "imgbot",
    )
    assert ray.token_file is None and ray.token_path is None
    assert ray.allow_unauthenticated is False
    assert ray.read_token() is None


def test_an_unknown_backend_is_refused(tmp_path):
    message = refused(tmp_path, backend="slurm")
    assert "generation.backend" in message and "'slurm'" in message
    assert "local" in message and "ray" in message and "imgbot[cluster]" in message


def test_a_local_backend_ignores_an_unusable_ray_section(tmp_path):
    # Without backend ray nothing reads the token, so a missing file is no error.
    generation = load(tmp_path, ray={"token_file": str(tmp_path / "missing")})
    assert generation.backend == "local"


@pytest.mark.parametrize(
    "address",
    [
        "auto",
        "10.0.0.5:6379",
        "head.example.org:6379",
        "ray://10.0.0.5:10001",
        "ray://head:10001",
        "[fd00::5]:6379",
        "localhost:1",
    ],
)
def test_the_three_forms_of_address(tmp_path, address):
    assert load(tmp_path, ray={"address": address}).ray.address == address


@pytest.mark.parametrize(
    "address",
    [
        "",
        "10.0.0.5",
        "ray://10.0.0.5",
        "http://10.0.0.5:6379",
        "10.0.0.5:0",
        "10.0.0.5:70000",
        "head:port",
        "fd00::5:6379",
        "two words:6379",
        "ray:/head:1",
    ],
)
def test_other_addresses_are_refused_naming_the_three_forms(tmp_path, address):
    message = refused(tmp_path, ray={"address": address})
    assert "generation.ray.address" in message
    assert "auto" in message and "HOST:PORT" in message and "ray://HOST:PORT" in message


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_is_at_least_one(tmp_path, workers):
    assert "generation.ray.workers" in refused(tmp_path, ray={"workers": workers})


def test_resources_take_custom_and_fractional_amounts(tmp_path):
    ray = load(tmp_path, ray={"resources": {"imgbot_worker": 1, "GPU": 0.5}}).ray
    assert ray.resources == {"imgbot_worker": 1.0, "GPU": 0.5}


@pytest.mark.parametrize(
    "resources, words",
    [
        ({}, "at least one resource"),
        ({"GPU": 0}, "not a positive number"),
        ({"GPU": -1}, "not a positive number"),
        ({"GPU": float("inf")}, "not a positive number"),
        ({" ": 1}, "resource name is empty"),
    ],
)
def test_bad_resources_are_refused(tmp_path, resources, words):
    message = refused(tmp_path, ray={"resources": resources})
    assert "generation.ray.resources" in message and words in message


@pytest.mark.parametrize("namespace", ["", "two words", "-dash", "x" * 65])
def test_bad_namespaces_are_refused(tmp_path, namespace):
    assert "generation.ray.namespace" in refused(tmp_path, ray={"namespace": namespace})


def test_a_misspelt_ray_key_is_refused(tmp_path):
    message = refused(tmp_path, ray={"adress": "auto"})
    assert "generation.ray.adress: is not a known key" in message


def test_backend_ray_without_a_token_is_refused(tmp_path):
    message = refused(tmp_path, backend="ray")
    assert "generation.ray.token_file" in message and "ray get-auth-token" in message
    assert "allow_unauthenticated: true" in message


def test_backend_ray_with_a_bridge_socket_needs_no_token_file(tmp_path):
    # The bridge of its own user has its unit's token; the bot never reads one.
    generation = load(tmp_path, backend="ray", ray={"bridge_socket": "/run/imgbot-bridge.sock"})
    assert generation.ray.bridge_socket == Path("/run/imgbot-bridge.sock")
    assert generation.ray.token_file is None and generation.ray.allow_unauthenticated is False


def test_backend_ray_unauthenticated_only_when_said(tmp_path):
    generation = load(tmp_path, backend="ray", ray={"allow_unauthenticated": True})
    assert generation.backend == "ray" and generation.ray.read_token() is None


def test_backend_ray_refuses_devices(tmp_path):
    message = refused(
        tmp_path, backend="ray", devices=["cuda:0", "cuda:1"], ray={"allow_unauthenticated": True}
    )
    assert "devices" in message and "backend ray" in message
    assert "generation.ray.resources" in message


def test_the_token_is_read_at_load_and_stripped(tmp_path, caplog):
    path = token_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bot.config"):
        generation = load(tmp_path, backend="ray", ray={"token_file": str(path)})
    assert generation.ray.read_token().get_secret_value() == TOKEN
    assert TOKEN not in repr(generation) and TOKEN not in str(generation)
    assert not [r for r in caplog.records if "readable" in r.getMessage()]


def test_the_token_path_expands_the_credentials_directory(tmp_path, monkeypatch):
    token_file(tmp_path)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    ray = load(
        tmp_path, backend="ray", ray={"token_file": "${CREDENTIALS_DIRECTORY}/ray-token"}
    ).ray
    assert ray.token_file == Path("${CREDENTIALS_DIRECTORY}/ray-token")
    assert ray.token_path == tmp_path / "ray-token"
    assert ray.read_token().get_secret_value() == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_a_token_others_can_read_gives_a_warning(tmp_path, caplog, mode):
    path = token_file(tmp_path, mode)
    with caplog.at_level(logging.WARNING, logger="bot.config"):
        load(tmp_path, backend="ray", ray={"token_file": str(path)})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "generation.ray.token_file" in w and "readable by other users" in w and str(path) in w
        for w in warnings
    ), warnings
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "content, words", [(None, "cannot read generation.ray.token_file"), ("  \n", "is empty")]
)
def test_an_unusable_token_file_stops_the_load(tmp_path, content, words):
    path = tmp_path / "ray-token"
    if content is not None:
        token_file(tmp_path, content=content)
    message = refused(tmp_path, backend="ray", ray={"token_file": str(path)})
    assert words in message and "generation.ray.token_file" in message


def test_without_secrets_the_token_is_read_only_when_asked(tmp_path):
    path = tmp_path / "ray-token"
    config = write(tmp_path, {"backend": "ray", "ray": {"token_file": str(path)}})
    ray = load_settings(config, secrets=False).generation.ray  # `imgbot usage` connects nowhere

    with pytest.raises(ConfigError, match="cannot read generation.ray.token_file"):
        ray.read_token()
    token_file(tmp_path)
    assert ray.read_token().get_secret_value() == TOKEN


def test_read_token_on_its_own():
    with pytest.raises(ConfigError, match="generation.ray.token_file .* is empty"):
        RaySettings(token_file=Path(os.devnull)).read_token()


def test_the_environment_sets_the_backend_and_the_ray_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBOT_GENERATION__BACKEND", "ray")
    monkeypatch.setenv("IMGBOT_GENERATION__RAY__ADDRESS", "10.0.0.5:6379")
    monkeypatch.setenv("IMGBOT_GENERATION__RAY__RESOURCES", '{"imgbot_worker": 1}')
    monkeypatch.setenv("IMGBOT_GENERATION__RAY__ALLOW_UNAUTHENTICATED", "true")
    generation = load(tmp_path)
    assert generation.backend == "ray" and generation.ray.address == "10.0.0.5:6379"
    assert generation.ray.resources == {"imgbot_worker": 1.0}


def test_the_example_documents_the_ray_section_and_uncommented_it_loads(tmp_path, monkeypatch):
    """config.example.yaml shows generation.ray commented out; switched on as written (with
    the token as a systemd credential), it is a config the bot takes."""
    example = (Path(__file__).resolve().parents[2] / "config.example.yaml").read_text()
    lines, inside = [], False
    for line in example.splitlines():
        if line == "  # ray:":
            inside = True
            lines.append("  ray:")
        elif inside and line.startswith("  #   "):
            if not line.startswith("  #   #"):
                lines.append("    " + line.removeprefix("  #   "))
        else:
            inside = False
            lines.append(line.replace("  backend: local", "  backend: ray"))
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(lines), encoding="utf-8")
    token_file(tmp_path)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    ray = load_settings(config).generation.ray

    assert set(RaySettings.model_fields) == {
        "address",
        "workers",
        "resources",
        "namespace",
        "token_file",
        "allow_unauthenticated",
        "bridge_socket",
    }
    for key in RaySettings.model_fields:
        assert f"\n    {key}: " in "\n".join(lines), key
    assert (
        ray.model_dump()
        == RaySettings(token_file=Path("${CREDENTIALS_DIRECTORY}/ray-token")).model_dump()
    )  # the defaults
    assert ray.read_token().get_secret_value() == TOKEN
