"""A Matrix client that is not nio, for end-to-end encryption tests: matrix-js-sdk with Rust
crypto under node (tests/helpers/e2e_client/client.mjs), driven over JSON lines.

Each ``JsClient`` is one node process and one logged-in, cross-signed device (unless
``cross_sign=False``). It shares room keys only with devices cross-signed by their owner and
refuses to decrypt events from devices that are not (js-sdk's
OnlySignedDevicesIsolationMode), so a bot that has not cross-signed its device is seen to fail.

    async with await JsClient.login(homeserver, "alice", PASSWORD) as alice:
        room = await alice.create_room(invite=["@imgbot:localhost"])
        await alice.send_text(room, "!img a cat --size 64x64")
        [reply] = await alice.wait_events(room, sender="@imgbot:localhost")

An event is a dict: event_id, room_id, sender, type, content (decrypted), wire_type,
encrypted, decrypted, decryption_failure (js-sdk's DecryptionFailureCode name or None),
settled, sender_device_id, shield ({"colour": "NONE"|"GREY"|"RED", "reason": name or None}
for decrypted events, else None), index (for ``since=``), origin_server_ts.

What js-sdk 37 does about a device that is not cross-signed by its owner (whether or not
the owner has a cross-signing identity), seen from an OnlySignedDevicesIsolationMode client:
its messages fail with decryption_failure "UNSIGNED_SENDER_DEVICE" (settled, never retried;
content {"msgtype": "m.bad.encrypted", ...}); our room keys are withheld from it
(m.room_key.withheld "m.unverified"), so it sees "MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE".
A client with ``isolation="all"`` decrypts its messages under shield RED / UNSIGNED_DEVICE.
An OnlySigned client that is not cross-signed itself cannot send at all ("Encryption failed
because cross-signing is not set up on your account"): use ``isolation="all"`` for it.

E2E_CLIENT_DEBUG=1 makes node log at debug level and keeps each client's log file.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLIENT_DIR = Path(__file__).parent / "e2e_client"
SCRIPT = CLIENT_DIR / "client.mjs"
INSTALL_TIMEOUT_S = 300
NEED_NODE = (
    "the end-to-end encryption tests need node (>= 20) and npm on PATH, "
    "for the matrix-js-sdk client in tests/helpers/e2e_client"
)


class JsClientError(RuntimeError):
    pass


def ensure_installed() -> None:
    """``npm ci`` in tests/helpers/e2e_client once (again when package-lock.json has changed)."""
    stamp = CLIENT_DIR / "node_modules" / ".package-lock.json"
    lock = CLIENT_DIR / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise JsClientError(NEED_NODE)
    with open(CLIENT_DIR / ".install.lock", "w") as held:  # pytest-xdist workers take turns
        fcntl.flock(held, fcntl.LOCK_EX)
        if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
            return
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT_DIR, capture_output=True,
            text=True, timeout=INSTALL_TIMEOUT_S,
        )  # fmt: skip
        if done.returncode != 0:
            raise JsClientError(f"npm ci in {CLIENT_DIR} failed:\n{done.stdout}\n{done.stderr}")


class JsClient:
    """One matrix-js-sdk device in a node process. Every method takes a ``timeout``
    (seconds) and raises JsClientError, with the tail of node's log, when it fails."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self._proc = proc
        self._log_path = log_path
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {
            0: asyncio.get_running_loop().create_future()  # the "ready" line
        }
        self._reader = asyncio.create_task(self._read())
        self.user_id = ""
        self.device_id = ""
        self.access_token = ""
        self.cross_signed = False

    @classmethod
    async def start(cls) -> JsClient:
        """A node process, not yet logged in."""
        ensure_installed()
        node = shutil.which("node")
        if not node:
            raise JsClientError(NEED_NODE)
        fd, log_name = tempfile.mkstemp(prefix="e2e-client-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                node, str(SCRIPT), cwd=CLIENT_DIR,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                limit=64 * 1024 * 1024,
            )  # fmt: skip
        client = cls(proc, Path(log_name))
        try:
            await client._wait(0, "start", 30)  # node's "ready" line
        except BaseException:
            await client.close()
            raise
        return client

    @classmethod
    async def login(
        cls, homeserver: Any, user: str, password: str, *, cross_sign: bool = True,
        isolation: str = "only_signed", timeout: float = 60,
    ) -> JsClient:  # fmt: skip
        """Start, log in (``homeserver`` is a LocalHomeserver or a URL), start syncing, and
        bootstrap cross-signing unless ``cross_sign=False``. ``isolation="all"`` is
        js-sdk's AllDevicesIsolationMode instead (shares with and decrypts from anyone)."""
        client = await cls.start()
        try:
            info = await client.call(
                "login", timeout, homeserver=getattr(homeserver, "url", homeserver), user=user,
                password=password, bootstrap_cross_signing=cross_sign, isolation=isolation,
                timeout=timeout,
            )  # fmt: skip
        except BaseException:
            await client.close()
            raise
        client.user_id, client.device_id = info["user_id"], info["device_id"]
        client.access_token, client.cross_signed = info["access_token"], info["cross_signed"]
        return client

    async def __aenter__(self) -> JsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ the protocol

    async def _read(self) -> None:
        assert self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            future = self._pending.pop(answer.get("id"), None)
            if future is not None and not future.done():
                if answer.get("ok"):
                    future.set_result(answer.get("result"))
                else:
                    future.set_exception(JsClientError(answer.get("error")))
        for future in self._pending.values():  # node has gone
            if not future.done():
                future.set_exception(JsClientError("the node client exited"))
        self._pending.clear()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "".join(text.splitlines(True)[-lines:])

    async def _wait(self, id_: int, cmd: str, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(self._pending[id_], timeout)
        except (JsClientError, asyncio.TimeoutError) as e:
            why = "timed out" if isinstance(e, asyncio.TimeoutError) else str(e)
            raise JsClientError(
                f"{cmd} ({self.user_id or 'not logged in'}): {why}\n"
                f"--- node log {self._log_path} ---\n{self.log_tail()}"
            ) from None
        finally:
            self._pending.pop(id_, None)

    async def call(self, cmd: str, wait: float = 30, /, **args: Any) -> Any:
        """Send one command to node and wait up to ``wait`` s for its answer (a dict)."""
        if self._proc.returncode is not None or self._reader.done():
            raise JsClientError(f"{cmd}: the node client has exited\n{self.log_tail()}")
        id_ = next(self._ids)
        self._pending[id_] = asyncio.get_running_loop().create_future()
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"id": id_, "cmd": cmd, "args": args}).encode() + b"\n")
        await self._proc.stdin.drain()
        # node's own waits end at `wait`; give its answer a moment to come back
        return await self._wait(id_, cmd, wait + 5)

    async def close(self) -> None:
        """Stop syncing and end the node process (killed if it lingers)."""
        try:
            if self._proc.returncode is None:
                try:
                    await asyncio.wait_for(self.call("stop", 5), 5)
                    await asyncio.wait_for(self._proc.wait(), 5)
                except (JsClientError, asyncio.TimeoutError, ConnectionError):
                    pass
        finally:
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()
            self._reader.cancel()
            if os.environ.get("E2E_CLIENT_DEBUG") != "1":  # with it: a debug-level log, kept
                self._log_path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ actions

    async def create_room(
        self, invite: Sequence[str] = (), *, name: str | None = None, encrypted: bool = True,
        wait_join: bool = True, timeout: float = 30,
    ) -> str:  # fmt: skip
        """A private room (m.megolm.v1.aes-sha2 unless ``encrypted=False``) inviting
        ``invite``; waits until this client sees the room encrypted and, with
        ``wait_join``, every invitee joined. Returns the room ID."""
        result = await self.call(
            "create_room", timeout, invite=list(invite), name=name, encrypted=encrypted,
            wait_join=wait_join, timeout=timeout,
        )  # fmt: skip
        return str(result["room_id"])

    async def join(self, room_id: str | None = None, timeout: float = 30) -> str:
        """Wait for an invite (to ``room_id``, or any) and join; returns the room ID."""
        return str((await self.call("join", timeout, room_id=room_id, timeout=timeout))["room_id"])

    async def wait_member(
        self, room_id: str, user_id: str, membership: str = "join", timeout: float = 30
    ) -> None:
        await self.call("wait_member", timeout, room_id=room_id, user_id=user_id,
                        membership=membership, timeout=timeout)  # fmt: skip

    async def send_text(
        self, room_id: str, body: str, *, reply_to: str | None = None, msgtype: str = "m.text",
        timeout: float = 30,
    ) -> str:  # fmt: skip
        """Send an encrypted message (refused if the room is not encrypted); its event ID."""
        result = await self.call("send_text", timeout, room_id=room_id, body=body,
                                 reply_to=reply_to, msgtype=msgtype)  # fmt: skip
        return str(result["event_id"])

    async def send_image(
        self, room_id: str, path: str | Path, *, mimetype: str = "image/png",
        reply_to: str | None = None, body: str | None = None, timeout: float = 30,
    ) -> str:  # fmt: skip
        """Encrypt the file (AES-CTR-256, spec v2), upload the ciphertext and send an
        encrypted m.image with ``file`` (no ``url``), optionally as a reply; its event ID."""
        result = await self.call(
            "send_image", timeout, room_id=room_id, path=str(Path(path).resolve()),
            mimetype=mimetype, reply_to=reply_to, body=body,
        )  # fmt: skip
        return str(result["event_id"])

    async def events(
        self, room_id: str | None = None, *, sender: str | None = None,
        types: list[str] | None = None, since: int = 0,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Timeline events seen so far (no state events), without waiting."""
        result = await self.call("events", 10, room_id=room_id, sender=sender, types=types,
                                 since=since)  # fmt: skip
        return list(result["events"])

    async def wait_events(
        self, room_id: str | None = None, *, sender: str | None = None,
        types: list[str] | None = None, count: int = 1, since: int = 0, timeout: float = 30,
        allow_timeout: bool = False,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """The first ``count`` timeline events (from index ``since``) matching the filters,
        once each is settled: decrypted, or failed for a reason no later key can fix.
        ``types`` is matched against the decrypted type; undecryptable events match any.
        On timeout raise, or with ``allow_timeout`` return what there is (maybe unsettled
        events, e.g. still MEGOLM_UNKNOWN_INBOUND_SESSION_ID when the key never came)."""
        result = await self.call(
            "wait_events", timeout, room_id=room_id, sender=sender, types=types, count=count,
            since=since, timeout=timeout,
        )  # fmt: skip
        if result["timed_out"] and not allow_timeout:
            got = [(e["type"], e["decryption_failure"]) for e in result["events"]]
            raise JsClientError(
                f"wait_events ({self.user_id}): {timeout} s and only {got} of {count} "
                f"settled events from {sender or 'anyone'} in {room_id}\n{self.log_tail()}"
            )
        return list(result["events"])

    async def download(
        self, file: dict[str, Any], path: str | Path, timeout: float = 30
    ) -> dict[str, Any]:
        """Fetch an encrypted attachment (an event's ``content["file"]`` or
        ``["info"]["thumbnail_file"]``) through /_matrix/client/v1/media/download with this
        device's token, check its sha256, decrypt it into ``path``. Returns path, size,
        hash_ok (the unpadded base64 strings equal), hash_expected, hash_actual and
        problems (a list of spec deviations in ``file``: padded base64, wrong alg, ...)."""
        return dict(await self.call("download_attachment", timeout, file=file,
                                    path=str(Path(path).resolve())))  # fmt: skip

    async def download_image(
        self, event: dict[str, Any], directory: str | Path, timeout: float = 30
    ) -> dict[str, Any]:
        """``download`` for an m.image event's file and thumbnail: {"file": ..., and
        "thumbnail": ... when the event has an encrypted thumbnail}."""
        content = event["content"]
        if "file" not in content:
            raise JsClientError(f"{event['event_id']} has no encrypted file: {content}")
        out = {"file": await self.download(content["file"], Path(directory) / "file", timeout)}
        thumb = content.get("info", {}).get("thumbnail_file")
        if thumb:
            out["thumbnail"] = await self.download(thumb, Path(directory) / "thumbnail", timeout)
        return out

    async def device_status(
        self, user_id: str, device_id: str | None = None, timeout: float = 15
    ) -> dict[str, Any]:
        """How this client sees another user's keys, after a fresh /keys/query:
        devices (IDs), has_cross_signing, user_cross_signing_verified,
        user_was_cross_signing_verified and, for ``device_id``: device_known,
        signed_by_owner, cross_signing_verified, locally_verified."""
        return dict(await self.call("device_status", timeout, user_id=user_id,
                                    device_id=device_id, timeout=timeout))  # fmt: skip

    async def react(
        self, room_id: str, event_id: str, key: str, *, encrypted: bool = False,
        timeout: float = 30,
    ) -> str:  # fmt: skip
        """A reaction on ``event_id``; its event ID. js-sdk sends reactions in the clear, also
        in an encrypted room, as Element does; ``encrypted=True`` sends it encrypted, as some
        other clients do."""
        result = await self.call("send_reaction", timeout, room_id=room_id, event_id=event_id,
                                 key=key, encrypted=encrypted)  # fmt: skip
        return str(result["event_id"])

    async def reactions(self, room_id: str, event_id: str, sender: str | None = None) -> list[str]:
        """The keys ``sender`` (or anyone) reacted with on ``event_id``, in the order seen,
        those taken back left out; without waiting."""
        result = await self.call("reactions", 10, room_id=room_id, event_id=event_id,
                                 sender=sender)  # fmt: skip
        return list(result["keys"])
