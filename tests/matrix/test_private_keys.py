"""The bot's secrets on disk (its login, cross-signing keys and nio's crypto store) are
0600 whatever the umask, and ones left readable by others are warned about."""

from __future__ import annotations

import logging
import os
import stat
from contextlib import contextmanager

import pytest

from bot.config.private import write_private
from bot.matrix import encryption
from bot.matrix.cross_signing import Identity

pytestmark = pytest.mark.skipif(encryption.STORE is None, reason="needs matrix-nio[e2e]")


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def test_the_crypto_store_is_private_under_a_permissive_umask(tmp_path):
    state = tmp_path / "state"
    with umask(0o000):
        folder = encryption.store_path(state)
        store = encryption.STORE("@imgbot:localhost", "DEVICE", str(folder))
        store.database.close()
    assert mode(state) == 0o700 and mode(folder) == 0o700
    files = list(folder.iterdir())
    assert [path.name for path in files] == ["@imgbot:localhost_DEVICE.db"]
    assert mode(files[0]) == 0o600


def test_a_crypto_store_others_can_read_is_warned_about(tmp_path, caplog):
    folder = encryption.store_path(tmp_path / "state")
    encryption.STORE("@imgbot:localhost", "DEVICE", str(folder)).database.close()
    path = folder / "@imgbot:localhost_DEVICE.db"
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        encryption.STORE("@imgbot:localhost", "DEVICE", str(folder)).database.close()
    assert any(
        str(path) in r.getMessage()
        and "encryption keys" in r.getMessage()
        and "chmod 600" in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_cross_signing_keys_are_private_under_a_permissive_umask(tmp_path, caplog):
    path = tmp_path / "state" / "cross-signing.json"
    with umask(0o000):
        Identity.create().save(path)
    assert mode(path.parent) == 0o700 and mode(path) == 0o600
    with caplog.at_level(logging.WARNING):
        Identity.load(path)
    assert not caplog.records

    path.chmod(0o640)
    with caplog.at_level(logging.WARNING):
        Identity.load(path)
    assert any(
        str(path) in r.getMessage() and "(mode 0640)" in r.getMessage() for r in caplog.records
    ), caplog.text


def test_a_secret_written_over_a_stale_temporary_file_is_private(tmp_path):
    """A crash between writing credentials.json.tmp and renaming it leaves the .tmp behind;
    the next write must not inherit its mode."""
    path = tmp_path / "credentials.json"
    stale = tmp_path / "credentials.json.tmp"
    stale.write_text("half")
    stale.chmod(0o644)
    with umask(0o000):
        write_private(path, '{"access_token": "t"}')
    assert mode(path) == 0o600
    assert not stale.exists()
