"""Folders and files only the bot's own user may read, whatever the umask.

state_dir holds the access token, the encryption keys and every prompt. Under systemd the
unit's UMask=0077 keeps it private; started by hand the umask is commonly 022, and SQLite
makes its files 0644 less the umask. So the bot gives what it creates its mode itself
(0700 folders, 0600 files), and only warns about what already exists with a wider mode:
an operator may have opened the usage log to an admin group on purpose.

It lives below the wings that write such files (store, matrix), beside the readers of the
config's own secret files, which warn the same way.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600
_SHARED = stat.S_IRWXG | stat.S_IRWXO


def private_dir(path: Path) -> Path:
    """Make the folder 0700 if it is missing (its missing parents get the usual mode). An
    existing folder keeps its mode: `warn_if_shared` reports it."""
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=FOLDER_MODE)
    except FileExistsError:  # another process made it first: its mode is its own
        return path
    os.chmod(path, FOLDER_MODE)  # mkdir's mode is less the umask (0277 would lock us out)
    return path


def private_file(path: Path) -> Path:
    """Create the file empty and 0600 if it is missing, so that SQLite, opening it later,
    keeps that mode (for its -wal, -shm and -journal files too: SQLite gives them the mode
    of the database). An existing file keeps its mode."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (never a half-written secret)."""
    private_dir(path.parent)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        # A .tmp left by a crash keeps its old mode through O_TRUNC; the umask narrows it.
        os.fchmod(handle.fileno(), FILE_MODE)
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def shared_mode(path: Path) -> int | None:
    """The permission bits of `path` when its group or other users have any; else None
    (also when it is missing)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & _SHARED else None


def warn_if_shared(path: Path, holds: str) -> bool:
    """Log a WARNING, with the command that fixes it, when others may read `path`, which
    `holds` what is said. True when it warned."""
    mode = shared_mode(path)
    if mode is None:
        return False
    folder = path.is_dir()
    log.warning(
        "%s %s, which holds %s, is open to other users of this machine (mode %04o); "
        "run `chmod %s %s` so that only the bot's user can %s it",
        "the folder" if folder else "the file",
        path,
        holds,
        mode,
        f"{FOLDER_MODE:o}" if folder else f"{FILE_MODE:o}",
        shlex.quote(str(path)),
        "enter" if folder else "read",
    )
    return True


def prepare_state_dir(state_dir: Path) -> None:
    """At start: a new state_dir is made 0700; an existing one open to others is warned
    about (what is in it is reported by the modules that open it)."""
    private_dir(state_dir)
    warn_if_shared(state_dir, "the bot's login, encryption keys and usage log (state_dir)")
