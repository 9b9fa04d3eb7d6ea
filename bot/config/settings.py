"""The whole settings model, and loading it once: a YAML file overridden by IMGBOT_…
environment variables; a wrong value stops the program with the key's name and what is
allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.config.base import READ_SECRETS, ConfigError, warn_if_config_shared
from bot.config.chat import (
    NAME_RE,
    ChatSettings,
    LimitSettings,
    ProgressSettings,
    QuotaSettings,
    RoomSettings,
    StyleSettings,
)
from bot.config.compliance import ComplianceSettings
from bot.config.generation import GenerationSettings
from bot.config.matrix import MatrixSettings
from bot.config.service import DiskSettings, MetricsSettings, UsageSettings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IMGBOT_", env_nested_delimiter="__", extra="forbid"
    )

    matrix: MatrixSettings = Field(
        description=("The homeserver, the bot's account, and who may use it.")
    )
    state_dir: Path = Field(
        Path("./state"),
        description=(
            "Where the bot keeps its login, sync position, encryption keys and SQLite database "
            "(jobs, usage log). It holds the access token: the bot makes it mode 700 (its files "
            "600) and warns when an existing one is readable by others."
        ),
    )
    generation: GenerationSettings = Field(
        GenerationSettings(), description=("The models, devices and defaults of a picture.")
    )
    limits: LimitSettings = Field(
        LimitSettings(), description=("What one command, one person and the queue may ask for.")
    )
    styles: dict[str, StyleSettings] = Field(
        {},
        description=(
            "Style presets by name (lowercase letters, digits and -), added to the fifteen "
            "built-in ones; a name here replaces the built-in preset of that name."
        ),
    )
    rooms: RoomSettings = Field(
        RoomSettings(),
        description=("Who may change a room's defaults, and where the usage report is posted."),
    )
    quotas: QuotaSettings = Field(
        QuotaSettings(), description=("How many pictures each person may make.")
    )
    progress: ProgressSettings = Field(
        ProgressSettings(),
        description=("What people see while they wait: a status notice edited in place."),
    )
    chat: ChatSettings = Field(
        ChatSettings(), description=("The reaction buttons under each picture the bot posts.")
    )
    usage: UsageSettings = Field(
        UsageSettings(), description=("What the usage log keeps, and for how long.")
    )
    metrics: MetricsSettings = Field(
        MetricsSettings(), description=("/healthz and Prometheus /metrics.")
    )
    disk: DiskSettings = Field(
        DiskSettings(),
        description=("The free space of state_dir's filesystem, checked every 10 s."),
    )
    compliance: ComplianceSettings = Field(
        ComplianceSettings(),
        description=(
            "What marks each picture as AI-generated, and what checks it before it is sent."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description=(
            "DEBUG, INFO, WARNING or ERROR (any case). Prompts and tokens are never logged at INFO."
        ),
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description=(
            "text (one readable line per record) or json (one JSON object per line, for a log "
            "collector); any case."
        ),
    )
    # Above the 30 s long poll and the 60 s request timeout, so that a slow homeserver is
    # not taken for a stalled bot.
    watchdog_seconds: int = Field(
        600,
        ge=0,
        description=(
            "Exit with status 3 (for systemd to start the bot again) when the sync loop has made "
            "no progress this long; at least 180, or 0 for no watchdog."
        ),
    )

    @field_validator("watchdog_seconds")
    @classmethod
    def _watchdog(cls, value: int) -> int:
        if 0 < value < 180:
            raise ValueError(f"{value}: use at least 180 (or 0 to turn the watchdog off)")
        return value

    @field_validator("styles")
    @classmethod
    def _style_names(cls, value: dict[str, StyleSettings]) -> dict[str, StyleSettings]:
        for name in value:
            if not NAME_RE.match(name):
                raise ValueError(
                    f"style name {name!r}: use lowercase letters, digits and -, e.g. company-brand"
                )
        return value

    @model_validator(mode="after")
    def _style_loras_are_configured(self) -> Settings:
        for name, style in self.styles.items():
            if style.lora is not None and style.lora not in self.generation.loras:
                raise ValueError(
                    f"styles.{name}.lora: {style.lora!r} is not in "
                    "generation.loras"
                    + (
                        f" (there: {', '.join(self.generation.loras)})"
                        if self.generation.loras
                        else " (it lists none)"
                    )
                )
        return self

    # Before the Literal's own check: any case is taken, and a wrong value gets these words.
    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value  # the Literal says what it takes
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"{value!r}: choose DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @field_validator("log_format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.lower() not in ("text", "json"):
            raise ValueError(f"{value!r}: choose text or json")
        return value.lower()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        width, height = self.generation.width_height
        if width * height > self.limits.max_pixels:
            raise ValueError(
                f"generation.size {self.generation.size} is over limits.max_pixels "
                f"({self.limits.max_pixels})"
            )
        if self.generation.steps > self.limits.max_steps:
            raise ValueError(
                f"generation.steps {self.generation.steps} is over limits.max_steps "
                f"({self.limits.max_steps})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init arguments; the environment overrides it.
        return (env_settings, init_settings)


def _format_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required"
        elif item["type"] == "extra_forbidden":
            message = "is not a known key"
        lines.append(f"{key}: {message}" if key else message)
    return "\n".join(lines)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """Where in the file YAML stopped, and why: PyYAML names the text "<unicode string>"."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"{path} is not valid YAML: {exc}"
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and (start.line, start.column) != (mark.line, mark.column):
        problem += f" ({context} at line {start.line + 1}, column {start.column + 1})"
    elif context:
        problem += f" ({context})"
    snippet = mark.get_snippet()
    return (
        f"{path} is not valid YAML: line {mark.line + 1}, column {mark.column + 1}: "
        f"{problem}" + (f"\n{snippet}" if snippet else "")
    )


def load_settings(path: str | Path | None, *, secrets: bool = True, **overrides: Any) -> Settings:
    """Read the YAML file (if any) and the environment; raise ConfigError naming the key.

    secrets=False leaves matrix.password_file, access_token_file and
    generation.ray.token_file unread, for commands that never log in or connect."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_error(path, exc)) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of keys, not {type(loaded).__name__}")
        data = loaded or {}
        warn_if_config_shared(path, data)  # a password written into it
    data.update(overrides)
    token = READ_SECRETS.set(secrets)
    try:
        return Settings(**data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}:\n{_format_error(exc)}") from None
    finally:
        READ_SECRETS.reset(token)
