"""The `generation.ray:` section: the Ray cluster whose actors are the GPU workers when
`generation.backend` is `ray` (README "More than one GPU server"). Only settings: nothing
here imports Ray, which the local backend neither needs nor has installed."""

from __future__ import annotations

import math
import re
from pathlib import Path

from pydantic import Field, PrivateAttr, SecretStr, field_validator

from bot.config.base import ConfigError, _read_secret, _Section, expand_secret_path
from generation.cluster.address import is_address

TOKEN_KEY = "generation.ray.token_file"

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RaySettings(_Section):
    address: str = Field(
        "auto",
        description=(
            "auto: the bot runs on a node of the cluster and finds it there; HOST:PORT: the head "
            "node's GCS, e.g. 10.0.0.5:6379; ray://HOST:PORT: Ray Client from outside the "
            "cluster's network, e.g. ray://10.0.0.5:10001."
        ),
    )
    workers: int = Field(
        4,
        ge=1,
        description=(
            "At most this many GPU workers over all the nodes; hosts that join later get "
            "workers, without a restart of the bot, until there are this many."
        ),
    )
    # What one worker asks Ray for: one GPU and one imgbot_worker, a custom resource that
    # only the GPU hosts trusted with imgbot's workers advertise (`ray start
    # --resources='{"imgbot_worker": N}'`, systemd/imgbot-ray-worker.service): a host that
    # joins the cluster with the token but not that resource gets none.
    resources: dict[str, float] = Field(
        {"GPU": 1, "imgbot_worker": 1},
        description=(
            "What each worker asks Ray for: by default one GPU and one imgbot_worker, a custom "
            "resource only the GPU hosts trusted with imgbot's workers advertise. CPU: N among "
            "them limits each worker to N threads."
        ),
    )
    namespace: str = Field(
        "imgbot",
        description=(
            "The Ray namespace the workers (named actors) live in; one per bot on one cluster."
        ),
    )
    token_file: Path | None = Field(
        None,
        description=(
            "The cluster's token (Ray's token authentication, RAY_AUTH_MODE=token), e.g. "
            '"${CREDENTIALS_DIRECTORY}/ray-token". backend ray refuses to start without it '
            "unless allow_unauthenticated is true or bridge_socket is set."
        ),
    )
    allow_unauthenticated: bool = Field(
        False,
        description=(
            "true: knowingly use a cluster without token authentication (anyone who reaches its "
            "ports can run code on every node); logged as a warning at every start."
        ),
    )
    bridge_socket: Path | None = Field(
        None,
        description=(
            "The Unix socket of a bridge that systemd starts as its own user "
            "(imgbot-bridge.socket), with its own token; null: the bot starts the bridge (the "
            "Ray driver) itself, as its own user."
        ),
    )
    # The token, read once (at load, or at the first read_token()).
    _token: SecretStr | None = PrivateAttr(None)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if not is_address(value):  # the grammar a pinned bridge's --address has too
            raise ValueError(
                f"{value!r} is not a Ray address; write auto (the bot runs on a node of the "
                "cluster), HOST:PORT of the head node's GCS (e.g. 10.0.0.5:6379), or "
                "ray://HOST:PORT for Ray Client from outside the cluster "
                "(e.g. ray://10.0.0.5:10001)"
            )
        return value

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("name at least one resource a worker asks for, e.g. {GPU: 1}")
        for name, amount in value.items():
            if not name.strip():
                raise ValueError("a resource name is empty")
            if not (math.isfinite(amount) and amount > 0):
                raise ValueError(
                    f"{name}: {amount} is not a positive number; each worker "
                    "asks for a positive amount, e.g. GPU: 1 or GPU: 0.5"
                )
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAMESPACE_RE.match(value):
            raise ValueError(
                f"{value!r}: up to 64 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit, e.g. imgbot"
            )
        return value

    @property
    def token_path(self) -> Path | None:
        """token_file with ${CREDENTIALS_DIRECTORY} expanded, for RAY_AUTH_TOKEN_PATH."""
        return None if self.token_file is None else expand_secret_path(self.token_file)

    def load_token(self) -> None:
        """Read token_file now (at load, so that a bad one stops the start naming its key);
        a ValueError says what is wrong with it."""
        if self.token_file is not None and self._token is None:
            self._token = _read_secret(self.token_file, TOKEN_KEY)

    def read_token(self) -> SecretStr | None:
        """The cluster's token (stripped); None without token_file. ConfigError naming
        generation.ray.token_file when the file is missing, unreadable or empty."""
        try:
            self.load_token()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return self._token
