"""Shared fixtures: a real Synapse for the whole session, and a tiny real diffusers model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from bot.config import Settings  # noqa: E402
from bot.local.localserver import LocalHomeserver  # noqa: E402

PASSWORD = "correct horse battery staple"
ALLOWED = ["@alice:localhost", "@bob:localhost"]


@pytest.fixture(scope="session")
def homeserver(tmp_path_factory):
    server = LocalHomeserver(tmp_path_factory.mktemp("synapse"))
    server.start()
    for name in ("imgbot", "alice", "bob", "mallory"):
        server.register(name, PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def test_model(tmp_path_factory) -> Path:
    from generation.testing.tiny import make_test_model

    return make_test_model(tmp_path_factory.mktemp("models") / "tiny-sd", "sd")


@pytest.fixture(scope="session")
def engine(test_model):
    """The tiny model loaded once through the same code path as a real one."""
    from generation.models.engine import Engine

    engine = Engine(test_model, "cpu")
    engine.load()
    engine.warm_up(64, 64)
    return engine


@pytest.fixture
def make_settings(homeserver, test_model, tmp_path):
    """Settings for a bot on the test homeserver; keyword arguments override sections."""

    def make(state_dir: Path | None = None, **sections) -> Settings:
        matrix = {
            "homeserver_url": homeserver.url,
            "user_id": "@imgbot:localhost",
            "password": PASSWORD,
            "allowed_users": ALLOWED,
            **sections.pop("matrix", {}),
        }
        generation = {
            "model": test_model,
            "size": "64x64",
            "steps": 2,
            **sections.pop("generation", {}),
        }
        return Settings(
            matrix=matrix,
            generation=generation,
            state_dir=state_dir or tmp_path / "state",
            **sections,
        )

    return make


@pytest.fixture
async def alice(homeserver):
    from tests.helpers.chatting import Chat

    chat = await Chat.login(homeserver, "alice", PASSWORD)
    yield chat
    await chat.close()


@pytest.fixture
async def alice_e2e(homeserver, tmp_path):
    """alice with an encryption store of her own: she can talk in encrypted rooms."""
    from tests.helpers.chatting import Chat

    chat = await Chat.login(homeserver, "alice", PASSWORD, store=tmp_path / "alice-store")
    yield chat
    await chat.close()


@pytest.fixture
async def mallory(homeserver):
    from tests.helpers.chatting import Chat

    chat = await Chat.login(homeserver, "mallory", PASSWORD)
    yield chat
    await chat.close()


@pytest.fixture
async def bob(homeserver):
    from tests.helpers.chatting import Chat

    chat = await Chat.login(homeserver, "bob", PASSWORD)
    yield chat
    await chat.close()


@pytest.fixture
async def own_server(tmp_path):
    """A homeserver of the test's own (to kill, or with a 40 KiB upload limit), with alice
    logged in: (server, alice)."""
    from tests.helpers.chatting import Chat

    server = LocalHomeserver(tmp_path / "own-synapse", max_upload_size="40K")
    server.start()
    for name in ("imgbot", "alice"):
        server.register(name, PASSWORD)
    alice = await Chat.login(server, "alice", PASSWORD)
    yield server, alice
    await alice.close()
    server.stop()
