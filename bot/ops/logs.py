"""Logging for `imgbot`: plain text for a terminal, one JSON object per line for journald
and log collectors, and a last-resort filter that blanks Matrix access tokens.

What keeps prompts and tokens out of the logs is the code that logs: it names jobs by id and
users by Matrix ID, and never logs an event, its content or a nio response object. The
filter below is only a safety net for the line nobody thought about.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import IO, Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "<redacted>"

# These libraries narrate every request at INFO; their warnings still come through.
NOISY = ("nio", "httpx", "urllib3", "diffusers", "transformers", "aiosqlite")
# nio logs an event that fails its schema (at WARNING or ERROR) with the offending part of
# the event, which can be the text someone typed; these are all this logger says.
QUIET = ("nio.events.misc",)
# Importing torchao (diffusers does, whenever it is installed) warns about optional kernels
# for other hardware and a torch deprecation inside torchao: noise at every start, about
# nothing imgbot uses or can fix. What imgbot quantizes is in its own speed line.
IMPORT_NOISE = ("torchao", "torch.utils._pytree")
# nio first parses every error answer as the success it hoped for and warns that the
# schema failed ("Error validating response: 'user_id' is a required property"), which
# reads like our bug; imgbot reports each failed request in its own words instead.
SCHEMA_NOISE = ("nio.responses", "Error validating response")

# Synapse access and refresh tokens (syt_, syr_) and the Matrix Authentication Service's
# compatibility tokens (mct_, what a password login gets there); then an `access_token`
# query parameter or key (any homeserver's token, e.g. in the repr of a nio LoginResponse);
# then an Authorization header.
_TOKEN_RES = (
    (re.compile(r"\b(?:syt|syr|mct)_[A-Za-z0-9_\-]{8,}"), REDACTED),
    (
        re.compile(r"""(access_token["']?\s*[=:]\s*["']?)[^\s&"',;)}#]+""", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE), rf"\1{REDACTED}"),
)

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def redact(text: str) -> str:
    """`text` with anything that looks like a Matrix access token replaced by <redacted>."""
    for pattern, replacement in _TOKEN_RES:
        text = pattern.sub(replacement, text)
    return text


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call added with `extra=`."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


class DropSchemaNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(SCHEMA_NOISE[1])


class RedactTokens(logging.Filter):
    """Blanks access tokens in the final message, the traceback and string extra fields.

    A safety net, not the mechanism: code must not log secrets in the first place. It sits
    on the handler (not on a logger), so it sees the records of every library too.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Formatted here, so that the formatters (which reuse exc_text) print it redacted.
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in extras(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the record's
    `extra=` fields, and exc_info / stack_info as strings when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extras(record).items():
            entry.setdefault(key, value)  # an extra never hides one of the fields above
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an extra field that JSON cannot hold is written as its str().
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_handler(fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing to `stream` (stderr by default) in `fmt`, with the token filter."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r}: choose text or json")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactTokens())
    return handler


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once, like logging.basicConfig: `fmt` is "text" (the
    terminal's "time LEVEL logger: message") or "json" (one object per line)."""
    logging.basicConfig(level=level, handlers=[make_handler(fmt)])
    # basicConfig does nothing when the root logger already has handlers (a test runner's,
    # an embedding program's); the safety net goes on those too.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for quiet in QUIET:
        logging.getLogger(quiet).setLevel(logging.CRITICAL)
    for noise in IMPORT_NOISE:
        logging.getLogger(noise).setLevel(logging.ERROR)
    schema = logging.getLogger(SCHEMA_NOISE[0])
    if not any(isinstance(f, DropSchemaNoise) for f in schema.filters):
        schema.addFilter(DropSchemaNoise())
