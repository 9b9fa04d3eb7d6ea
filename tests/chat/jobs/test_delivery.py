"""Unit tests at the boundaries of delivery: how a homeserver's answer is classified, how
long a send keeps trying, and that writes which belong together are committed together."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from bot.store import db as database
from bot.matrix import messages


def answer(status: int, errcode: str, message: str = "no"):
    """What nio returns for a failed request: an error response with its HTTP response."""
    return SimpleNamespace(
        status_code=errcode, message=message, transport_response=SimpleNamespace(status=status)
    )


@pytest.mark.parametrize(
    "status,errcode,kind",
    [
        (413, "M_TOO_LARGE", messages.Refused),
        (403, "M_FORBIDDEN", messages.Refused),
        (401, "M_UNKNOWN_TOKEN", messages.Unreachable),
    ],
)
def test_answers_a_retry_cannot_change(status, errcode, kind):
    with pytest.raises(kind) as raised:
        messages._problem(answer(status, errcode))
    if kind is messages.Refused:
        assert raised.value.errcode == errcode


@pytest.mark.parametrize(
    "status,errcode", [(500, "M_UNKNOWN"), (502, "?"), (408, "?"), (429, "M_LIMIT_EXCEEDED")]
)
def test_answers_that_may_pass(status, errcode):
    assert messages._problem(answer(status, errcode)) == f"{errcode}: no"


@pytest.fixture
def no_sleep(monkeypatch):
    slept: list[float] = []

    async def sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(messages.asyncio, "sleep", sleep)
    return slept


async def test_a_patient_send_backs_off_up_to_the_cap_and_then_says_unreachable(
    no_sleep, monkeypatch
):
    clock = [0.0]
    monkeypatch.setattr(messages.time, "monotonic", lambda: clock[0])

    async def down():
        clock[0] += 1  # each try takes a second
        raise OSError("connection refused")

    with pytest.raises(messages.Unreachable, match="connection refused"):
        await messages._with_retries("test", down, patience=300, strict=True)
    assert no_sleep[:7] == [1, 2, 4, 8, 16, 32, 60] and max(no_sleep) == messages.RETRY_CAP
    assert await messages._with_retries("test", down, patience=5, strict=False) is None


async def test_a_refusal_is_not_retried(no_sleep):
    tries = []

    async def refused():
        tries.append(1)
        return None, messages._problem(answer(403, "M_FORBIDDEN"))

    assert await messages._with_retries("test", refused, patience=300, strict=False) is None
    assert tries == [1] and no_sleep == []


async def test_writes_that_belong_together_are_committed_together(tmp_path):
    """A task's two writes are never split by another task's commit, and a failure
    between them leaves neither."""
    db = await database.connect(tmp_path / "x.sqlite3")
    started = asyncio.Event()

    async def interrupted_pair():
        async with database.writing(db):
            await database.insert_claim(db, "$first", 1.0)
            started.set()
            await asyncio.sleep(0.05)  # another task runs meanwhile
            raise RuntimeError("crash between the two writes")

    pair = asyncio.create_task(interrupted_pair())
    await started.wait()
    await database.set_state(db, "other", "write")  # waits for the pair's transaction
    with pytest.raises(RuntimeError):
        await pair
    await db.close()
    db = await database.connect(tmp_path / "x.sqlite3")
    assert not await database.was_handled(db, "$first")
    assert await database.get_state(db, "other") == "write"
    await db.close()
