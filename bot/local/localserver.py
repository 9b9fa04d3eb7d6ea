"""A throw-away local Synapse homeserver for ``imgbot demo`` and the tests.

The demo and the test suite need a real Matrix server to talk to, and a
real one catches what a mock would not (auth, media, sync, rate limits).
Synapse is AGPL-licensed, so it is only ever a ``demo``/test extra, never
a runtime dependency of the bot, and it always runs as a separate process
(``python -m synapse.app.homeserver``) that this module merely drives over
HTTP. Nothing here imports synapse.

HTTP is done with urllib so the helpers work with or without an event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

SERVER_NAME = "localhost"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
MISSING_SYNAPSE = "the local homeserver needs matrix-synapse: pip install 'imgbot[demo]'"

# Every rate limiter this Synapse version reads (synapse/config/ratelimiting.py),
# as dotted paths. Raised rather than removed: Synapse has no "off" switch.
_RATE_LIMIT_KEYS = (
    "rc_message", "rc_registration", "rc_registration_token_validity",
    "rc_login.address", "rc_login.account", "rc_login.failed_attempts",
    "rc_admin_redaction", "rc_joins.local", "rc_joins.remote", "rc_joins_per_room",
    "rc_key_requests", "rc_3pid_validation", "rc_invites.per_room",
    "rc_invites.per_user", "rc_invites.per_issuer", "rc_third_party_invite",
    "rc_media_create", "rc_presence.per_user", "rc_delayed_event_mgmt",
    "rc_room_creation", "rc_reports", "rc_user_directory", "rc_profile",
)  # fmt: skip
_UNLIMITED = {"per_second": 10000, "burst_count": 100000}


def _free_port() -> int:
    # Racy in principle (the port is released before Synapse binds it), but
    # fine for a loopback test server and far simpler than passing a socket.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


class LocalHomeserver:
    """One Synapse process on 127.0.0.1 whose data lives in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        rate_limits: bool = False,
        python: str = sys.executable,
        max_upload_size: str = "50M",
        dynamic_thumbnails: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.rate_limits = rate_limits
        self.max_upload_size = max_upload_size
        # Thumbnails made when a client asks for one rather than at each upload (for the
        # bench, whose homeserver shares the CPU with the model).
        self.dynamic_thumbnails = dynamic_thumbnails
        self.python = python
        self.server_name = SERVER_NAME
        # Chosen once so the URL survives a restart, as clients of a real server expect.
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.workdir / "homeserver.yaml"
        self.log_path = self.workdir / "homeserver.log"
        self.output_path = self.workdir / "synapse.out"
        self._shared_secret = secrets.token_hex(32)
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalHomeserver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _check_synapse(self) -> None:
        if self.python == sys.executable:
            import importlib.util

            found = importlib.util.find_spec("synapse") is not None
        else:
            probe = [self.python, "-c", "import synapse"]
            found = subprocess.run(probe, capture_output=True).returncode == 0
        if not found:
            raise RuntimeError(MISSING_SYNAPSE)

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        key_path = self.workdir / "signing.key"
        if not key_path.exists():  # a restart must keep the server's identity
            # signedjson's format, "ed25519 <version> <unpadded base64 seed>", written
            # by hand so this process needs none of Synapse's dependencies.
            seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            key_path.write_text(f"ed25519 a {seed}\n")
        log_config = self.workdir / "log.yaml"
        log_config.write_text(json.dumps({
            "version": 1,
            "formatters": {"precise": {
                "format": "%(asctime)s %(name)s %(levelname)s %(request)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise",
                                  "filename": str(self.log_path), "encoding": "utf8"}},
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }))  # fmt: skip
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "pid_file": str(self.workdir / "homeserver.pid"),
            # "client" also mounts the admin API and both media trees
            # (/_matrix/media/v3 upload, /_matrix/client/v1/media download).
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],  # fmt: skip
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.workdir / "homeserver.db")},
            },
            "media_store_path": str(self.workdir / "media_store"),
            "signing_key_path": str(key_path),
            "log_config": str(log_config),
            "registration_shared_secret": self._shared_secret,
            "enable_registration": False,
            "report_stats": False,
            "suppress_key_server_warning": True,
            "trusted_key_servers": [],
            "enable_authenticated_media": True,
            "max_upload_size": self.max_upload_size,
            "url_preview_enabled": False,
            "presence": {"enabled": False},
            "dynamic_thumbnails": self.dynamic_thumbnails,
        }
        if self.dynamic_thumbnails:
            # Synapse makes its configured thumbnail sizes at every upload even with dynamic
            # thumbnails on (about 0.1 s of CPU for a 512² picture): with none configured it
            # makes only those a client asks for.
            config["thumbnail_sizes"] = []
        if not self.rate_limits:
            for key in _RATE_LIMIT_KEYS:
                node = config
                *parents, leaf = key.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = dict(_UNLIMITED)
        # JSON is valid YAML, which spares a yaml dependency here.
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self) -> None:
        if self.running:
            return
        self._check_synapse()
        self._write_config()
        cmd = [self.python, "-m", "synapse.app.homeserver", "-c", str(self.config_path)]
        # Own session: a Ctrl-C aimed at the demo or pytest must not reach Synapse
        # before stop() has had its say.
        with self.output_path.open("ab") as out:
            self._proc = subprocess.Popen(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._fail(f"Synapse exited with code {self._proc.returncode}")
            try:
                self._request("GET", "/_matrix/client/versions", timeout=1)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.kill()
        self._fail(f"Synapse did not answer within {START_TIMEOUT_S:.0f} s")

    def _fail(self, why: str) -> None:
        self._proc = None
        logs = "".join(f"\n--- {p.name} ---\n{_tail(p)}" for p in (self.output_path, self.log_path))
        raise RuntimeError(f"{why}; see {self.workdir}{logs}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Die abruptly, as a crashed homeserver would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except urllib.error.HTTPError as e:
            # Surface Synapse's errcode/error: the status line alone explains nothing.
            detail = e.read().decode(errors="replace")
            raise RuntimeError(f"{method} {path}: {e.code} {detail}") from None

    def register(self, localpart: str, password: str, admin: bool = False) -> str:
        """Create a user through the shared-secret admin API; returns its user ID."""
        path = "/_synapse/admin/v1/register"
        nonce = self._request("GET", path)["nonce"]
        mac = hmac.new(self._shared_secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode() + b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        body = {"nonce": nonce, "username": localpart, "password": password,
                "admin": admin, "mac": mac.hexdigest()}  # fmt: skip
        return str(self._request("POST", path, body)["user_id"])

    def login(self, localpart: str, password: str) -> dict[str, Any]:
        """Password login; the JSON holds access_token, device_id and user_id."""
        body = {"type": "m.login.password", "password": password,
                "identifier": {"type": "m.id.user", "user": localpart}}  # fmt: skip
        return self._request("POST", "/_matrix/client/v3/login", body)
