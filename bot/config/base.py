"""What every section of the settings shares: the error type, sizes, user IDs, secrets
read from files (and the warning when others can read them)."""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

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
