"""The `matrix:` section: the homeserver, the bot's account, who may use it."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from bot.config.base import READ_SECRETS, USER_ID_RE, _read_secret, _Section


def user_patterns(value: list[str] | None) -> list[str] | None:
    """Check a list of Matrix user IDs or glob patterns of them (a field validator)."""
    for pattern in value or []:
        if not pattern.startswith("@") or ":" not in pattern:
            raise ValueError(f"{pattern!r} is not a user ID or a pattern like @*:example.org")
    return value


def matches(user_id: str, patterns: list[str] | None) -> bool:
    """Whether a user ID matches one of the glob patterns (`@*:example.org`)."""
    return any(fnmatch.fnmatchcase(user_id, pattern) for pattern in patterns or [])


class MatrixSettings(_Section):
    homeserver_url: str = Field(
        description="Base URL of the homeserver's client API (not the "
        "server name), e.g. https://matrix.example.org."
    )
    user_id: str = Field(
        description="The bot's own account, e.g. @imgbot:example.org; create "
        "it on the homeserver first."
    )
    password: SecretStr | None = Field(
        None,
        description=(
            "Used only for the first login: the access token and device ID are then kept in "
            "state_dir/credentials.json (mode 600) and reused, so the bot keeps one device. "
            "Written in the config, it makes the file a secret: imgbot warns when others can "
            "read it."
        ),
    )
    password_file: Path | None = Field(
        None,
        description=(
            "A file holding the password, e.g. a systemd credential: "
            '"${CREDENTIALS_DIRECTORY}/password". Not together with password.'
        ),
    )
    access_token: SecretStr | None = Field(
        None,
        description=("An access token of the bot's account, as an alternative to the password."),
    )
    access_token_file: Path | None = Field(
        None, description=("A file holding the access token. Not together with access_token.")
    )
    device_name: str = Field(
        "imgbot",
        description=("The name of the bot's device in clients' session lists (first login only)."),
    )
    allowed_users: list[str] | None = Field(
        None,
        description=(
            "Who may use the bot and invite it to rooms (glob patterns such as @*:example.org); "
            "everyone else is ignored. Left out: every user of the bot's own server."
        ),
    )
    admins: list[str] = Field(
        [],
        description=(
            "Bot admins, by user ID (never derived from room power levels): they see "
            "`!img usage`, may pause and resume the queue, and may change any room's defaults."
        ),
    )
    command_prefix: str = Field("!img", description="The word that starts a command in chat.")
    encryption: bool = Field(
        True,
        description=(
            "Take part in end-to-end-encrypted rooms: commands are decrypted and every answer, "
            "picture and thumbnail is sent encrypted. false: the bot leaves an encrypted room "
            "with a notice saying why."
        ),
    )
    cross_signing: bool = Field(
        True,
        description=(
            "Sign the bot's device with its own cross-signing identity (kept in "
            "state_dir/cross-signing.json), so that clients share room keys with it. false is "
            "for tests and debugging."
        ),
    )
    # Invites from allowed users above it are declined: a person (or a script) who may
    # invite the bot cannot make it sync and hold keys for rooms without end.
    max_rooms: int = Field(
        200,
        ge=1,
        description=(
            "The most rooms the bot is in; invites above it are declined, with a line in the log."
        ),
    )

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

    _patterns = field_validator("admins", "allowed_users")(user_patterns)

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
        if READ_SECRETS.get():  # else matrix.password and access_token stay unset
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

    @property
    def password_key(self) -> str:
        """The config key the password comes from, for messages about the login."""
        return "matrix.password_file" if self.password_file is not None else "matrix.password"

    def allows(self, user_id: str) -> bool:
        """Whether the bot works for this person (allowed_users)."""
        return matches(user_id, self.allowed_users)

    def is_admin(self, user_id: str) -> bool:
        return matches(user_id, self.admins)

    def full_user_id(self, text: str) -> str:
        """A user ID as an admin may type it: `bob` and `@bob` are @bob on the bot's own
        server; a whole ID (`@bob:example.org`) stays as it is."""
        text = text.strip()
        user = text if text.startswith("@") else "@" + text
        return user if ":" in user else f"{user}:{self.server_name}"
