"""What every section of the settings shares: the error type, sizes, user IDs, secrets
read from files (and the warning when others can read them)."""

from __future__ import annotations

import logging
import os
import re
import shlex
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from bot.config.private import shared_mode
from generation.errors import ImgbotError

log = logging.getLogger(__name__)

SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
USER_ID_RE = re.compile(r"^@[^:\s]+:[^\s]+$")


# False while `load_settings(..., secrets=False)` loads a config for a command that never
# logs in or connects (`imgbot usage`, `references index`): the secret files (matrix's
# password and token, generation.ray.token_file) are then not read, so such a command works
# where only the service can read them (systemd's $CREDENTIALS_DIRECTORY). A context
# variable, because pydantic-settings passes no validation context through a settings
# model's constructor.
READ_SECRETS: ContextVar[bool] = ContextVar("READ_SECRETS", default=True)


class ConfigError(ImgbotError):
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


def _warn_if_shared(path: Path, key: str, holds: str = "", instead: str = "") -> None:
    """A secret file (a password, a signing key, a config with a password in it) that other
    users can read is worth a warning; reading it still works. An unreadable file is
    reported by its reader."""
    mode = shared_mode(path)
    if mode is None:
        return
    what = f"{key} {path}" + (f" holds {holds} and" if holds else "")
    log.warning(
        "%s is readable by other users (mode %04o); run `chmod 600 %s`%s",
        what,
        mode,
        shlex.quote(str(path)),
        f", or {instead}" if instead else "",
    )


# Secrets a config may hold inline: what each is called, and the key for a file of its own.
INLINE_SECRETS = {
    "password": ("the password", "password_file"),
    "access_token": ("the access token", "access_token_file"),
}


def warn_if_config_shared(path: Path, data: dict[str, Any]) -> None:
    """The config file's own mode matters once a secret is written into it."""
    matrix = data.get("matrix")
    for key, (words, file_key) in INLINE_SECRETS.items():
        if isinstance(matrix, dict) and matrix.get(key):
            _warn_if_shared(
                path, "config file", f"matrix.{key}", f"move {words} to matrix.{file_key}"
            )


def expand_secret_path(path: Path) -> Path:
    """A secret file's path as written in the config, with `${CREDENTIALS_DIRECTORY}` (or
    any environment variable, and `~`) expanded: systemd's credentials folder is only known
    when the service starts."""
    return Path(os.path.expandvars(str(path))).expanduser()


def _read_secret(path: Path, key: str) -> SecretStr:
    path = expand_secret_path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {key} {path}: {exc.strerror}") from exc
    _warn_if_shared(path, key)
    if not text:
        raise ValueError(f"{key} {path} is empty")
    return SecretStr(text)
