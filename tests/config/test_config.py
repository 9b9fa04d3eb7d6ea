"""Loading the settings (`bot/config.py`): the YAML file, IMGBOT_… overrides, clear errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from bot.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret-horse-battery"

FULL = {
    "matrix": {
        "homeserver_url": "https://matrix.example.org",
        "user_id": "@imgbot:example.org",
        "password": SECRET,
        "access_token": None,
        "allowed_users": ["@*:example.org", "@guest:other.org"],
        "admins": ["@alice:example.org"],
        "command_prefix": "!draw",
        "encryption": False,
    },
    "state_dir": "/var/lib/imgbot",
    "generation": {
        "model": "/srv/models/sdxl-lightning",
        "device": "cuda:1",
        "steps": 8,
        "guidance": 1.5,
        "size": "768x512",
    },
    "limits": {
        "max_prompt_chars": 500,
        "max_steps": 20,
        "max_pixels": 1024 * 1024,
        "max_images": 2,
        "queue_size": 10,
        "per_user_queued": 1,
    },
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No IMGBOT_… variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith("IMGBOT_"):
            monkeypatch.delenv(name)


def minimal(**matrix) -> dict:
    return {
        "matrix": {
            "homeserver_url": "https://matrix.example.org",
            "user_id": "@imgbot:example.org",
            **matrix,
        }
    }


def write(tmp_path: Path, data, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def config_error(tmp_path: Path, data) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, data))
    return str(info.value)


def with_section(section: str, **values) -> dict:
    data = minimal()
    data[section] = {**data.get(section, {}), **values}
    return data


# ---- good files ---------------------------------------------------------------------------


def test_full_file_loads_with_the_spec_key_names(tmp_path):
    settings = load_settings(write(tmp_path, FULL))
    m = settings.matrix
    assert m.homeserver_url == "https://matrix.example.org"
    assert m.user_id == "@imgbot:example.org"
    assert m.password.get_secret_value() == SECRET
    assert m.access_token is None
    assert m.allowed_users == ["@*:example.org", "@guest:other.org"]
    assert m.admins == ["@alice:example.org"]
    assert m.command_prefix == "!draw"
    assert m.encryption is False
    assert settings.state_dir == Path("/var/lib/imgbot")
    g = settings.generation
    assert (g.model, g.device, g.steps, g.guidance, g.size) == (
        Path("/srv/models/sdxl-lightning"),
        "cuda:1",
        8,
        1.5,
        "768x512",
    )
    assert g.width_height == (768, 512)
    lim = settings.limits
    assert (
        lim.max_prompt_chars,
        lim.max_steps,
        lim.max_pixels,
        lim.max_images,
        lim.queue_size,
        lim.per_user_queued,
    ) == (500, 20, 1024 * 1024, 2, 10, 1)


def test_minimal_file_takes_the_documented_defaults(tmp_path):
    settings = load_settings(write(tmp_path, minimal()))
    assert settings.matrix.command_prefix == "!img"
    assert settings.generation.size == "1024x1024"
    assert settings.generation.steps == 4
    assert settings.generation.device == "auto"
    assert settings.limits.max_steps == 50
    assert settings.limits.max_pixels == 2359296
    assert settings.limits.per_user_queued == 3


def test_example_config_at_the_repo_root_loads():
    settings = load_settings(REPO / "config.example.yaml")
    assert settings.matrix.user_id.startswith("@")
    # The example documents every core key of the SPEC with its value.
    text = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    for key in (
        "homeserver_url",
        "user_id",
        "password",
        "access_token",
        "allowed_users",
        "admins",
        "command_prefix",
        "encryption",
        "state_dir",
        "model",
        "device",
        "steps",
        "guidance",
        "size",
        "max_prompt_chars",
        "max_steps",
        "max_pixels",
        "max_images",
        "queue_size",
        "per_user_queued",
    ):
        assert f"{key}:" in text


def test_example_config_has_a_comment_on_every_key():
    lines = (REPO / "config.example.yaml").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped:
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") or "#" in line or stripped.endswith(":"), (
                f"config.example.yaml line {i + 1} ({stripped!r}) has no comment"
            )


def test_homeserver_url_trailing_slash_is_dropped(tmp_path):
    settings = load_settings(write(tmp_path, minimal(homeserver_url="http://localhost:8008/")))
    assert settings.matrix.homeserver_url == "http://localhost:8008"


def test_default_allowed_users_is_the_bots_own_server(tmp_path):
    settings = load_settings(write(tmp_path, minimal(user_id="@bot:chat.corp.example")))
    assert settings.matrix.allowed_users == ["@*:chat.corp.example"]


def test_empty_file_needs_the_matrix_section(tmp_path):
    message = config_error(tmp_path, "")
    assert "matrix: is required" in message


# ---- environment overrides ----------------------------------------------------------------


def test_environment_overrides_win_over_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBOT_MATRIX__HOMESERVER_URL", "http://127.0.0.1:8008")
    monkeypatch.setenv("IMGBOT_LIMITS__MAX_STEPS", "30")
    settings = load_settings(write(tmp_path, FULL))
    assert settings.matrix.homeserver_url == "http://127.0.0.1:8008"
    assert settings.limits.max_steps == 30
    # Everything else still comes from the file: the override is merged, not a replacement.
    assert settings.matrix.user_id == "@imgbot:example.org"
    assert settings.limits.max_prompt_chars == 500
    assert settings.matrix.command_prefix == "!draw"


def test_environment_can_supply_a_key_the_file_lacks(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBOT_MATRIX__USER_ID", "@other:example.org")
    data = {"matrix": {"homeserver_url": "https://matrix.example.org"}}
    assert load_settings(write(tmp_path, data)).matrix.user_id == "@other:example.org"


def test_bad_environment_value_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBOT_LIMITS__MAX_STEPS", "lots")
    message = config_error(tmp_path, minimal())
    assert "limits.max_steps" in message


# ---- bad values name the dotted key -------------------------------------------------------


@pytest.mark.parametrize(
    "data, key, words",
    [
        (with_section("limits", max_steps=0), "limits.max_steps", "greater than or equal to 1"),
        (with_section("limits", max_steps="many"), "limits.max_steps", "integer"),
        (with_section("limits", queue_size=0), "limits.queue_size", ""),
        (with_section("generation", size="100x100"), "generation.size", "multiples of 8"),
        (with_section("generation", size="huge"), "generation.size", "WIDTHxHEIGHT"),
        (with_section("generation", size="32x32"), "generation.size", "at least 64"),
        (with_section("generation", device="tpu"), "generation.device", "cuda"),
        (with_section("generation", device="CUDA"), "generation.device", "cpu"),
        (with_section("generation", guidance=31), "generation.guidance", ""),
        (with_section("generation", steps=0), "generation.steps", ""),
        (minimal(user_id="imgbot"), "matrix.user_id", "@imgbot:example.org"),
        (minimal(user_id="@imgbot"), "matrix.user_id", "Matrix user ID"),
        (minimal(homeserver_url="matrix.example.org"), "matrix.homeserver_url", "http"),
        (minimal(homeserver_url="ftp://matrix.example.org"), "matrix.homeserver_url", "URL"),
        (minimal(passwrod="x"), "matrix.passwrod", "is not a known key"),
        (minimal(allowed_users=["everyone"]), "matrix.allowed_users", "pattern"),
        (minimal(admins=["alice"]), "matrix.admins", "user ID"),
        (minimal(command_prefix="! img"), "matrix.command_prefix", "without spaces"),
        ({**minimal(), "log_level": "LOUD"}, "log_level", "DEBUG"),
        ({**minimal(), "stat_dir": "/tmp"}, "stat_dir", "is not a known key"),
        ({"matrix": {"homeserver_url": "https://m.example.org"}}, "matrix.user_id", "is required"),
    ],
)
def test_bad_value_names_the_dotted_key(tmp_path, data, key, words):
    message = config_error(tmp_path, data)
    assert f"{key}: " in message
    assert words in message
    assert str(tmp_path / "config.yaml") in message


def test_several_errors_are_all_reported(tmp_path):
    data = minimal(passwrod="x")
    data["generation"] = {"device": "tpu"}
    data["limits"] = {"max_steps": 0}
    message = config_error(tmp_path, data)
    for key in ("matrix.passwrod", "generation.device", "limits.max_steps"):
        assert key in message


def test_size_over_max_pixels_is_an_error(tmp_path):
    data = {**minimal(), "generation": {"size": "1024x1024"}, "limits": {"max_pixels": 512 * 512}}
    message = config_error(tmp_path, data)
    assert "generation.size" in message and "limits.max_pixels" in message


def test_default_steps_over_max_steps_is_an_error(tmp_path):
    data = {**minimal(), "generation": {"steps": 30}, "limits": {"max_steps": 20}}
    message = config_error(tmp_path, data)
    assert "generation.steps" in message and "limits.max_steps" in message


# ---- file problems ------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        load_settings(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "matrix: [unclosed\n  user_id: x"))


@pytest.mark.parametrize(
    "text, kind", [("- a\n- b\n", "list"), ("just words\n", "str"), ("42\n", "int")]
)
def test_file_that_is_not_a_mapping(tmp_path, text, kind):
    with pytest.raises(ConfigError, match=f"must hold a mapping of keys, not {kind}"):
        load_settings(write(tmp_path, text))


# ---- secrets ------------------------------------------------------------------------------


def secret_file(tmp_path: Path, mode: int, content: str = f"  {SECRET}\n") -> Path:
    path = tmp_path / "password"
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    return path


def test_password_file_is_read_and_stripped(tmp_path, caplog):
    path = secret_file(tmp_path, 0o600)
    with caplog.at_level(logging.WARNING, logger="bot.config"):
        settings = load_settings(write(tmp_path, minimal(password_file=str(path))))
    assert isinstance(settings.matrix.password, SecretStr)
    assert settings.matrix.password.get_secret_value() == SECRET
    assert not [r for r in caplog.records if "readable" in r.getMessage()]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_readable_password_file_gives_a_warning(tmp_path, caplog, mode):
    path = secret_file(tmp_path, mode)
    with caplog.at_level(logging.WARNING, logger="bot.config"):
        load_settings(write(tmp_path, minimal(password_file=str(path))))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "password_file" in w and "readable by other users" in w and str(path) in w for w in warnings
    ), warnings
    assert not any(SECRET in r.getMessage() for r in caplog.records)


def test_access_token_file_is_read(tmp_path):
    path = tmp_path / "token"
    path.write_text("syt_token_value\n")
    path.chmod(0o600)
    settings = load_settings(write(tmp_path, minimal(access_token_file=str(path))))
    assert settings.matrix.access_token.get_secret_value() == "syt_token_value"


def test_password_file_from_environment_variable_path(tmp_path, monkeypatch):
    secret_file(tmp_path, 0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = load_settings(
        write(tmp_path, minimal(password_file="${CREDENTIALS_DIRECTORY}/password"))
    )
    assert settings.matrix.password.get_secret_value() == SECRET


@pytest.mark.parametrize(
    "content, words", [(None, "cannot read password_file"), ("  \n", "is empty")]
)
def test_unusable_password_file_is_an_error(tmp_path, content, words):
    path = tmp_path / "password"
    if content is not None:
        path.write_text(content)
        path.chmod(0o600)
    message = config_error(tmp_path, minimal(password_file=str(path)))
    assert words in message and "matrix" in message


def test_a_secret_and_its_file_together_is_an_error(tmp_path):
    path = secret_file(tmp_path, 0o600)
    message = config_error(tmp_path, minimal(password="inline", password_file=str(path)))
    assert "matrix.password or matrix.password_file, not both" in message


@pytest.mark.parametrize("source", ["inline", "file"])
def test_password_never_shows_in_repr_or_str(tmp_path, source):
    if source == "file":
        data = minimal(password_file=str(secret_file(tmp_path, 0o600)), access_token="syt_abcdef")
    else:
        data = minimal(password=SECRET, access_token="syt_abcdef")
    settings = load_settings(write(tmp_path, data))
    assert settings.matrix.password.get_secret_value() == SECRET
    for text in (repr(settings), str(settings), repr(settings.matrix), str(settings.matrix)):
        assert SECRET not in text
        assert "syt_abcdef" not in text


def test_password_never_shows_in_a_config_error(tmp_path):
    message = config_error(tmp_path, minimal(password=SECRET, user_id="bad"))
    assert "matrix.user_id" in message
    assert SECRET not in message


# ---- several named models -----------------------------------------------------------------


def test_named_models_come_after_the_default_named_by_its_folder(tmp_path):
    # Written by hand: the models keep the file's order (yaml.safe_dump would sort them).
    settings = load_settings(
        write(
            tmp_path,
            """
matrix: {homeserver_url: "https://matrix.example.org", user_id: "@imgbot:example.org"}
generation:
  model: /srv/models/sdxl-lightning
  models:
    turbo: /srv/models/sdxl-turbo
    sd1.5_base: /srv/models/sd15
  max_loaded_models: 2
""",
        )
    )
    g = settings.generation
    assert g.max_loaded_models == 2
    assert list(g.catalogue.items()) == [
        ("sdxl-lightning", Path("/srv/models/sdxl-lightning")),
        ("turbo", Path("/srv/models/sdxl-turbo")),
        ("sd1.5_base", Path("/srv/models/sd15")),
    ]


def test_the_default_listed_among_the_models_takes_that_name(tmp_path):
    settings = load_settings(
        write(
            tmp_path,
            with_section(
                "generation",
                model="/srv/models/sdxl-lightning/",
                models={"turbo": "/srv/models/sdxl-turbo", "fast": "/srv/models/sdxl-lightning"},
            ),
        )
    )
    assert list(settings.generation.catalogue) == ["fast", "turbo"]


def test_one_model_by_default(tmp_path):
    g = load_settings(write(tmp_path, with_section("generation", model="/m/tiny"))).generation
    assert (g.models, g.max_loaded_models, g.catalogue) == ({}, None, {"tiny": Path("/m/tiny")})
    assert load_settings(write(tmp_path, minimal())).generation.catalogue == {}


def test_the_example_config_documents_the_models_keys():
    g = load_settings(REPO / "config.example.yaml").generation
    assert (g.models, g.max_loaded_models) == ({}, None)
    text = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    assert "  models: {}" in text and "  max_loaded_models: null" in text


@pytest.mark.parametrize("name", ["a b", "-turbo", ".hidden", "tür", "x" * 65, ""])
def test_a_model_name_people_cannot_type_is_an_error(tmp_path, name):
    message = config_error(
        tmp_path, with_section("generation", model="/m/a", models={name: "/m/b"})
    )
    assert f"generation.models: {name!r} is not a model name: up to 64 letters, digits" in message


@pytest.mark.parametrize("value", [0, -1, "two"])
def test_max_loaded_models_is_a_positive_number(tmp_path, value):
    message = config_error(tmp_path, with_section("generation", max_loaded_models=value))
    assert "generation.max_loaded_models: " in message


def test_a_model_named_like_the_default_folder_is_an_error(tmp_path):
    message = config_error(
        tmp_path,
        with_section("generation", model="/srv/models/turbo", models={"turbo": "/srv/other/turbo"}),
    )
    assert (
        "generation: the default model /srv/models/turbo is called turbo (its folder's "
        "name), but models.turbo is /srv/other/turbo; rename one of them"
    ) in message


def test_models_without_a_default_is_an_error(tmp_path):
    message = config_error(tmp_path, with_section("generation", models={"turbo": "/m/t"}))
    assert "generation: models is set but model, the default model, is not" in message


def test_max_loaded_models_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBOT_GENERATION__MAX_LOADED_MODELS", "1")
    settings = load_settings(
        write(tmp_path, with_section("generation", model="/m/a", models={"b": "/m/b"}))
    )
    assert settings.generation.max_loaded_models == 1
    assert list(settings.generation.catalogue) == ["a", "b"]


@pytest.mark.parametrize(
    "devices,words",
    [
        ([], "list at least one device"),
        (["cuda:0", "cuda:0"], "a device is listed twice"),
        (["gpu0"], "each device is cuda:N"),
    ],
)
def test_generation_devices_are_checked(tmp_path, devices, words):
    assert words in config_error(tmp_path, with_section("generation", devices=devices))


def test_generation_devices_list_one_worker_each(tmp_path):
    settings = load_settings(
        write(tmp_path, with_section("generation", devices=["cuda:0", "cuda:1"]))
    )
    assert settings.generation.devices == ["cuda:0", "cuda:1"]


def test_an_edit_model_that_is_not_configured_is_an_error(tmp_path):
    message = config_error(
        tmp_path,
        with_section(
            "generation",
            model="/srv/models/turbo",
            models={"klein": "/srv/models/klein"},
            edit_model="kontext",
        ),
    )
    assert (
        "generation: edit_model 'kontext' is not a configured model; choose one of turbo, klein"
    ) in message


def test_a_style_may_name_a_configured_lora_with_a_template(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "matrix": {
                    "homeserver_url": "http://localhost:8008",
                    "user_id": "@b:localhost",
                    "password": "x",
                },
                "generation": {"loras": {"brand": "/srv/loras/brand.safetensors"}},
                "styles": {
                    "brand": {
                        "lora": "brand",
                        "weight": 0.8,
                        "template": "{prompt}, in our brand style",
                    }
                },
            }
        )
    )
    style = load_settings(path).styles["brand"]
    assert (style.prompt, style.lora, style.weight) == (
        "{prompt}, in our brand style",
        "brand",
        0.8,
    )


def test_a_style_naming_a_lora_that_is_not_configured_is_an_error(tmp_path):
    message = config_error(tmp_path, with_section("styles", brand={"lora": "brand"}))
    assert "styles.brand.lora: 'brand' is not in generation.loras (it lists none)" in message
