"""Loading the settings for commands that never log in, the key a password came from, and a
YAML mistake located in its file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from bot.config import ConfigError, load_settings

SECRET = "s3cret-horse-battery"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No IMGBOT_… or CREDENTIALS_DIRECTORY of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("IMGBOT_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str | dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(text), encoding="utf-8")
    return path


def config(tmp_path: Path, **matrix) -> Path:
    return write(
        tmp_path,
        {
            "matrix": {
                "homeserver_url": "https://matrix.example.org",
                "user_id": "@imgbot:example.org",
                **matrix,
            }
        },
    )


SYSTEMD = {
    "password_file": "${CREDENTIALS_DIRECTORY}/password",
    "access_token_file": "${CREDENTIALS_DIRECTORY}/access_token",
}


def test_without_secrets_the_credential_files_are_not_read(tmp_path):
    path = config(tmp_path, password_file=SYSTEMD["password_file"])
    with pytest.raises(ConfigError, match="cannot read password_file"):
        load_settings(path)
    settings = load_settings(path, secrets=False)
    assert settings.matrix.password is None
    assert settings.matrix.password_key == "matrix.password_file"
    token = config(tmp_path, access_token_file=SYSTEMD["access_token_file"])
    assert load_settings(token, secrets=False).matrix.access_token is None
    # The next load reads them again: secrets=False lasts one call.
    with pytest.raises(ConfigError, match="cannot read access_token_file"):
        load_settings(token)


def test_without_secrets_the_rest_is_still_checked(tmp_path):
    both = config(tmp_path, password="x", password_file=SYSTEMD["password_file"])
    with pytest.raises(ConfigError, match="set matrix.password or matrix.password_file"):
        load_settings(both, secrets=False)
    with pytest.raises(ConfigError, match="matrix.user_id"):
        load_settings(
            write(tmp_path, {"matrix": {"homeserver_url": "https://x.org", "user_id": "bob"}}),
            secrets=False,
        )


def test_password_key_names_where_the_password_came_from(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    from_file = load_settings(config(tmp_path, password_file=str(secret))).matrix
    assert from_file.password.get_secret_value() == SECRET
    assert from_file.password_key == "matrix.password_file"
    assert load_settings(config(tmp_path, password=SECRET)).matrix.password_key == "matrix.password"


@pytest.mark.parametrize(
    "typed, whole",
    [
        ("bob", "@bob:example.org"),
        ("@bob", "@bob:example.org"),
        ("@bob:other.org", "@bob:other.org"),
    ],
)
def test_a_short_user_id_is_on_the_bots_server(tmp_path, typed, whole):
    assert load_settings(config(tmp_path), secrets=False).matrix.full_user_id(typed) == whole


@pytest.mark.parametrize(
    "text, where",
    [
        ("matrix: [unclosed\n  user_id: x\n", "line 2, column 10"),
        ("matrix:\n  user_id: '@a:b'\n   password: x\n", "line 3, column 4"),
        ("matrix:\n\t- tab\n", "line 2, column 1"),
    ],
)
def test_a_yaml_mistake_names_the_file_line_and_column(tmp_path, text, where):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not valid YAML: {where}: ")
    assert "<unicode string>" not in message
