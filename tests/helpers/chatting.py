"""The user's side of a conversation with the bot, for tests against the real homeserver."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    DownloadError,
    RoomCreateResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)
from nio.crypto.attachments import decrypt_attachment

from bot.store import db as database
from bot.store import usage
from bot.app import run_bot
from bot.matrix.encryption import keep_keys


def reply_target(event: dict[str, Any]) -> str | None:
    relation = event.get("content", {}).get("m.relates_to") or {}
    return (relation.get("m.in_reply_to") or {}).get("event_id")


class Chat:
    """A logged-in user who keeps every timeline event it has seen, per room."""

    def __init__(self, client: AsyncClient):
        self.client = client
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self.typed: dict[str, set[str]] = {}  # who was ever seen typing, per room

    @classmethod
    async def login(cls, server, localpart: str, password: str, store: Path | None = None) -> Chat:
        """Logged in and synced; with a `store` folder, with encryption (a nio device that
        is not cross-signed)."""
        if store is None:
            client = AsyncClient(server.url, f"@{localpart}:{server.server_name}")
        else:
            store.mkdir(parents=True, exist_ok=True)
            client = AsyncClient(
                server.url,
                f"@{localpart}:{server.server_name}",
                store_path=str(store),
                config=AsyncClientConfig(encryption_enabled=True),
            )
        await client.login(password)
        chat = cls(client)
        await chat.sync(0)
        return chat

    @property
    def user_id(self) -> str:
        return self.client.user_id

    async def close(self) -> None:
        await self.client.close()

    async def sync(self, timeout_ms: int = 1000) -> None:
        # A timeline limit above anything a test sends, so the user's view has no gaps.
        response = await self.client.sync(
            timeout=timeout_ms, sync_filter={"room": {"timeline": {"limit": 1000}}}
        )
        if isinstance(response, SyncResponse):
            for room_id, info in response.rooms.join.items():
                self.seen.setdefault(room_id, []).extend(e.source for e in info.timeline.events)
                for event in info.ephemeral:
                    self.typed.setdefault(room_id, set()).update(getattr(event, "users", ()))
        await keep_keys(self.client)

    async def room_with(self, bot_id: str, name: str = "test room", encrypted: bool = False) -> str:
        state = (
            [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ]
            if encrypted
            else []
        )
        created = await self.client.room_create(name=name, invite=[bot_id], initial_state=state)
        assert isinstance(created, RoomCreateResponse), created
        await self.wait_for(
            created.room_id,
            lambda events: any(
                e["type"] == "m.room.member"
                and e.get("state_key") == bot_id
                and e["content"].get("membership") == "join"
                for e in events
            ),
            timeout=30,
        )
        return created.room_id

    async def send(self, room_id: str, body: str, **content: Any) -> str:
        response = await self.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": body, **content},
            ignore_unverified_devices=True,
        )
        assert isinstance(response, RoomSendResponse), response
        return response.event_id

    async def send_picture(
        self,
        room_id: str,
        data: bytes,
        mimetype: str,
        width: int,
        height: int,
        body: str = "photo.png",
        declared: int | None = None,
        **content: Any,
    ) -> str:
        """Upload a file and post it as an m.image, as a client does (`declared`: the size
        its info claims, if not the true one)."""
        encrypt = self.client.olm is not None and self.client.rooms[room_id].encrypted
        upload, keys = await self.client.upload(
            lambda *_: io.BytesIO(data),
            content_type=mimetype,
            filename=body,
            filesize=len(data),
            encrypt=encrypt,
        )
        assert isinstance(upload, UploadResponse), upload
        where = (
            {"file": {"url": upload.content_uri, **keys}}
            if encrypt
            else {"url": upload.content_uri}
        )
        return await self.send(
            room_id,
            body,
            msgtype="m.image",
            **where,
            info={
                "mimetype": mimetype,
                "w": width,
                "h": height,
                "size": len(data) if declared is None else declared,
            },
            **content,
        )

    async def reply(self, room_id: str, event_id: str, body: str) -> str:
        """A reply to `event_id`, as clients send it (without a fallback quote)."""
        return await self.send(
            room_id, body, **{"m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}
        )

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        """A reaction on `event_id`, as Element sends one (in the clear, also in an
        encrypted room)."""
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        response = await self.client.room_send(room_id, "m.reaction", content)
        assert isinstance(response, RoomSendResponse), response
        return response.event_id

    def reactions(self, room_id: str, event_id: str, sender: str) -> list[str]:
        """The keys `sender` reacted with on `event_id`, in order (redacted ones left out)."""
        redacted = {e.get("redacts") for e in self.seen.get(room_id, [])}
        return [
            e["content"]["m.relates_to"]["key"]
            for e in self.seen.get(room_id, [])
            if e.get("type") == "m.reaction"
            and e.get("sender") == sender
            and e["event_id"] not in redacted
            and (e.get("content", {}).get("m.relates_to") or {}).get("event_id") == event_id
        ]

    def redacted(self, room_id: str, event_id: str) -> bool:
        """Whether a redaction of `event_id` has been seen."""
        return any(
            e.get("type") == "m.room.redaction"
            and (e.get("redacts") or e.get("content", {}).get("redacts")) == event_id
            for e in self.seen.get(room_id, [])
        )

    async def wait_for(
        self, room_id: str, predicate: Callable[[list], Any], timeout: float = 60
    ) -> Any:
        """Sync until predicate(events of the room) is truthy; return what it returned."""
        deadline = time.monotonic() + timeout
        while True:
            found = predicate(self.seen.get(room_id, []))
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s; saw: "
                    f"{[_short(e) for e in self.seen.get(room_id, [])]}"
                )
            await self.sync(1000)

    def replies(self, room_id: str, event_id: str, msgtype: str | None = None) -> list[dict]:
        return [
            e
            for e in self.seen.get(room_id, [])
            if reply_target(e) == event_id
            and (msgtype is None or e["content"].get("msgtype") == msgtype)
        ]

    async def wait_reply(
        self, room_id: str, event_id: str, msgtype: str, count: int = 1, timeout: float = 60
    ) -> list[dict]:
        return await self.wait_for(
            room_id,
            lambda _: r if len(r := self.replies(room_id, event_id, msgtype)) >= count else None,
            timeout,
        )

    async def download(self, mxc: str) -> bytes:
        response = await self.client.download(mxc=mxc)
        assert not isinstance(response, DownloadError), response
        return response.body

    async def picture(self, content: dict[str, Any]) -> bytes:
        """The file of a picture message, decrypted (and its hash checked) when it is an
        encrypted one."""
        if "file" not in content:
            return await self.download(content["url"])
        file = content["file"]
        return decrypt_attachment(
            await self.download(file["url"]), file["key"]["k"], file["hashes"]["sha256"], file["iv"]
        )


def _short(event: dict) -> str:
    content = event.get("content", {})
    return (
        f"{event.get('type')}/{content.get('msgtype', content.get('membership', ''))}:"
        f"{str(content.get('body', ''))[:60]}"
    )


@asynccontextmanager
async def bot_running(settings, engine):
    """Run the bot in this event loop until the block ends; fail loudly if it dies."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_bot(settings, engine, stop=stop, ready=ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()  # raises what stopped the bot
        raise AssertionError("the bot stopped before it was ready")
    if waiter not in done:
        raise AssertionError("the bot was not ready within 60 s")
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 90)


async def usage_rows(settings) -> list[dict]:
    """The bot's usage log, read the way `imgbot usage` reads it."""
    db = await database.connect(settings.state_dir / "imgbot.sqlite3")
    try:
        return await usage.query(db)
    finally:
        await db.close()
