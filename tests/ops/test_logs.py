"""`bot/logs.py`: text and JSON log lines, and the filter that blanks access tokens."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot import cli
from bot.ops import logs

TOKEN = "syt_aW1nYm90_AbCdEfGhIjKlMnOpQrSt_0a1B2c"
MAS_TOKEN = "mct_0123456789abcdefghijABCDEFGHIJ_a1b2c3"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def capture():
    """A logger of its own writing through a handler made by `logs.make_handler`."""
    made = []

    def make(fmt: str) -> tuple[logging.Logger, io.StringIO]:
        stream = io.StringIO()
        handler = logs.make_handler(fmt, stream)
        logger = logging.getLogger(f"imgbot-test-{fmt}-{len(made)}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger, stream

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# ---- JSON ---------------------------------------------------------------------------------


def test_json_lines_parse_with_the_fields_of_the_record(capture):
    logger, stream = capture("json")
    logger.info("job %d done in %.1f s", 7, 1.25)
    logger.warning("second line")
    first, second = lines(stream)
    assert first["message"] == "job 7 done in 1.2 s"
    assert first["level"] == "INFO" and second["level"] == "WARNING"
    assert first["logger"] == logger.name
    assert first["time"].endswith("Z")
    stamp = datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert abs((datetime.now(stamp.tzinfo) - stamp).total_seconds()) < 60
    assert "exc_info" not in first


def test_json_carries_extra_fields(capture):
    logger, stream = capture("json")
    logger.info(
        "deleted rows",
        extra={
            "deleted_usage_rows": 3,
            "room_id": "!r:localhost",
            "path": Path("/srv/x"),
            "level": "not the level",
        },
    )
    [line] = lines(stream)
    assert line["deleted_usage_rows"] == 3
    assert line["room_id"] == "!r:localhost"
    assert line["path"] == "/srv/x"  # what JSON cannot hold is written as its str()
    assert line["level"] == "INFO"  # an extra never hides a field of the record


def test_json_carries_the_exception_as_a_string(capture):
    logger, stream = capture("json")
    try:
        raise RuntimeError("the GPU caught fire")
    except RuntimeError:
        logger.exception("job 3 failed")
    [line] = lines(stream)
    assert line["level"] == "ERROR" and line["message"] == "job 3 failed"
    assert isinstance(line["exc_info"], str)
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: the GPU caught fire" in line["exc_info"]


def test_a_message_with_newlines_stays_one_line(capture):
    logger, stream = capture("json")
    logger.error("two\nlines")
    assert len(stream.getvalue().splitlines()) == 1
    assert lines(stream)[0]["message"] == "two\nlines"


# ---- text ---------------------------------------------------------------------------------


def test_text_lines_look_as_before(capture):
    logger, stream = capture("text")
    logger.info("imgbot is running as %s", "@imgbot:localhost")
    line = stream.getvalue()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO "
        + re.escape(logger.name)
        + r": imgbot is running as @imgbot:localhost\n",
        line,
    ), line


def test_setup_logging_is_still_importable_from_the_cli():
    assert cli.setup_logging is logs.setup_logging


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="choose text or json"):
        logs.make_handler("xml")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_setup_logging_configures_the_root_logger(fmt):
    """In a fresh process, as `imgbot run` does it."""
    code = (
        "import logging\n"
        "from bot.ops.logs import setup_logging\n"
        f"setup_logging('INFO', {fmt!r})\n"
        "logging.getLogger('bot.app').info('running with %s', " + repr(TOKEN) + ")\n"
        "logging.getLogger('nio.client').info('not shown')\n"
        "logging.getLogger('nio.events.misc').warning('Error validating event: SECRET')\n"
        "logging.getLogger('nio.events.misc').error('Error validating event: SECRET')\n"
        "logging.getLogger('nio.client').warning('a warning of nio still shows')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    line, nio_warning = result.stderr.splitlines()
    assert "a warning of nio still shows" in nio_warning
    assert TOKEN not in line and "running with <redacted>" in line
    if fmt == "json":
        assert json.loads(line)["logger"] == "bot.app"
    else:
        assert " INFO bot.app: running with <redacted>" in line


# ---- the token filter ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tokens_in_the_message_and_its_args_are_redacted(capture, fmt):
    logger, stream = capture(fmt)
    logger.warning(f"restored with {TOKEN}")
    logger.warning("restored with %s and %s", TOKEN, MAS_TOKEN)
    logger.warning("GET https://hs/_matrix/media/v3/download/x?access_token=%s&a=1", "secret42")
    logger.warning("%r", {"access_token": "opaque-token-of-conduit", "user_id": "@a:b"})
    logger.warning("headers: Authorization: Bearer %s", "opaque.token")
    text = stream.getvalue()
    for secret in (
        TOKEN,
        MAS_TOKEN,
        "secret42",
        "opaque-token-of-conduit",
        "opaque.token",
        "AbCdEfGhIjKlMnOpQrSt",
    ):
        assert secret not in text
    assert text.count("<redacted>") == 6
    assert "access_token=<redacted>&a=1" in text
    assert "@a:b" in text  # only the token goes


def test_tokens_in_a_nio_login_response_repr_are_redacted(capture):
    from nio import LoginResponse

    logger, stream = capture("text")
    logger.error("%r", LoginResponse("@imgbot:localhost", "DEVICE", "any-opaque-token-1234"))
    text = stream.getvalue()
    assert "any-opaque-token-1234" not in text and "DEVICE" in text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tokens_in_tracebacks_and_extras_are_redacted(capture, fmt):
    logger, stream = capture(fmt)
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        logger.exception("login failed", extra={"token_hint": f"was {TOKEN}"})
    text = stream.getvalue()
    assert TOKEN not in text
    assert "ValueError: bad token <redacted>" in text
    if fmt == "json":
        assert lines(stream)[0]["token_hint"] == "was <redacted>"


def test_ordinary_words_are_left_alone(capture):
    logger, stream = capture("text")
    message = "syt_ is a prefix; mct_short; system_prompt; the job's seed is 42"
    logger.info(message)
    assert stream.getvalue().rstrip("\n").endswith(message)
